"""`apimart config`: set, get, unset, list, path; the key masked; the file private."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from .conftest import KEY, run

MASKED = f"sk-…{KEY[-4:]}"


@pytest.fixture
def config(isolated: Path) -> Path:
    return isolated / "config.toml"


def test_path_prints_the_config_file(config: Path) -> None:
    result = run("config", "path")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{config}\n"


def test_set_then_get(config: Path) -> None:
    result = run("config", "set", "output_dir", "~/Pictures/apimart")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"Saved output_dir in {config}\n"
    assert config.read_text() == 'output_dir = "~/Pictures/apimart"\n'

    got = run("config", "get", "output_dir")

    assert got.exit_code == 0, got.output
    assert got.stdout == "~/Pictures/apimart\n"


def test_the_file_is_private(config: Path) -> None:
    assert run("config", "set", "base_url", "https://api.test").exit_code == 0

    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert [p.name for p in config.parent.iterdir()] == ["config.toml"]  # no temp file left


def test_set_api_key_without_a_value_reads_stdin(config: Path) -> None:
    result = run("config", "set", "api_key", input=f"{KEY}\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"Saved api_key in {config}\n"
    assert config.read_text() == f'api_key = "{KEY}"\n'
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_set_with_nothing_on_stdin_exits_2(config: Path) -> None:
    result = run("config", "set", "api_key", input="")

    assert result.exit_code == 2, result.output
    assert result.stderr == "Error: No value given for api_key.\n"
    assert not config.exists()


def test_get_and_list_mask_the_key_unless_reveal(config: Path) -> None:
    run("config", "set", "api_key", input=f"{KEY}\n")
    run("config", "set", "base_url", "https://api.test/")

    assert run("config", "get", "api_key").stdout == f"{MASKED}\n"
    assert run("config", "list").stdout == f"api_key = {MASKED}\nbase_url = https://api.test\n"
    assert run("config", "get", "api_key", "--reveal", may_show_key=True).stdout == f"{KEY}\n"
    revealed = run("config", "list", "--reveal", may_show_key=True)
    assert revealed.stdout == f"api_key = {KEY}\nbase_url = https://api.test\n"


def test_unset(config: Path) -> None:
    run("config", "set", "output_dir", "out")
    run("config", "set", "base_url", "https://api.test")

    result = run("config", "unset", "output_dir")

    assert result.exit_code == 0, result.output
    assert result.stderr == f"Removed output_dir from {config}\n"
    assert run("config", "list").stdout == "base_url = https://api.test\n"
    missing = run("config", "get", "output_dir")
    assert missing.exit_code == 2
    assert missing.stderr == f"Error: output_dir is not set in {config}.\n"


def test_list_of_no_file_is_empty(config: Path) -> None:
    result = run("config", "list")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""


@pytest.mark.parametrize(
    "command", [["set", "colour", "red"], ["get", "colour"], ["unset", "colour"]]
)
def test_an_unknown_key_exits_2(config: Path, command: list[str]) -> None:
    result = run("config", *command)

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "Error: Unknown setting 'colour'.\nSettings are: api_key, base_url, output_dir.\n"
    )
    assert not config.exists()


def test_a_plain_http_base_url_is_refused(config: Path) -> None:
    result = run("config", "set", "base_url", "http://api.test")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "Error: Refusing to send the API key over plain HTTP to 'http://api.test'.\n"
    )
    assert not config.exists()


@pytest.mark.parametrize(
    "command", [["config", "list"], ["config", "set", "output_dir", "out"], ["history"]]
)
def test_a_malformed_file_names_the_file_and_line(config: Path, command: list[str]) -> None:
    config.parent.mkdir(parents=True)
    config.write_text('base_url = "https://api.test"\napi_key = sk-unquoted\n')

    result = run(*command)

    if command == ["history"]:  # needs no settings
        assert result.exit_code == 0, result.output
        return
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    first, hint = result.stderr.splitlines()
    assert first.startswith(f"Error: The config file {config} is not valid TOML: ")
    assert "line 2" in first
    assert hint == "Fix that line, or remove the file and use `apimart config set`."


def test_a_malformed_file_stops_commands_that_need_settings(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("api_key = 'sk-1'\n[broken\n")

    result = run("status", "task_01")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: The config file {config} is not valid TOML: ")
    assert "line 2" in result.stderr


def test_a_file_cut_short_names_the_line(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("api_key = [\n")

    result = run("config", "list")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: The config file {config} is not valid TOML: ")
    assert "line 1" in result.stderr  # tomllib itself says only "at end of document"


def test_a_setting_of_the_wrong_type_is_named(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text("base_url = 42\n")

    result = run("config", "get", "base_url")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        f"Error: The config file {config}: base_url must be a string, not 42.\n"
        'Write it as base_url = "..."\n'
    )


def test_a_flag_beats_the_environment_which_beats_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("config", "set", "output_dir", "from-file")
    run("config", "set", "base_url", "https://file.test")
    from apimart_cli.commands.common import AppState

    assert AppState().settings().output_dir == Path("from-file")
    monkeypatch.setenv("APIMART_OUTPUT_DIR", "from-env")
    assert AppState().settings().output_dir == Path("from-env")
    assert AppState().settings(Path("from-flag")).output_dir == Path("from-flag")
    assert AppState().settings().base_url == "https://file.test"


def test_set_api_key_on_a_terminal_prompts_unseen(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("apimart_cli.console.is_terminal", lambda stream: True)

    result = run("config", "set", "api_key", input=f"{KEY}\n")

    assert result.exit_code == 0, result.output
    assert config.read_text() == f'api_key = "{KEY}"\n'
