"""`apimart config`: set, get, unset, list, path; the key masked; the file private."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from .conftest import API, AUTH, KEY, run

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
    result = run("config", "set", "api_key", "--no-check", input=f"{KEY}\n")

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


DEFAULTS = (
    "output_dir = .  (default)\n"
    "references = auto  (default)\n"
    "metadata = true  (default)\n"
    "preview = false  (default)\n"
)


def test_get_and_list_mask_the_key_unless_reveal(config: Path) -> None:
    run("config", "set", "api_key", "--no-check", input=f"{KEY}\n")
    run("config", "set", "base_url", "https://api.test/")

    assert run("config", "get", "api_key").stdout == f"{MASKED}\n"
    assert run("config", "list").stdout == (
        f"api_key = {MASKED}  (config file)\nbase_url = https://api.test  (config file)\n"
        + DEFAULTS
    )
    assert run("config", "get", "api_key", "--reveal", may_show_key=True).stdout == f"{KEY}\n"
    revealed = run("config", "list", "--reveal", may_show_key=True)
    assert revealed.stdout.startswith(f"api_key = {KEY}  (config file)\n")


def test_unset(config: Path) -> None:
    run("config", "set", "output_dir", "out")
    run("config", "set", "base_url", "https://api.test")

    result = run("config", "unset", "output_dir")

    assert result.exit_code == 0, result.output
    assert result.stderr == f"Removed output_dir from {config}\n"
    assert config.read_text() == 'base_url = "https://api.test"\n'
    # Unset in the file: the default is in effect.
    assert run("config", "get", "output_dir").stdout == ".\n"
    missing = run("config", "get", "api_key")
    assert missing.exit_code == 2
    assert missing.stderr == (
        "Error: api_key is not set.\nSet it with `apimart config set api_key` or APIMART_API_KEY.\n"
    )


def test_list_without_a_file_shows_the_defaults(config: Path) -> None:
    result = run("config", "list")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "api_key = (not set)  (default)\nbase_url = https://api.apimart.ai  (default)\n" + DEFAULTS
    )
    assert not config.exists()


def test_list_names_each_value_s_source(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("config", "set", "output_dir", "from-file")
    run("config", "set", "metadata", "0")
    monkeypatch.setenv("APIMART_API_KEY", KEY)
    monkeypatch.setenv("APIMART_REFERENCES", "upload")

    result = run("--base-url", "https://flag.test", "config", "list")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"api_key = {MASKED}  (APIMART_API_KEY)\n"
        "base_url = https://flag.test  (--base-url)\n"
        "output_dir = from-file  (config file)\n"
        "references = upload  (APIMART_REFERENCES)\n"
        "metadata = false  (config file)\n"
        "preview = false  (default)\n"
    )
    as_json = run("config", "list", "--json")
    assert [json.loads(line) for line in as_json.stdout.splitlines()][2:5] == [
        {"key": "output_dir", "value": "from-file", "source": "file", "from": str(config)},
        {"key": "references", "value": "upload", "source": "env", "from": "APIMART_REFERENCES"},
        {"key": "metadata", "value": False, "source": "file", "from": str(config)},
    ]


def test_get_shows_the_value_in_effect_from_any_source(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run("config", "get", "base_url").stdout == "https://api.apimart.ai\n"
    assert run("config", "get", "preview").stdout == "false\n"
    monkeypatch.setenv("APIMART_PREVIEW", "1")
    assert run("config", "get", "preview").stdout == "true\n"
    assert run("--base-url", "https://flag.test/", "config", "get", "base_url").stdout == (
        "https://flag.test\n"
    )
    assert not config.exists()


@pytest.mark.parametrize(
    ("args", "written"),
    [
        (["metadata", "false"], "metadata = false\n"),
        (["metadata", "1"], "metadata = true\n"),
        (["preview", "on"], "preview = true\n"),
        (["references", "UPLOAD"], 'references = "upload"\n'),
    ],
)
def test_set_writes_switches_as_toml_booleans(config: Path, args: list[str], written: str) -> None:
    result = run("config", "set", *args)

    assert result.exit_code == 0, result.output
    assert config.read_text() == written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["metadata", "maybe"], "metadata must be 0 or 1 (or true or false), not 'maybe'."),
        (["references", "attach"], "references must be auto, inline or upload, not 'attach'."),
    ],
)
def test_set_refuses_a_value_the_setting_cannot_take(
    config: Path, args: list[str], message: str
) -> None:
    result = run("config", "set", *args)

    assert result.exit_code == 2, result.output
    assert result.stderr == f"Error: {message}\n"
    assert not config.exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("APIMART_METADATA", "maybe", "APIMART_METADATA: metadata must be 0 or 1"),
        (
            "APIMART_REFERENCES",
            "x",
            "APIMART_REFERENCES: references must be auto, inline or upload",
        ),
        ("APIMART_BASE_URL", "ftp://x", "Invalid base URL 'ftp://x'. (from APIMART_BASE_URL)"),
    ],
)
def test_a_bad_environment_value_is_named(
    config: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)

    result = run("config", "list")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {message}")


def test_set_api_key_asks_the_service_whether_it_takes_it(
    config: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_BASE_URL", API)
    httpx_mock.add_response(
        method="GET", url=f"{API}/v1/balance", match_headers=AUTH, json={"remain_balance": 5}
    )

    result = run("config", "set", "api_key", input=f"{KEY}\n")

    assert result.exit_code == 0, result.output
    assert result.stderr == f"{API} accepted the key.\nSaved api_key in {config}\n"
    assert config.read_text() == f'api_key = "{KEY}"\n'


def test_a_key_the_service_refuses_is_not_saved(
    config: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_BASE_URL", API)
    run("config", "set", "api_key", "--no-check", input="sk-the-old-good-key\n")
    httpx_mock.add_response(
        method="GET",
        url=f"{API}/v1/balance",
        status_code=401,
        json={"error": {"message": f"invalid key {KEY}"}},
    )

    result = run("config", "set", "api_key", input=f"{KEY}\n")

    assert result.exit_code == 3, result.output
    first, hint = result.stderr.splitlines()
    assert first.startswith(f"Error: {API} refused this key (")
    assert first.endswith("); it was not saved.")
    assert "--no-check" in hint
    assert config.read_text() == 'api_key = "sk-the-old-good-key"\n'


@pytest.mark.usefixtures("no_real_backoff")
def test_a_key_that_could_not_be_checked_is_saved_with_a_note(
    config: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_BASE_URL", API)
    httpx_mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)

    result = run("-q", "config", "set", "api_key", input=f"{KEY}\n")

    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"Could not check the key with {API}: ")
    assert config.read_text() == f'api_key = "{KEY}"\n'


def test_no_check_sends_nothing(config: Path, httpx_mock: HTTPXMock) -> None:
    result = run("config", "set", "api_key", "--no-check", input=f"{KEY}\n")

    assert result.exit_code == 0, result.output
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize(
    "command", [["set", "colour", "red"], ["get", "colour"], ["unset", "colour"]]
)
def test_an_unknown_key_exits_2(config: Path, command: list[str]) -> None:
    result = run("config", *command)

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "Error: Unknown setting 'colour'.\n"
        "Settings are: api_key, base_url, output_dir, references, metadata, preview.\n"
    )
    assert not config.exists()


def test_a_mistyped_key_names_the_one_meant(config: Path) -> None:
    result = run("config", "set", "api-key", "sk-x")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: Unknown setting 'api-key'. Did you mean api_key?\n")


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

    result = run("config", "set", "api_key", "--no-check", input=f"{KEY}\n")

    assert result.exit_code == 0, result.output
    assert config.read_text() == f'api_key = "{KEY}"\n'
    assert result.stderr.startswith("API key (typing is hidden):")  # not a bare `api_key:`


def test_a_misplaced_key_under_an_unknown_name_is_never_printed(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text(f'api-key = "{KEY}"\nbase_url = "https://api.test"\n')
    config.chmod(0o600)

    result = run("config", "list", "--reveal")  # `run` fails the test if KEY is printed

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"Warning: the config file {config} has an unknown setting 'api-key'; did you mean"
        " api_key? It is ignored.\n"
    )
    assert "api-key" not in result.stdout
    assert result.stdout.startswith("api_key = (not set)  (default)\n")


def test_unset_removes_an_unknown_key_from_the_file(config: Path) -> None:
    config.parent.mkdir(parents=True)
    config.write_text(f'api-key = "{KEY}"\noutput_dir = "out"\n')

    result = run("config", "unset", "api-key")

    assert result.exit_code == 0, result.output
    assert config.read_text() == 'output_dir = "out"\n'


def test_set_through_a_symlinked_config_file_keeps_the_link(config: Path, tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "apimart.toml"
    target.parent.mkdir()
    target.write_text('output_dir = "out"\n')
    config.parent.mkdir(parents=True)
    config.symlink_to(target)

    result = run("config", "set", "base_url", "https://api.test")

    assert result.exit_code == 0, result.output
    assert config.is_symlink()
    assert target.read_text() == 'output_dir = "out"\nbase_url = "https://api.test"\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_key_in_a_file_others_can_read_is_used_with_how_to_fix_it(
    config: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_BASE_URL", API)
    config.parent.mkdir(parents=True)
    config.write_text(f'api_key = "{KEY}"\n')
    config.chmod(0o640)
    httpx_mock.add_response(url=f"{API}/v1/balance", match_headers=AUTH, json={})

    result = run("balance")

    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"Warning: the config file {config} holds an API key and others can read it"
        f" (mode 640). Run: chmod 600 '{config}'\n"
    )


def test_ctrl_c_at_the_key_prompt_exits_130_saving_nothing(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typer

    def interrupted(*args: object, **kwargs: object) -> str:
        raise typer.Abort()  # what Click raises for Ctrl-C at a prompt

    monkeypatch.setattr("apimart_cli.console.is_terminal", lambda stream: True)
    monkeypatch.setattr(typer, "prompt", interrupted)

    result = run("config", "set", "api_key")

    assert result.exit_code == 130, result.output
    assert result.stderr == "Interrupted.\n"
    assert not config.exists()


@pytest.mark.parametrize(
    "value", ["sk-a\nb", "sk-\x1b[31m", "sk-caf\u00e9", "sk-\u202eab", "sk a"], ids=repr
)
def test_a_key_that_cannot_go_in_a_header_is_not_stored(config: Path, value: str) -> None:
    # It was stored, to fail every command after with exit 2.
    result = run("config", "set", "api_key", "--no-check", value)
    assert result.exit_code == 2, result.output
    assert "cannot be sent in a header" in result.stderr
    assert value not in result.stderr
    assert not config.exists()
