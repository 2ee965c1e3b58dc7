"""Bad input on the command line, in the environment or in the config file: a clear
error naming the bad value, exit 2, nothing sent and nothing written. Never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from tests.cli.conftest import PNG, api_requests, record, run

# Every command that takes --timeout (and --interval), as a user would call it.
TIMED = [
    ("generate", "a red fox"),
    ("generate", "a red fox", "--wait"),
    ("status", "task_1"),
    ("wait", "task_1"),
    ("download", "task_1"),
    ("batch", "jobs.txt"),
    ("upload", "a.png"),
    ("models",),
    ("balance",),
    ("resend",),
]
POLLING = [("generate", "a red fox", "--wait"), ("wait", "task_1"), ("batch", "jobs.txt")]


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "jobs.txt").write_text("a red fox\n")
    return tmp_path


@pytest.mark.parametrize("command", TIMED, ids=" ".join)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "1e308", str(10**30)])
def test_a_timeout_that_is_no_number_of_seconds_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, files: Path, command: tuple[str, ...], value: str
) -> None:
    result = run(*command, "--timeout", value)
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.stderr
    assert result.stdout == ""
    assert api_requests(httpx_mock) == []
    assert sorted(p.name for p in files.iterdir()) == ["a.png", "jobs.txt"]


@pytest.mark.parametrize("command", POLLING, ids=" ".join)
@pytest.mark.parametrize("value", ["nan", "inf", "1e308"])
def test_an_interval_that_is_no_number_of_seconds_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, files: Path, command: tuple[str, ...], value: str
) -> None:
    result = run(*command, "--interval", value)
    assert result.exit_code == 2, result.output
    assert "--interval" in result.stderr
    assert api_requests(httpx_mock) == []


@pytest.mark.parametrize("value", ["257", "100000", str(10**30)])
def test_max_in_flight_past_its_limit_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, value: str
) -> None:
    # Each slot was a thread started up front: 10**30 of them hung the command.
    result = run("wait", "task_1", "--max-in-flight", value)
    assert result.exit_code == 2, result.output
    assert "--max-in-flight" in result.stderr and "256" in result.stderr
    assert api_requests(httpx_mock) == []


def test_a_history_limit_past_any_integer_lists_everything() -> None:
    record("task_1")
    result = run("history", "--limit", str(10**30))
    assert result.exit_code == 0, result.output
    assert "task_1" in result.stdout
