"""Start-up stays light: what `--version` and `--help` must not load (see docs/benchmarks.md)."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys

import certifi
import pytest

from apimart_cli import cli
from apimart_cli.sandbox import Sandbox, SandboxConfig

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

# The same run, then the dataclasses defined by the package's modules it loaded.
DATACLASS_PROBE = (
    PROBE
    + """
import dataclasses
made = {
    f"{name}.{cls}"
    for name, module in list(sys.modules.items())
    if name.startswith("apimart_cli")
    for cls, value in vars(module).items()
    if isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value)
}
print(" ".join(sorted(made)), file=sys.stderr)
"""
)


def loaded_modules(*args: str, env: dict[str, str] | None = None) -> set[str]:
    return set(_probe(PROBE, args, env)[-1].split())


def _probe(script: str, args: tuple[str, ...], env: dict[str, str] | None) -> list[str]:
    """The lines a probe script printed on standard error after running `apimart args`."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=True, env=env
    )
    return result.stderr.splitlines()


def test_version_loads_neither_typer_nor_anything_heavy() -> None:
    modules = loaded_modules("--version")
    assert "typer" not in modules
    assert not modules & set(HEAVY)


@pytest.mark.parametrize(
    "args", [("--help",), ("generate", "--help"), ("wait", "--help"), ("config", "path")]
)
def test_help_loads_nothing_heavy(args: tuple[str, ...]) -> None:
    assert not loaded_modules(*args) & set(HEAVY)


def test_help_loads_neither_the_errors_nor_the_future_module() -> None:
    # A clean exit has no error to report or interruption to translate; nothing else on
    # the listing's path imports `__future__`, so none of its modules may need it.
    assert not loaded_modules("--help") & {"apimart_cli.errors", "__future__"}


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


# What a one-line command never uses: rich's console beyond what `status --json` prints
# (nothing), pygments, and click (Typer carries its own copy, `typer._click`).
UNUSED_BY_STATUS = ("rich", "pygments", "click", "httpx._main")
# What one question to the service and one row of the history need none of: the engine
# (waits, downloads) and its poller, the sandbox, the folders' look-up (both folders are
# given), submissions, and what only those import.
NOT_FOR_ONE_QUERY = (
    "apimart_cli.engine",
    "apimart_cli.polling",
    "apimart_cli.downloads",
    "apimart_cli.submission",
    "apimart_cli.payload",
    "apimart_cli.sandbox",
    "platformdirs",
    "tomllib",
    "shlex",
    "asyncio",
)


@pytest.fixture(scope="module")
def status_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], set[str]]:
    """What `apimart status ID --json` loads, asking a sandbox about a task it knows
    and recording the answer in a history that holds the task: the modules, and the
    dataclasses their import created."""
    data = tmp_path_factory.mktemp("data")
    with Sandbox(SandboxConfig(duration=0)) as sandbox:
        env = {
            **os.environ,
            "APIMART_API_KEY": "sk-test",
            "APIMART_BASE_URL": sandbox.base_url,
            "APIMART_DATA_DIR": str(data),
            "APIMART_CONFIG": str(data / "config.toml"),
            # The certificates named, as on many machines (and the floor's script reads).
            "SSL_CERT_FILE": certifi.where(),
        }
        generated = subprocess.run(
            [sys.executable, "-m", "apimart_cli", "generate", "a fox"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        *_, modules, made = _probe(
            DATACLASS_PROBE, ("status", generated.stdout.strip(), "--json"), env
        )
    return set(modules.split()), set(made.split())


@pytest.fixture(scope="module")
def status_modules(status_run: tuple[set[str], set[str]]) -> set[str]:
    return status_run[0]


def test_status_loads_no_rich_pygments_or_click(status_modules: set[str]) -> None:
    assert "apimart_cli.client" in status_modules  # it did reach the service
    loaded = {m for m in status_modules if m.split(".")[0] in UNUSED_BY_STATUS}
    assert not loaded


def test_status_loads_neither_the_engine_nor_the_sandbox(status_modules: set[str]) -> None:
    assert "apimart_cli.history" in status_modules  # the answer is still recorded
    loaded = status_modules & set(NOT_FOR_ONE_QUERY)
    assert not loaded


def test_status_takes_the_certificates_the_environment_names(status_modules: set[str]) -> None:
    # Even for a sandbox on loopback: looking certifi's bundle up loads zipfile and
    # importlib's resource readers, for a bundle that is then not read.
    assert not status_modules & {"zipfile", "importlib.resources.readers"}


# Each dataclass costs its import a third of a millisecond or more (its methods are
# written and compiled when it is created): a record `status` loads is a NamedTuple or a
# plain class, except these, which are copied with `dataclasses.replace` or read as a
# mapping of their fields (`vars`).
STATUS_DATACLASSES = {
    "apimart_cli.tasks.Task",
    "apimart_cli.settings.Settings",
    "apimart_cli.history.TaskRecord",
    "apimart_cli.commands.common.AppState",
}


def test_status_creates_no_other_dataclass(status_run: tuple[set[str], set[str]]) -> None:
    _, made = status_run
    assert "apimart_cli.tasks.Task" in made  # the probe does see them
    assert made <= STATUS_DATACLASSES


def test_httpx_is_imported_without_its_command_line_client() -> None:
    # True whether or not httpx still imports `httpx._main`: the mark is lifted after the
    # import, and the client can still be imported on purpose.
    script = (
        "import sys\n"
        "import apimart_cli.client, httpx\n"
        "assert 'httpx._main' not in sys.modules, sys.modules.get('httpx._main')\n"
        "assert callable(httpx.main)\n"
        "import httpx._main\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_keeping_the_cli_out_is_harmless_where_httpx_is_loaded_already() -> None:
    from apimart_cli import lean_httpx

    before = dict(sys.modules)
    lean_httpx.keep_out_cli()  # httpx is imported in this process: nothing to keep out
    lean_httpx.allow_cli()
    assert sys.modules.get("httpx._main", "absent") is before.get("httpx._main", "absent")


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_listed_summary_is_the_first_paragraph_of_its_commands_help(name: str) -> None:
    module = importlib.import_module(f"apimart_cli.commands.{name}")
    help_text = module.HELP if name in cli.GROUPS else getattr(module, name).__doc__
    first_paragraph = inspect.cleandoc(help_text).split("\n\n")[0]
    assert cli.COMMANDS[name] == " ".join(first_paragraph.split())


@pytest.mark.parametrize("args", [("--help",), ("--api-key", "x"), ("statsu",), ()])
def test_the_listing_imports_no_command_module(args: tuple[str, ...]) -> None:
    modules = loaded_modules(*args)
    assert not {m for m in modules if m.startswith("apimart_cli.commands")}


@pytest.mark.parametrize("args", [["--help"], ["generate", "--no-such-option"]])
def test_a_run_leaves_what_it_made_to_the_exit_however_it_ends(
    args: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interpreter's last collections would walk every object the run made only to
    free memory the exit frees anyway (20 ms of `status`): the run freezes them first."""
    import gc

    from apimart_cli.__main__ import main

    monkeypatch.setattr(sys, "argv", ["apimart", *args])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit):
            main()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
