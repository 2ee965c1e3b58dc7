"""Write the shell completions in completions/ from the app itself.

    python scripts/gen_completions.py          # rewrite completions/
    python scripts/gen_completions.py --check  # exit 1 if they are stale

The scripts are static: pressing TAB never starts Python. They know every
command and option of the app, the allowed values of --size, --resolution,
--state and --refs, and where files and folders go, so they must be regenerated
when those change (a test checks). Model ids come from `models.txt` in the data
folder, which `apimart models` keeps, and the built-in ones.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import typer.main

from apimart_cli.cli import app
from apimart_cli.commands.history import STATES
from apimart_cli.completion import SHELLS
from apimart_cli.constants import DEFAULT_MODEL
from apimart_cli.schema import MODEL_KINDS
from apimart_cli.settings import KEYS, REFERENCE_MODES
from apimart_cli.sizes import RESOLUTIONS, SIZE_CHOICES

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "completions"
HELP_OPTIONS = ("--help", "-h")
# Values offered after an option, and what a free-form value completes to.
VALUES = {
    "--size": SIZE_CHOICES,
    "-s": SIZE_CHOICES,
    "--resolution": RESOLUTIONS,
    "-r": RESOLUTIONS,
    "--state": STATES,
    "--refs": REFERENCE_MODES,
    "--type": MODEL_KINDS,
}
DIRECTORY_OPTIONS = ("--output", "-o")
FILE_OPTIONS = ("--image", "-i")
MODEL_OPTIONS = ("--model",)
# Model ids offered before `apimart models` has listed the service's (models.txt).
BUILT_IN_MODELS = (DEFAULT_MODEL, f"{DEFAULT_MODEL}-official")
# What a command's arguments are, where they are files, folders or model ids.
ARGUMENTS = {
    "inspect": "files",
    "batch": "files",
    "upload": "files",
    "gallery": "folders",
    "models": "models",
}
# models.txt in the data folder (as history.default_path finds it): Linux, then macOS.
MODELS_FILES = (
    '"${APIMART_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/apimart}/models.txt"',
    '"$HOME/Library/Application Support/apimart/models.txt"',
)


@dataclass
class Command:
    path: str  # "" for the root, "generate", "config set"
    help: str
    options: list[str] = field(default_factory=list)  # every option name
    takes_value: list[str] = field(default_factory=list)  # options followed by a value
    subcommands: list[str] = field(default_factory=list)
    first_argument: tuple[str, ...] = ()  # values for the first positional argument
    arguments: str = ""  # what its arguments are: files, folders, models (or nothing known)


def _walk(command: object, path: str) -> list[Command]:
    params = getattr(command, "params", [])
    help_text = (getattr(command, "help", None) or "").strip().splitlines()
    entry = Command(path=path, help=help_text[0] if help_text else "")
    for param in params:
        if getattr(param, "param_type_name", "") != "option":
            continue
        names = [*param.opts, *param.secondary_opts]
        entry.options += names
        if not param.is_flag:
            entry.takes_value += names
    entry.options += HELP_OPTIONS
    if path.startswith("config ") and path != "config list" and path != "config path":
        entry.first_argument = KEYS
    if path.startswith("completion "):
        entry.first_argument = SHELLS
    entry.arguments = ARGUMENTS.get(path, "")
    commands = [entry]
    children = getattr(command, "commands", {})
    entry.subcommands = list(children)
    for name, child in children.items():
        commands += _walk(child, f"{path} {name}".strip())
    return commands


def commands() -> list[Command]:
    return _walk(typer.main.get_command(app), "")


def _words(items: tuple[str, ...] | list[str]) -> str:
    return " ".join(items)


def bash(tree: list[Command]) -> str:
    takes_value = sorted({name for c in tree for name in c.takes_value})
    cases = []
    for c in tree:
        cases.append(f'        "{c.path}") words="{_words([*c.subcommands, *c.options])}"')
        if c.first_argument:  # e.g. the KEY of `config set`
            args = _words(c.first_argument)
            cases.append(f'            [[ $nargs -eq 0 && $cur != -* ]] && words="{args}"')
        if c.arguments:  # files, folders or model ids, even before a character is typed
            cases.append(f"            [[ $cur != -* ]] && arguments={c.arguments}")
        cases[-1] += " ;;"
    values = "\n".join(
        f'        {name}) _apimart_values "{_words(list(VALUES[name]))}"; return ;;'
        for name in VALUES
    )
    groups = "\n".join(
        f'        "{c.path}") echo "{_words(c.subcommands)}" ;;' for c in tree if c.subcommands
    )
    special = {*VALUES, *DIRECTORY_OPTIONS, *FILE_OPTIONS, *MODEL_OPTIONS}
    fills = dict(
        groups=groups,
        takes="|".join(takes_value),
        values=values,
        dirs="|".join(DIRECTORY_OPTIONS),
        files="|".join(FILE_OPTIONS),
        model_options="|".join(MODEL_OPTIONS),
        free="|".join(t for t in takes_value if t not in special),
        cases="\n".join(cases),
        built_in=_words(list(BUILT_IN_MODELS)),
        model_files=" ".join(MODELS_FILES),
    )
    return """# bash completion for apimart. Generated by scripts/gen_completions.py: do not edit.
