"""`apimart balance`: the key's (or the account's) balance, plain or JSON."""

from __future__ import annotations

import json

from pytest_httpx import HTTPXMock

from .conftest import API, AUTH, run

BALANCE = {"success": True, "remain_balance": 10.5, "used_balance": 2.3, "unlimited_quota": False}


def expect_balance(httpx_mock: HTTPXMock, reply: object, path: str = "/v1/balance") -> None:
    httpx_mock.add_response(method="GET", url=f"{API}{path}", match_headers=AUTH, json=reply)


def test_plain(api: str, httpx_mock: HTTPXMock) -> None:
    expect_balance(httpx_mock, BALANCE)

    result = run("balance")

    assert result.exit_code == 0, result.output
    assert result.stdout == "remaining\t10.5\nused\t2.3\n"
    assert result.stderr == ""


def test_plain_with_credits(api: str, httpx_mock: HTTPXMock) -> None:
    expect_balance(httpx_mock, {**BALANCE, "remain_credits": 105, "used_credits": 23})

    result = run("balance")

    assert result.exit_code == 0, result.output
    assert result.stdout == "remaining\t10.5\nused\t2.3\nremain credits\t105\nused credits\t23\n"


def test_the_unit_the_service_names_is_shown_and_none_is_made_up(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_balance(httpx_mock, {**BALANCE, "currency": "USD"})

    result = run("balance")

    assert result.exit_code == 0, result.output
    assert result.stdout == "remaining\t10.5 USD\nused\t2.3 USD\n"
    # Without one (test_plain), the numbers stand alone: no "$" is guessed.


def test_unlimited(api: str, httpx_mock: HTTPXMock) -> None:
    expect_balance(httpx_mock, {**BALANCE, "remain_balance": -1, "unlimited_quota": True})

    result = run("balance")

    assert result.exit_code == 0, result.output
    assert result.stdout == "remaining\tunlimited\nused\t2.3\n"


def test_json_prints_the_apis_object(api: str, httpx_mock: HTTPXMock) -> None:
    expect_balance(httpx_mock, BALANCE)

    result = run("balance", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == BALANCE
    assert result.stdout.count("\n") == 1


def test_account_asks_for_the_whole_accounts_balance(api: str, httpx_mock: HTTPXMock) -> None:
    expect_balance(httpx_mock, {**BALANCE, "remain_balance": 99.0}, path="/v1/user/balance")

    result = run("balance", "--account")

    assert result.exit_code == 0, result.output
    assert result.stdout == "remaining\t99.0\nused\t2.3\n"


def test_success_false_is_an_error_with_the_servers_message(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_balance(httpx_mock, {"success": False, "message": "令牌已过期"})

    result = run("balance")

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(
        "Error: The server answered 200 with an error (code 400): 令牌已过期\n"
    )


def test_a_refused_key_exits_3(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{API}/v1/balance",
        status_code=401,
        json={"error": {"code": 401, "message": "invalid token", "type": "authentication_error"}},
    )

    result = run("balance")

    assert result.exit_code == 3, result.output
    assert result.stderr == (
        "Error: The server answered 401: invalid token\n"
        "Check the key: `apimart config set api_key`, or set APIMART_API_KEY.\n"
    )


def test_key_from_the_config_file(httpx_mock: HTTPXMock) -> None:
    stored = run("config", "set", "api_key", "--no-check", input="sk-from-the-config-file\n")
    assert stored.exit_code == 0
    assert run("config", "set", "base_url", API).exit_code == 0
    httpx_mock.add_response(
        url=f"{API}/v1/balance",
        match_headers={"Authorization": "Bearer sk-from-the-config-file"},
        json=BALANCE,
    )

    result = run("balance")

    assert result.exit_code == 0, result.output
    assert result.stdout == "remaining\t10.5\nused\t2.3\n"


ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\nline"


def test_escape_sequences_in_the_reply_never_reach_the_terminal(
    api: str, httpx_mock: HTTPXMock
) -> None:
    """A balance, unit or credit that is text (a hostile or broken service) is printed
    without its control characters: it cannot clear the screen or retitle the window."""
    expect_balance(
        httpx_mock,
        {
            **BALANCE,
            "remain_balance": ESCAPES,
            "used_balance": ESCAPES,
            "currency": ESCAPES,
            "used_credits": ESCAPES,
        },
    )

    result = run("balance")

    assert result.exit_code == 0, result.output
    assert not any(char in result.stdout for char in "\x1b\x07\x9b")
    assert len(result.stdout.splitlines()) == 3  # a line break sent cannot add lines
