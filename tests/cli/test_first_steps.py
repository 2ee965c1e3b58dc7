"""What a newcomer runs into first: each mistake gets a message that says what to do."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli import cli

from .conftest import API, KEY, body, expect_submit, run

# -- a global option after the command ------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "found"),
    [
        (["generate", "--api-key", "sk-x", "a fox"], ("--api-key", "generate")),
        (["generate", "a fox", "--api-key=sk-x"], ("--api-key", "generate")),
        (["status", "t1", "--base-url", "http://127.0.0.1:1"], ("--base-url", "status")),
        (["wait", "-o", "out", "-q"], ("-q", "wait")),
        (["config", "list", "--sandbox"], ("--sandbox", "config")),
        (["--api-key", "sk-x", "generate", "a fox"], None),
        (["--api-key", "generate", "generate", "a fox"], None),  # `generate` is the key here
        (["--base-url=https://x", "-v", "status", "t1"], None),
        (["generate", "--", "--api-key"], None),  # after --, an argument
        ([], None),
    ],
)
def test_misplaced_global_option(args: list[str], found: tuple[str, str] | None) -> None:
    assert cli.misplaced_global_option(args) == found


@pytest.mark.parametrize(
    ("args", "commands"),
    [
        (["status", "t1"], ["status"]),
        (["-q", "--api-key", "sk-x", "generate", "a fox"], ["generate"]),
        (["--base-url=https://x", "config", "list"], ["config"]),
        (["wait", "--help"], ["wait"]),
        (["--help"], list(cli.COMMANDS)),
        (["statsu"], list(cli.COMMANDS)),  # so Click can say which command was meant
        (["--api-key", "status"], list(cli.COMMANDS)),  # `status` is the key: no command
        ([], list(cli.COMMANDS)),
    ],
)
def test_a_run_that_names_a_command_builds_that_command_alone(
    args: list[str], commands: list[str]
) -> None:
    import typer.main

    group = typer.main.get_command(cli.app_for(args))
    assert isinstance(group, typer.main.TyperGroup)
    assert sorted(group.commands) == sorted(commands)


def test_the_listing_app_shows_the_same_help_as_the_whole_app() -> None:
    from typer.testing import CliRunner

    listed = CliRunner().invoke(cli.app_for(["--help"]), ["--help"])
    whole = CliRunner().invoke(cli.whole_app(), ["--help"])
    assert listed.exit_code == whole.exit_code == 0
    assert listed.output == whole.output
    assert all(f"  {name} " in listed.output for name in cli.COMMANDS)


def test_a_global_option_after_the_command_says_where_it_goes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["apimart", "generate", "--api-key", KEY, "a fox"])

    with pytest.raises(SystemExit) as done:
        cli.main()

    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "No such option: --api-key" in err
    assert err.endswith(
        "--api-key is a global option: it goes before the command,"
        " as in `apimart --api-key ... generate ...`.\n"
    )
    assert KEY not in err


def test_other_usage_errors_get_no_such_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["apimart", "generate", "--colour", "red"])
    with pytest.raises(SystemExit):
        cli.main()
    assert "global option" not in capsys.readouterr().err


# -- Click's usage errors: two lines, as every other error ----------------------------------


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (
            ["generate", "a fox", "--no-such-option"],
            "Error: No such option: --no-such-option",
            "Try 'apimart generate -h' for help.",
        ),
        (
            ["generate", "a fox", "-n", "abc"],
            "Error: Invalid value for '--n' / '-n': 'abc' is not a valid int.",
            "Try 'apimart generate -h' for help.",
        ),
        (
            ["wait", "--timeout"],
            "Error: Option '--timeout' requires an argument.",
            "Try 'apimart wait -h' for help.",
        ),
        (
            ["config", "set"],
            "Error: Missing argument 'key'.",
            "Try 'apimart config set -h' for help.",
        ),
        (
            ["genrate", "a fox"],
            "Error: No such command 'genrate'. Did you mean 'generate'?",
            "Try 'apimart -h' for help.",
        ),
        (
            ["--base-url"],
            "Error: Option '--base-url' requires an argument.",
            "Try 'apimart -h' for help.",
        ),
    ],
    ids=[
        "unknown option",
        "bad value",
        "missing value",
        "missing argument",
        "no such command",
        "a global option's missing value",
    ],
)
def test_a_usage_error_is_what_is_wrong_and_where_to_look(
    args: list[str], error: str, hint: str
) -> None:
    # Click's own took four lines: the usage, the hint, a blank line, then the error.
    result = run(*args)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [error, hint]


def test_with_json_a_usage_error_is_also_one_json_object() -> None:
    result = run("status", "task_1", "--json", "--no-such-option")

    assert result.exit_code == 2
    *said, last = result.stderr.splitlines()
    assert said == ["Error: No such option: --no-such-option", "Try 'apimart status -h' for help."]
    assert json.loads(last) == {
        "error": {
            "message": "No such option: --no-such-option",
            "hint": "Try 'apimart status -h' for help.",
            "exit_code": 2,
            "retryable": False,
        }
    }
    after_arguments = run("status", "--no-such-option", "--", "--json")
    assert len(after_arguments.stderr.splitlines()) == 2  # `--json` there is a task id


@pytest.mark.parametrize("where", ["environment", "config file", "--api-key"])
def test_a_key_typed_where_a_value_was_due_is_never_quoted(
    where: str, monkeypatch: pytest.MonkeyPatch, isolated: Path
) -> None:
    # Click quotes the value it cannot use; a key pasted one word too far is such a value.
    given: list[str] = []
    if where == "environment":
        monkeypatch.setenv("APIMART_API_KEY", KEY)
    elif where == "config file":
        isolated.mkdir(exist_ok=True)
        (isolated / "config.toml").write_text(f'api_key = "{KEY}"\n')
    else:
        given = ["--api-key", KEY]

    extra = run(*given, "generate", "a fox", KEY)  # `run` fails a test that shows the key
    wrong_type = run(*given, "history", "--limit", KEY)

    assert extra.exit_code == wrong_type.exit_code == 2
    assert "unexpected extra argument" in extra.stderr
    assert "--limit" in wrong_type.stderr


# -- a base URL that ends in /v1 -----------------------------------------------------------


def test_a_base_url_ending_in_v1_is_accepted_with_a_note(
    httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_API_KEY", KEY)
    monkeypatch.setenv("APIMART_BASE_URL", f"{API}/v1/")
    expect_submit(httpx_mock, body())  # POST https://api.test/v1/images/generations

    result = run("generate", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_1\n"
    assert result.stderr == (
        f"Note: the base URL {API}/v1 ends in /v1, which every request adds itself; using {API}.\n"
    )


def test_config_set_stores_the_base_url_without_v1(isolated: object) -> None:
    result = run("config", "set", "base_url", f"{API}/v1")

    assert result.exit_code == 0, result.output
    assert run("config", "get", "base_url").stdout == f"{API}\n"


# -- a size that was meant as a ratio --------------------------------------------------------


def test_a_ratio_typed_with_an_x_is_refused_before_sending(api: str, httpx_mock: HTTPXMock) -> None:
    result = run("generate", "a red fox", "-s", "16x9")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "Error: Size '16x9' is 16x9 pixels, under 64 a side: did you mean the ratio 16:9?\n"
        "Ratios are written with a colon (see `apimart sizes`);"
        " --force-size sends a tiny size as given.\n"
    )
    assert httpx_mock.get_requests() == []


def test_force_size_sends_a_tiny_size_as_given(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(size="16x9"))

    result = run("generate", "a red fox", "-s", "16x9", "--force-size")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_1\n"


# -- options that only apply with --wait ----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["-o", "out"], "-o/--output"),
        (["--output", "out"], "-o/--output"),
        (["-o", "out", "--timeout", "30"], "-o/--output"),  # --timeout bounds the submission
    ],
)
def test_wait_options_without_wait_are_named_as_ignored(
    api: str, httpx_mock: HTTPXMock, options: list[str], named: str
) -> None:
    expect_submit(httpx_mock, body())

    result = run("generate", "a red fox", *options)

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_1\n"
    assert result.stderr == f"Note: {named} only applies with --wait; ignored.\n"


def test_timeout_without_wait_bounds_the_submission_and_is_not_called_ignored(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_submit(httpx_mock, body())

    result = run("generate", "a red fox", "--timeout", "30")

    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("task_1\n", "")


# -- a refused connection ---------------------------------------------------------------------


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("where", "named"),
    [("flag", "--base-url"), ("env", "APIMART_BASE_URL"), ("file", "the config file")],
)
def test_a_refused_loopback_port_fails_at_once_naming_it_and_its_setting(
    monkeypatch: pytest.MonkeyPatch, where: str, named: str
) -> None:
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("APIMART_API_KEY", KEY)
    args = ["status", "task_1"]
    if where == "flag":
        args = ["--base-url", url, *args]
    elif where == "env":
        monkeypatch.setenv("APIMART_BASE_URL", url)
    else:
        assert run("config", "set", "base_url", url).exit_code == 0

    result = run(*args)

    assert result.exit_code == 5, result.output
    lines = result.stderr.splitlines()
    assert not [line for line in lines if "Retrying" in line]  # nothing will start there
    assert f"Could not connect to 127.0.0.1:{port}: " in lines[-2]
    assert lines[-1].startswith(f"Nothing is listening at 127.0.0.1:{port} on this machine")
    assert f"comes from {named}" in lines[-1]