# Install: source this file from ~/.bashrc, or copy it to
# ~/.local/share/bash-completion/completions/apimart

_apimart_values() {{
    # Complete from a word list; values may contain ':' (16:9), which bash splits on.
    local IFS=$'\\n'
    COMPREPLY=($(compgen -W "${{1// /$'\\n'}}" -- "$cur"))
    if [[ $cur == *:* ]]; then
        COMPREPLY=("${{COMPREPLY[@]#"${{cur%:*}}":}}")
    fi
}}

_apimart_models() {{
    # The built-in model ids, and those `apimart models` last listed (models.txt).
    local file
    echo "{built_in}"
    for file in {model_files}; do
        [[ -r $file ]] && cat -- "$file"
    done
}}

_apimart_files() {{
    # File (or, with -d, folder) names, marked as such so that bash adds the slash.
    compopt -o filenames 2>/dev/null
    local IFS=$'\n'
    COMPREPLY=($(compgen "${{1:--f}}" -- "$cur"))
}}

_apimart_subcommands() {{
    case "$1" in
{groups}
    esac
}}

_apimart() {{
    local line="${{COMP_LINE:0:COMP_POINT}}"
    local cur="${{line##*[[:space:]]}}"
    local -a parts
    read -r -a parts <<< "${{line%"$cur"}}"
    local prev="${{parts[${{#parts[@]}}-1]}}" path="" nargs=0 skip="" word
    for word in "${{parts[@]:1}}"; do
        if [[ -n $skip ]]; then skip=""; continue; fi
        case "$word" in
            {takes}) skip=1 ;;
            -*) ;;
            *)
                if [[ " $(_apimart_subcommands "$path") " == *" $word "* ]]; then
                    path="${{path:+$path }}$word"
                else
                    nargs=$((nargs + 1))
                fi ;;
        esac
    done
    case "$prev" in
{values}
        {dirs}) _apimart_files -d; return ;;
        {files}) _apimart_files -f; return ;;
        {model_options}) _apimart_values "$(_apimart_models | tr '\n' ' ')"; return ;;
        {free}) return ;;  # a value only the user knows: nothing, not file names
    esac
    local words="" arguments=""
    case "$path" in
{cases}
    esac
    case "$arguments" in
        files) _apimart_files -f; return ;;
        folders) _apimart_files -d; return ;;
        models) _apimart_values "$(_apimart_models | tr '\n' ' ')"; return ;;
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}

complete -F _apimart apimart
""".format(**fills)


def zsh(tree: list[Command]) -> str:
    lines = []
    for c in tree:
        options = []
        for name in c.options:
            if name in VALUES:
                action = f":value:({_words(list(VALUES[name]))})"
            elif name in MODEL_OPTIONS:
                action = ":model:_apimart_models"
            elif name in DIRECTORY_OPTIONS:
                action = ":folder:_files -/"
            elif name in FILE_OPTIONS:
                action = ":file:_files"
            elif name in c.takes_value:
                action = ":value: "
            else:
                action = ""
            options.append(f"'{name}[]{action}'" if action else f"'{name}'")
        lines.append(f'    "{c.path}") opts=({" ".join(options)}) ;;')
    subcommands = "\n".join(
        f'    "{c.path}") subs=({" ".join(repr(s) for s in c.subcommands)}) ;;'
        for c in tree
        if c.subcommands
    )
    arguments = "\n".join(
        f'    "{c.path}") args={_zsh_arguments[c.arguments]!r} ;;' for c in tree if c.arguments
    )
    root_subs = _words(tree[0].subcommands)
    groups = "\n".join(
        f'            {c.path}) [[ " {_words(c.subcommands)} " == *" $word "* ]]'
        f' && cmd="{c.path} $word" ;;'
        for c in tree
        if c.path and c.subcommands
    )
    return f"""#compdef apimart
# zsh completion for apimart. Generated by scripts/gen_completions.py: do not edit.
# Install: copy to a folder on $fpath as _apimart (e.g. ~/.zfunc/_apimart, with
# fpath+=~/.zfunc before compinit in ~/.zshrc).

_apimart_models() {{
    # The built-in model ids, and those `apimart models` last listed (models.txt).
    local -a ids
    local file
    ids=({_words(list(BUILT_IN_MODELS))})
    for file in {" ".join(MODELS_FILES)}; do
        [[ -r $file ]] && ids+=(${{(f)"$(<$file)"}})
    done
    compadd -a ids
}}

