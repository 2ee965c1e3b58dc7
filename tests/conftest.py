"""Every test runs hermetic: its own config file and data folder, no inherited settings."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from apimart_cli import console

# Compiled modules are cached in __pycache__ even where the environment asks Python not
# to write them (PYTHONDONTWRITEBYTECODE): otherwise every xdist worker compiles, and
# rewrites the asserts of, every test module and the package again on every run, about
# 4 s of CPU a worker.
sys.dont_write_bytecode = False

# The commands the tests start hear Ctrl-C as a user's do. A suite started where SIGINT is
# ignored (in the background of a script, `nohup`) would hand that on to every command it
# starts, and a command rightly keeps a SIGINT its parent ignores: the tests of Ctrl-C
# would wait for an interruption that never comes. A handler of this process's own is
# not inherited; each command starts with the default.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ENV_SETTINGS = (
    "APIMART_API_KEY",
    "APIMART_BASE_URL",
    "APIMART_OUTPUT_DIR",
    "APIMART_CONFIG",
    "APIMART_DATA_DIR",
    "NO_COLOR",
)


def pytest_configure(config: pytest.Config) -> None:
    """On a fresh checkout (no compiled test module yet), compile every test module once,
    asserts rewritten, before xdist starts its workers: imported here, in the controller,
    and so cached in __pycache__. Each worker would otherwise compile all of them at the
    same moment: on 2 CPUs, a cold run took 62.7 s of wall and 104 s of CPU, and 58.7 s
    and 91 s with this. A warm cache is left to the workers (this would cost 0.6 s)."""
    root = Path(__file__).parent
    if (
        os.environ.get("PYTEST_XDIST_WORKER")
        or not getattr(config.option, "numprocesses", None)
        or any((root / "__pycache__").glob("test_*.pyc"))
    ):
        return
    import importlib

    for path in sorted(root.rglob("test_*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        importlib.import_module(".".join(relative.parts))


@pytest.hookimpl(optionalhook=True)  # with `-p no:xdist`, no such hook: not an error
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: four workers a CPU, at most 16. Many tests wait (on the sandbox, a
    deadline, a subprocess) rather than compute, so more workers than CPUs keep them
    busy; on 2 CPUs, quiet: 4 workers 79 s of wall, 6 workers 64 s, 8 workers 54 s (94 s
    of CPU), 10 workers 54 s (99 s of CPU)."""
    return min(4 * (os.cpu_count() or 1), 16)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home for settings and history, and the current folder in tmp_path."""
    for name in ENV_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):  # the machine's proxy must not come between tests and 127.0.0.1
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("APIMART_CONFIG", str(home / "config.toml"))
    monkeypatch.setenv("APIMART_DATA_DIR", str(home / "data"))
    monkeypatch.chdir(tmp_path)
    console.configure()
    return home


def browser_recorder(tmp_path: Path) -> tuple[Path, Path]:
    """A $BROWSER that records each argument, one per line, and chatters on its standard
    output (which must not reach apimart's); the script and its log."""
    log = tmp_path / "opened.txt"
    script = tmp_path / "browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{log}"\necho "viewer chatter"\n')
    script.chmod(0o755)
    return script, log


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file outside the output folder that a planted link points at."""
    path = tmp_path / "elsewhere" / "notes.txt"
    path.parent.mkdir()
    path.write_bytes(b"precious")
    return path
