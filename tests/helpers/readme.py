"""The README's example command lines, read from the file itself, and what a reader
would put in their placeholders, made for real against the sandbox.

A line that is one `apimart` command with no shell syntax (no pipe, redirection,
variable, substitution, glob or `&&`; a trailing comment aside) is handed to the
command as the words bash would split it into (`plain_words`), in this process; any
other line needs bash. `tests/flows/test_readme.py` runs the first kind,
`tests/e2e/test_readme.py` the second, and together they run every line.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from apimart_cli.sandbox import Fault, Sandbox
from apimart_cli.sandbox.images import gradient_png
from tests.helpers.commands import run as apimart

README = Path(__file__).resolve().parents[2] / "README.md"
# Servers that run until stopped: each has tests of its own.
SERVERS = ("apimart mcp", "apimart sandbox")
# What a reader types where `config set api_key` asks for the key.
TYPED_KEY = "sk-readme-example-0123456789"
# Outside quotes, each of these makes a line shell syntax; inside double quotes, the first three.
_EXPANDING = "$`\\"
_SHELL = _EXPANDING + "|&;<>()*?[]{}~!"


def readme_examples() -> list[tuple[int, str]]:
    """(line number, command) for each example command line in an indented block."""
    examples: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if pending is not None:
            start, text = pending
            text += " " + line.strip()
            if text.endswith("\\"):
                pending = (start, text[:-1].rstrip())
            else:
                examples.append((start, text))
                pending = None
            continue
        if not line.startswith("    ") or "apimart" not in line:
            continue
        command = line.strip()
        if not re.match(r"(apimart|echo|grep|printf) ", command):
            continue
        if command.endswith("\\"):
            pending = (number, command[:-1].rstrip())
        elif not command.startswith(SERVERS):
            examples.append((number, command))
    return examples


def plain_words(command: str) -> list[str] | None:
    """The arguments bash would hand `apimart` for `command`, where it is one `apimart`
    command with no shell syntax outside single quotes (a trailing `# comment` aside);
    None where only bash can say what it runs."""
    quote = ""
    for index, char in enumerate(command):
        if quote == "'":
            quote = "" if char == "'" else quote
        elif quote == '"':
            if char in _EXPANDING:
                return None
            quote = "" if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or command[index - 1] in " \t"):
            command = command[:index]  # a comment, to the end of the line
            break
        elif char in _SHELL:
            return None
    if quote:
        return None
    words = shlex.split(command)
    return words[1:] if words[:1] == ["apimart"] else None


EXAMPLES = readme_examples()
IN_PROCESS = [(n, command) for n, command in EXAMPLES if plain_words(command) is not None]
THROUGH_BASH = [(n, command) for n, command in EXAMPLES if plain_words(command) is None]


def reader_environment(env: dict[str, str], home: Path, command: str) -> dict[str, str]:
    """`env` as a reader trying `command` has it: a home of their own, a viewer that
    opens anything, and for `--reveal` a key that may be shown."""
    home.mkdir(exist_ok=True)
    env = {**env, "HOME": str(home), "BROWSER": "true"}
    if "--reveal" in command:  # the key is shown on purpose: not the one no output may show
        env["APIMART_API_KEY"] = "sk-readme-shown-0123456789"
    return env


def typed(command: str) -> str | None:
    """What the reader types on standard input for `command`: the key `config set api_key`
    asks for, else nothing."""
    return f"{TYPED_KEY}\n" if re.search(r"config set api_key\s*($|#)", command) else None


def with_real_values(command: str, sandbox: Sandbox, env: dict[str, str], cwd: Path) -> str:
    """`command` with what a reader would put in its placeholders, made for real."""
    for name in ("photo.jpg", "sketch.png"):  # the type is read from the bytes: a PNG will do
        (cwd / name).write_bytes(gradient_png(64, 48, name, 0))
    (cwd / "jobs.txt").write_text('a fox\n{"prompt": "an owl", "size": "16:9"}\n')
    (cwd / "ideas.txt").write_text("a fox\na draft of an owl\na hare\n")
    if "task_01K" in command or re.search(r"(gallery|inspect).* out/", command):
        first = _submitted(env, cwd, "a fox")
        second = _submitted(env, cwd, "an owl")
        saved = apimart("wait", first, "-o", "out/", env=env, cwd=cwd)
        assert saved.returncode == 0, saved.stderr
        command = command.replace("task_01K...", first).replace("task_01L...", second)
    if "history --pending" in command:
        _submitted(env, cwd, "a hare")  # one task still unfinished, as far as the history knows
    if "apimart resend" in command:
        key = _unknown_submission(sandbox, env, cwd)
        command = command.replace("0b6f3c1e-...", key)
    return command.replace("| less", "| cat")


def _submitted(env: dict[str, str], cwd: Path, prompt: str) -> str:
    run = apimart("generate", prompt, env=env, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return run.lines[0]


def _unknown_submission(sandbox: Sandbox, env: dict[str, str], cwd: Path) -> str:
    """A submission whose reply was lost after the task was made: its key."""
    sandbox.inject(Fault("after_create", method="POST", path="/v1/images/generations"))
    run = apimart("generate", "a lost fox", "--json", env=env, cwd=cwd)
    assert run.returncode == 5, run.stderr
    error = json.loads(run.stderr.strip().splitlines()[-1])["error"]
    return str(error["idempotency_key"])