_apimart() {{
    local -a opts subs
    local args="*:argument: "
    local cmd="" word  # not "path": zsh ties that name to $PATH
    for word in ${{words[2,CURRENT-1]}}; do
        [[ $word == -* ]] && continue
        case "$cmd" in
            "") [[ " {root_subs} " == *" $word "* ]] && cmd=$word ;;
{groups}
        esac
    done
    case "$cmd" in
{chr(10).join(lines)}
    esac
    subs=()
    case "$cmd" in
{subcommands}
    esac
    case "$cmd" in
{arguments}
    esac
    if [[ $cmd == config\\ (set|get|unset) ]]; then
        _arguments -s $opts '1:key:({_words(KEYS)})' '*:value: '
    elif [[ $cmd == completion\\ * ]]; then
        _arguments -s $opts '*:shell:({_words(list(SHELLS))})'
    elif (( $#subs )); then
        _arguments -s $opts "1:command:($subs)" '*::args: '
    else
        _arguments -s $opts "$args"
    fi
}}

_apimart "$@"
"""


_zsh_arguments = {
    "files": "*:file:_files",
    "folders": "*:folder:_files -/",
    "models": "*:model:_apimart_models",
}


def fish(tree: list[Command]) -> str:
    lines = [
        "# fish completion for apimart. Generated by scripts/gen_completions.py: do not edit.",
        "# Install: copy to ~/.config/fish/completions/apimart.fish",
        "",
        "complete -c apimart -f",
        "",
        "function __apimart_models",
        "    # The built-in model ids, and those `apimart models` last listed (models.txt).",
        f"    printf '%s\\n' {_words(list(BUILT_IN_MODELS))}",
        "    set -l data $HOME/.local/share/apimart",
        "    set -q XDG_DATA_HOME; and set data $XDG_DATA_HOME/apimart",
        "    set -q APIMART_DATA_DIR; and set data $APIMART_DATA_DIR",
        '    for file in $data/models.txt "$HOME/Library/Application Support/apimart/models.txt"',
        "        test -r $file; and cat $file",
        "    end",
        "end",
        "",
    ]
    groups = {c.path: _words(c.subcommands) for c in tree if c.path and c.subcommands}
    for c in tree:
        group, _, sub = c.path.partition(" ")
        inside = f"__fish_seen_subcommand_from {group}; and"
        if c.path == "":
            condition = "__fish_use_subcommand"
        elif c.path in groups:
            condition = f"{inside} not __fish_seen_subcommand_from {groups[c.path]}"
        elif sub:
            condition = f"{inside} __fish_seen_subcommand_from {sub}"
        else:
            condition = f"__fish_seen_subcommand_from {c.path}"
        for sub in c.subcommands:
            child = next(x for x in tree if x.path == f"{c.path} {sub}".strip())
            help_text = child.help.replace("'", "\\'")
            lines.append(f"complete -c apimart -n '{condition}' -a {sub} -d '{help_text}'")
        for name in c.options:
            flag = f"-l {name[2:]}" if name.startswith("--") else f"-s {name[1:]}"
            extra = ""
            if name in VALUES:
                extra = f" -x -a '{_words(list(VALUES[name]))}'"
            elif name in MODEL_OPTIONS:
                extra = " -x -a '(__apimart_models)'"
            elif name in DIRECTORY_OPTIONS:
                extra = " -x -a '(__fish_complete_directories)'"
            elif name in FILE_OPTIONS:
                extra = " -r -F"
            elif name in c.takes_value:
                extra = " -x"
            lines.append(f"complete -c apimart -n '{condition}' {flag}{extra}")
        if c.first_argument:
            lines.append(f"complete -c apimart -n '{condition}' -a '{_words(c.first_argument)}'")
        if c.arguments == "files":
            lines.append(f"complete -c apimart -n '{condition}' -F")
        elif c.arguments == "folders":
            lines.append(f"complete -c apimart -n '{condition}' -a '(__fish_complete_directories)'")
        elif c.arguments == "models":
            lines.append(f"complete -c apimart -n '{condition}' -a '(__apimart_models)'")
    return "\n".join(lines) + "\n"


def scripts() -> dict[Path, str]:
    tree = commands()
    return {
        OUT / "apimart.bash": bash(tree),
        OUT / "_apimart": zsh(tree),
        OUT / "apimart.fish": fish(tree),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if completions/ is stale")
    args = parser.parse_args()
    stale = [
        path for path, text in scripts().items() if not path.exists() or path.read_text() != text
    ]
    if args.check:
        for path in stale:
            print(
                f"stale: {path.relative_to(ROOT)} (run python scripts/gen_completions.py)",
                file=sys.stderr,
            )
        return 1 if stale else 0
    OUT.mkdir(exist_ok=True)
    for path, text in scripts().items():
        path.write_text(text)
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
