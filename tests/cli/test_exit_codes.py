"""Every exit code of the contract, one test each, through a real command."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.errors import ExitCode
from apimart_cli.polling import RealClock

from .conftest import (
    API,
    IMAGES,
    SUBMIT_URL,
    body,
    expect_image,
    expect_submit,
    expect_task,
    history_rows,
    idempotency_keys,
    run,
    task,
)


def test_the_codes_are_the_contracts() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILED": 1,
        "USAGE": 2,
        "AUTH": 3,
        "BALANCE": 4,
        "SERVICE": 5,
        "TIMEOUT": 124,
        "INTERRUPTED": 130,
        "TERMINATED": 143,
    }


def test_0_success(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(), ["task_01"])
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("generate", "a red fox", "--wait", "--interval", "0.1")

    assert result.exit_code == 0, result.output


def test_1_a_task_does_not_exist(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, None, task_id="task_99", status_code=404, reply={"message": "no"})

    result = run("status", "task_99")

    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "Error: task_99: Task task_99 does not exist (404).\n"
        "Check the id; `apimart history` lists the tasks submitted from here.\n"
    )


def test_2_bad_usage_sends_nothing(api: str, httpx_mock: HTTPXMock) -> None:
    result = run("generate", "a red fox", "--size", "banana")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: Invalid size 'banana'.\n")
    assert httpx_mock.get_requests() == []


def test_2_an_unknown_option(api: str, httpx_mock: HTTPXMock) -> None:
    result = run("generate", "a red fox", "--colour", "red")

    assert result.exit_code == 2, result.output
    assert "--colour" in result.stderr
    assert httpx_mock.get_requests() == []


def test_3_no_api_key(httpx_mock: HTTPXMock) -> None:
    result = run("generate", "a red fox")

    assert result.exit_code == 3, result.output
    assert result.stderr == (
        "Error: No API key.\nRun `apimart config set api_key`, or set APIMART_API_KEY.\n"
    )
    assert httpx_mock.get_requests() == []
    assert history_rows() == []


def test_3_the_server_refuses_the_key(api: str, httpx_mock: HTTPXMock) -> None:
    refused = {"error": {"code": 401, "message": "invalid token", "type": "authentication_error"}}
    expect_submit(httpx_mock, body(), status_code=401, reply=refused)

    result = run("generate", "a red fox")

    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("Error: The server answered 401: invalid token\n")
    assert history_rows() == []  # refused, so nothing was created


def test_4_insufficient_balance(api: str, httpx_mock: HTTPXMock) -> None:
    poor = {"error": {"code": 402, "message": "余额不足", "type": "payment_required"}}
    expect_submit(httpx_mock, body(), status_code=402, reply=poor)

    result = run("generate", "a red fox")

    assert result.exit_code == 4, result.output
    assert result.stderr == (
        "Error: The server answered 402: 余额不足\n"
        "Top up the balance, then submit again (`apimart balance` shows it).\n"
    )
    assert len(httpx_mock.get_requests()) == 1


def test_5_the_service_fails_after_six_tries(api: str, httpx_mock: HTTPXMock) -> None:
    for _ in range(6):
        httpx_mock.add_response(url=f"{API}/v1/tasks/task_01?language=en", status_code=503)

    result = run("status", "task_01")

    assert result.exit_code == 5, result.output
    assert result.stdout == ""
    *retries, error, hint = result.stderr.splitlines()
    assert retries == [
        f"The server answered 503: Service Unavailable. Retrying in 0.0 s (try {n})."
        for n in range(2, 7)
    ]
    assert error == "Error: task_01: The server answered 503: Service Unavailable"
    assert hint == "The service is having trouble; try again in a few minutes."


def test_5_a_malformed_reply_after_retries(api: str, httpx_mock: HTTPXMock) -> None:
    for _ in range(6):
        httpx_mock.add_response(url=f"{API}/v1/balance", html="<html>502 Bad Gateway</html>")

    result = run("balance")

    assert result.exit_code == 5, result.output
    assert result.stderr.splitlines()[-2] == (
        f"Error: The request to {API}/v1/balance failed: the reply was not JSON"
    )


# A reply the JSON parser cannot take: deeper than Python's recursion limit.
NESTED = b'{"code": 200, "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("command", "url"),
    [(["status", "task_01"], f"{API}/v1/tasks/task_01?language=en"), (["balance"], None)],
    ids=["status", "balance"],
)
def test_5_a_reply_nested_too_deep_after_retries(
    api: str, httpx_mock: HTTPXMock, command: list[str], url: str | None
) -> None:
    for _ in range(6):
        httpx_mock.add_response(url=url or f"{API}/v1/balance", content=NESTED)

    result = run(*command)

    assert result.exit_code == 5, result.output
    assert "nested too deeply" in result.stderr.splitlines()[-2]
    assert "internal error" not in result.stderr


def test_5_the_network_is_down(api: str, httpx_mock: HTTPXMock) -> None:
    for _ in range(6):
        httpx_mock.add_exception(httpx.ConnectError("Name or service not known"))

    result = run("generate", "a red fox")

    assert result.exit_code == 5, result.output
    assert result.stderr.splitlines()[-2:] == [
        "Error: Could not connect to api.test:443: Name or service not known",
        f"The base URL {API} comes from APIMART_BASE_URL: check it, and the network.",
    ]
    assert len(set(idempotency_keys(httpx_mock))) == 1  # never sent, so safely resent
    assert history_rows() == []


def test_the_highest_code_wins(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, None, task_id="task_99", status_code=404, reply={"message": "no"})
    for _ in range(6):
        httpx_mock.add_response(url=f"{API}/v1/tasks/task_01?language=en", status_code=500)

    result = run("status", "task_99", "task_01")

    assert result.exit_code == 5, result.output


def test_124_wait_times_out(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "processing"), reusable=True, optional=True)

    result = run("wait", "task_01", "--timeout", "0.2", "--interval", "0.1")

    assert result.exit_code == 124, result.output
    assert result.stderr.endswith(
        "Timed out after 0.2 s; 1 task(s) unfinished: task_01\nResume with: apimart wait task_01\n"
    )


def interrupt(request: httpx.Request) -> Any:
    raise KeyboardInterrupt


def test_130_interrupted(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_callback(interrupt, url=f"{API}/v1/tasks/task_01?language=en")

    result = run("status", "task_01")

    assert result.exit_code == 130, result.output
    assert result.stderr == "Interrupted.\n"


def test_130_an_interrupted_wait_says_how_to_resume(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect_task(httpx_mock, task("task_01", "processing", progress=10))
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"]]))
    polls = 0
    real_wait = RealClock.wait

    def ctrl_c_after_both_polls(self: RealClock, events: Any, timeout: float | None) -> Any:
        nonlocal polls
        if polls == 2:
            raise KeyboardInterrupt
        event = real_wait(self, events, timeout)
        polls += bool(event is not None and event.poll_done)
        return event

    monkeypatch.setattr(RealClock, "wait", ctrl_c_after_both_polls)

    result = run("wait", "task_01", "task_02", "-o", "out", "--no-download", "--interval", "0.1")

    assert result.exit_code == 130, result.output
    assert result.stdout == "task_02\n"
    assert result.stderr.endswith(
        "Interrupted; 1 task(s) unfinished: task_01\n"
        "Resume with: apimart wait -o out --no-download task_01\n"
    )


def test_130_an_interrupted_submission_is_recorded_with_its_key(
    api: str, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_callback(interrupt, url=SUBMIT_URL)

    result = run("generate", "a red fox")

    assert result.exit_code == 130, result.output
    assert result.stdout == ""
    [key] = idempotency_keys(httpx_mock)
    assert result.stderr == (
        "Error: Interrupted while submitting; the task may have been created.\n"
        f"Idempotency key {key}: `apimart resend {key}` sends it again safely; the "
        "service answers with the task it made, or makes it once.\n"
    )
    [row] = history_rows()
    assert (row.task_id, row.state, row.idempotency_key) == (None, "unknown", key)
