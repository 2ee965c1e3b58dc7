"""Start-up stays light: what `--version` and `--help` must not load (see docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = (
    "httpx",
    "rich",
    "sqlite3",
    "asyncio",
    "apimart_cli.sandbox",
    "platformdirs",
    # `apimart mcp`'s extra: the SDK and what it brings are for that command alone.
    "mcp",
    "pydantic",
    "anyio",
)

PROBE = """
import sys
sys.argv = ["apimart", *sys.argv[1:]]
from apimart_cli.__main__ import main
try:
    main()
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_modules(*args: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    )
    return set(result.stderr.split())


def test_version_loads_neither_typer_nor_anything_heavy() -> None:
    modules = loaded_modules("--version")
    assert "typer" not in modules
    assert not modules & set(HEAVY)


@pytest.mark.parametrize(
    "args", [("--help",), ("generate", "--help"), ("wait", "--help"), ("config", "path")]
)
def test_help_loads_nothing_heavy(args: tuple[str, ...]) -> None:
    assert not loaded_modules(*args) & set(HEAVY)


def test_a_command_loads_its_own_module_and_no_other_commands() -> None:
    commands = {
        m for m in loaded_modules("status", "--help") if m.startswith("apimart_cli.commands.")
    }
    assert commands == {
        "apimart_cli.commands.common",
        "apimart_cli.commands.options",
        "apimart_cli.commands.status",
    }


def test_version_matches_the_package() -> None:
    from apimart_cli import __version__

    result = subprocess.run(
        [sys.executable, "-m", "apimart_cli", "--version"], capture_output=True, text=True
    )
    assert result.stdout == f"apimart {__version__}\n"
