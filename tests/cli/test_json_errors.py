"""`--json` makes an error data too: one JSON object on standard error, after the message."""

from __future__ import annotations

import json
from typing import Any

from pytest_httpx import HTTPXMock

from .conftest import API, KEY, body, expect_submit, run


def error_object(stderr: str) -> dict[str, Any]:
    """The one JSON line of standard error, checked to be the last and the only one."""
    lines = stderr.splitlines()
    objects = [line for line in lines if line.startswith("{")]
    assert len(objects) == 1, stderr
    assert lines[-1] == objects[0], "the object follows the plain message"
    error = json.loads(objects[0])["error"]
    assert isinstance(error, dict)
    return error


def test_2_bad_input_names_the_value_and_is_not_retryable() -> None:
    result = run("status", "bad/id", "--json")

    assert result.exit_code == 2
    assert result.stderr.startswith("Error: Invalid task id 'bad/id'.\n")
    assert error_object(result.stderr) == {
        "message": "Invalid task id 'bad/id'.",
        "hint": "A task id has only letters, digits, '_' and '-' (not first), "
        "such as task_01KPQ7J7DW...",
        "exit_code": 2,
        "retryable": False,
    }


def test_3_no_key(monkeypatch: Any) -> None:
    monkeypatch.delenv("APIMART_API_KEY", raising=False)

    result = run("balance", "--json")

    assert result.exit_code == 3
    error = error_object(result.stderr)
    assert (error["exit_code"], error["retryable"]) == (3, False)
    assert error["message"] == "No API key."


def test_4_balance_too_low(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(
        httpx_mock, body(), status_code=402, reply={"error": {"message": "Insufficient balance"}}
    )

    result = run("generate", "a red fox", "--json")

    assert result.exit_code == 4
    assert result.stdout == ""
    error = error_object(result.stderr)
    assert (error["exit_code"], error["retryable"]) == (4, False)


def test_5_a_service_failure_is_retryable(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{API}/v1/balance", status_code=503, is_reusable=True)

    result = run("balance", "--json")

    assert result.exit_code == 5
    error = error_object(result.stderr)
    assert (error["exit_code"], error["retryable"]) == (5, True)
    assert "idempotency_key" not in error and "task_ids" not in error


def test_5_an_unknown_outcome_names_its_key_and_is_not_retryable(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_submit(httpx_mock, body(), status_code=500, reply={"error": {"message": "oops"}})

    result = run("generate", "a red fox", "--json")

    assert result.exit_code == 5
    error = error_object(result.stderr)
    sent = httpx_mock.get_requests()[0].headers["Idempotency-Key"]
    assert error["idempotency_key"] == sent
    assert error["retryable"] is False, "resending could pay twice"
    assert sent in error["message"] + error.get("hint", "")


def test_without_json_no_object_is_printed() -> None:
    result = run("status", "bad/id")

    assert result.exit_code == 2
    assert "{" not in result.stderr


def test_the_key_is_never_in_the_object(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{API}/v1/balance", status_code=401, json={"error": {"message": f"bad key {KEY}"}}
    )

    result = run("balance", "--json")  # `run` fails the test if the key is printed

    assert result.exit_code == 3
    assert error_object(result.stderr)["exit_code"] == 3
