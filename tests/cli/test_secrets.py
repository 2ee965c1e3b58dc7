"""The API key never reaches standard output or standard error, whatever happens."""

from __future__ import annotations

import json
import re
import sys

import httpx
import pytest
from pytest_httpx import HTTPXMock

from apimart_cli import cli, console

from .conftest import (
    API,
    IMAGES,
    KEY,
    SUBMIT_URL,
    body,
    expect_image,
    expect_submit,
    expect_task,
    run,
    task,
)


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text
        assert KEY[3:] not in text  # not even without its prefix


def test_verbose_logs_request_lines_without_the_key(httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(), ["task_01"])
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run(
        "--api-key", KEY, "--base-url", API, "-v",
        "generate", "a red fox", "--wait", "--interval", "0.1", "-o", "out",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    logged = [line for line in result.stderr.splitlines() if " -> " in line]
    assert [re.sub(r"\(\d+ ms\)", "(N ms)", line) for line in logged] == [
        f"POST {SUBMIT_URL} -> 200 (N ms)",
        f"GET {API}/v1/tasks/task_01?language=en -> 200 (N ms)",
        f"GET {IMAGES}/a.png -> 200 (N ms)",
    ]
    assert_no_key(result.stdout, result.stderr)


def test_verbose_retries_show_no_key(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, None, task_id="task_01", status_code=503, reply={"message": "busy"})
    httpx_mock.add_exception(httpx.ReadTimeout("read timed out"))
    expect_task(httpx_mock, task("task_01", "processing"))

    result = run("-v", "status", "task_01")

    assert result.exit_code == 0, result.output
    assert "Retrying in 0.0 s (try 3)." in result.stderr
    assert_no_key(result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("status_code", "code"), [(400, 1), (401, 3), (402, 4), (403, 3), (429, 5), (500, 5)]
)
def test_errors_show_no_key(api: str, httpx_mock: HTTPXMock, status_code: int, code: int) -> None:
    for _ in range(6 if status_code in (429, 500) else 1):
        expect_task(
            httpx_mock,
            None,
            task_id="task_01",
            status_code=status_code,
            reply={"error": {"message": "refused", "type": "x"}},
        )

    result = run("-v", "status", "task_01")

    assert result.exit_code == code, result.output
    assert_no_key(result.stdout, result.stderr)


def test_a_server_that_echoes_the_key_is_not_repeated(api: str, httpx_mock: HTTPXMock) -> None:
    echo = {"error": {"message": f"Invalid token: {KEY}", "type": "authentication_error"}}
    expect_submit(httpx_mock, body(), status_code=401, reply=echo)

    result = run("generate", "a red fox")

    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("Error: The server answered 401: Invalid token: ")
    assert_no_key(result.stdout, result.stderr)


def test_a_balance_refusal_that_echoes_the_key_is_not_repeated(
    api: str, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=f"{API}/v1/balance", json={"success": False, "message": f"no such key {KEY}"}
    )

    result = run("balance")

    assert result.exit_code == 1, result.output
    assert_no_key(result.stdout, result.stderr)


def test_a_failed_task_that_echoes_the_key_is_not_repeated(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "failed", error={"message": f"bad key {KEY}"}))

    result = run("wait", "task_01", "--interval", "0.1")

    assert result.exit_code == 1, result.output
    assert "task_01: failed: bad key [API key]\n" in result.stderr
    assert_no_key(result.stdout, result.stderr)


def test_task_data_that_echoes_the_key_is_not_repeated(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = task("task_01", "failed", error={"message": f"bad key {KEY}"})
    for _ in range(3):
        expect_task(httpx_mock, failed)

    as_json = run("status", "task_01", "--json")
    as_lines = run("status", "task_01")
    monkeypatch.setattr(console, "is_terminal", lambda stream: True)
    as_table = run("status", "task_01")

    assert (
        as_json.stdout == json.dumps({**failed, "error": {"message": "bad key [API key]"}}) + "\n"
    )
    assert as_lines.stdout == "task_01\tfailed\t\tbad key [API key]\n"
    assert "bad key [API key]" in as_table.stdout
    for result in (as_json, as_lines, as_table):
        assert result.exit_code == 0, result.output
        assert_no_key(result.stdout, result.stderr)


def test_dry_run_shows_no_key(httpx_mock: HTTPXMock) -> None:
    result = run("--api-key", KEY, "generate", "a red fox", "--dry-run")

    assert result.exit_code == 0, result.output
    assert_no_key(result.stdout, result.stderr)
    assert httpx_mock.get_requests() == []


def test_config_shows_the_key_only_when_asked(httpx_mock: HTTPXMock) -> None:
    # The check of the key against the service echoes it back.
    httpx_mock.add_response(
        url="https://api.apimart.ai/v1/balance", json={"message": f"hello {KEY}"}
    )
    saved = run("config", "set", "api_key", KEY)
    listed = run("config", "list")
    got = run("config", "get", "api_key")

    for result in (saved, listed, got):
        assert result.exit_code == 0, result.output
        assert_no_key(result.stdout, result.stderr)


def test_help_and_history_show_no_key(api: str) -> None:
    for args in (["--help"], ["generate", "--help"], ["history"], ["config", "path"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert_no_key(result.stdout, result.stderr)


def test_an_internal_error_is_one_line_without_traceback_or_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], httpx_mock: HTTPXMock
) -> None:
    """A bug below the commands: the console script prints one line, never the locals."""

    def broken(reply: object, key: str, **kwargs: object) -> list[str]:
        raise RuntimeError(f"unexpected reply for {KEY}")

    monkeypatch.setattr("apimart_cli.client.parse_submitted", broken)
    expect_submit(httpx_mock, body(), ["task_01"])
    monkeypatch.setattr(
        sys, "argv", ["apimart", "--api-key", KEY, "--base-url", API, "generate", "a red fox"]
    )

    with pytest.raises(SystemExit) as exited:
        cli.main()

    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "Error: internal error (RuntimeError). Please report it.\n"


def test_a_short_stand_in_key_does_not_mangle_the_output(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{API}/v1/tasks/task_01?language=en",
        match_headers={"Authorization": "Bearer any"},
        json={"code": 200, "data": task("task_01", "failed", error={"message": "any reason"})},
    )

    result = run("--api-key", "any", "--base-url", API, "status", "task_01")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\tfailed\t\tany reason\n"


def test_a_key_at_the_cut_of_a_long_reason_leaks_no_part_of_it(
    api: str, httpx_mock: HTTPXMock
) -> None:
    reason = "x" * 488 + KEY  # cut to 500 characters, the key's first 12 would remain
    expect_task(httpx_mock, task("task_01", "failed", error={"message": reason}))
    from apimart_cli.history import History

    with History.open() as history:
        history.record_submission(
            "task_01", base_url=API, prompt="a fox", fields={}, idempotency_key="key-1"
        )

    result = run("wait", "task_01", "--interval", "0.1")

    assert result.exit_code == 1, result.output
    with History.open() as history:
        record = history.get("task_01")
    assert record is not None and record.error is not None
    for text in (result.stdout, result.stderr, record.error):
        assert KEY[:8] not in text
    assert "[API key]" in result.stderr
