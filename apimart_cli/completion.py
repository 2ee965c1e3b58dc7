"""The shell completions: where each shell loads them from, and putting them there.

The scripts themselves are generated from the app (scripts/gen_completions.py)
into `completions/`, which the wheel carries inside the package; from a clone
they are read where they are.
"""

from __future__ import annotations

import os
from pathlib import Path

from apimart_cli import safefiles
from apimart_cli.errors import UsageError

SHELLS = ("bash", "zsh", "fish")
_SCRIPTS = {"bash": "apimart.bash", "zsh": "_apimart", "fish": "apimart.fish"}


def script_path(shell: str) -> Path:
    """The completion script for `shell`, in the package or, from a clone, beside it."""
    name = _SCRIPTS[_checked(shell)]
    package = Path(__file__).resolve().parent
    for folder in (package / "completions", package.parent / "completions"):
        if (folder / name).is_file():
            return folder / name
    raise UsageError(  # pragma: no cover - an install that lost its data files
        f"The {shell} completion script is missing from this install.",
        "Reinstall apimart, or generate it: python scripts/gen_completions.py.",
    )


def install_path(shell: str, env: dict[str, str] | None = None) -> Path:
    """Where `shell` loads a completion for `apimart` from, for this user, with no
    change to its start-up files (zsh excepted: a folder on $fpath, named after it)."""
    env = dict(os.environ) if env is None else env
    home = Path(env.get("HOME") or Path.home())
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    shell = _checked(shell)
    if shell == "bash":  # bash-completion loads it on first use of `apimart`
        return data / "bash-completion" / "completions" / "apimart"
    if shell == "fish":  # fish loads it on first use of `apimart`
        return config / "fish" / "completions" / "apimart.fish"
    return home / ".zfunc" / "_apimart"


def install(shell: str, env: dict[str, str] | None = None) -> tuple[Path, str | None]:
    """Copy `shell`'s script where it is loaded; the path, and what the user must still
    do, if anything (zsh: the folder on $fpath before compinit)."""
    target = install_path(shell, env)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Created anew beside it and renamed over it: a link planted there is not followed.
    safefiles.write_atomic(target, script_path(shell).read_bytes(), safefiles.usual_mode())
    if shell != "zsh":
        return target, None
    env = dict(os.environ) if env is None else env
    zshrc = Path(env.get("ZDOTDIR") or env.get("HOME") or Path.home()) / ".zshrc"
    try:
        ready = ".zfunc" in zshrc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        ready = False
    todo = None if ready else f"Add `fpath+=~/.zfunc` before `compinit` in {zshrc}."
    return target, todo


def _checked(shell: str) -> str:
    if shell not in SHELLS:
        raise UsageError(f"Unknown shell {shell[:40]!r}.", f"Shells are: {', '.join(SHELLS)}.")
    return shell
