"""`apimart status`: one request per task, lines for pipes, JSON, and errors per task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli import console

from .conftest import (
    API,
    IMAGES,
    api_requests,
    expect_task,
    history_rows,
    record,
    run,
    task,
)

FAILED = task("task_03", "failed", error={"code": 1001, "message": "content policy"})


def test_off_a_terminal_one_tab_separated_line_per_task(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "processing", progress=40))
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/a.png"], f"{IMAGES}/b.png"]))
    expect_task(httpx_mock, FAILED)

    result = run("status", "task_01", "task_02", "task_03")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "task_01\tprocessing\t40%\t\n"
        "task_02\tcompleted\t\t2 image(s)\n"
        "task_03\tfailed\t\tcontent policy\n"
    )
    assert result.stderr == ""
    assert len(api_requests(httpx_mock)) == 3


def test_json_prints_each_data_object(api: str, httpx_mock: HTTPXMock) -> None:
    first = task("task_01", "pending", cost=0.05)
    expect_task(httpx_mock, first)
    expect_task(httpx_mock, FAILED)

    result = run("status", "task_01", "task_03", "--json")

    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == [first, FAILED]


def test_data_sent_as_a_list_is_understood(api: str, httpx_mock: HTTPXMock) -> None:
    data = task("task_01", "processing", progress=10)
    expect_task(httpx_mock, [data])

    result = run("status", "task_01", "--json")

    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps(data) + "\n"


def test_ids_from_stdin(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "submitted"))
    expect_task(httpx_mock, task("task_02", "submitted"))

    result = run("status", input="  task_01 \n\n task_02\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\tsubmitted\t\t\ntask_02\tsubmitted\t\t\n"


def test_dash_reads_ids_from_stdin(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "submitted"))

    result = run("status", "-", input="task_01\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\tsubmitted\t\t\n"


def test_a_missing_task_exits_1_and_the_others_are_still_printed(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_task(httpx_mock, task("task_01", "processing", progress=40))
    not_found = {"error": {"code": 404, "message": "task not found", "type": "not_found"}}
    expect_task(httpx_mock, None, task_id="task_99", status_code=404, reply=not_found)
    expect_task(httpx_mock, FAILED)

    result = run("status", "task_01", "task_99", "task_03")

    assert result.exit_code == 1, result.output
    assert result.stdout == "task_01\tprocessing\t40%\t\ntask_03\tfailed\t\tcontent policy\n"
    assert result.stderr == (
        "Error: task_99: Task task_99 does not exist (404).\n"
        "Check the id; `apimart history` lists the tasks submitted from here.\n"
    )


def test_failed_tasks_still_exit_0(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, FAILED)
    expect_task(httpx_mock, task("task_04", "cancelled"))

    result = run("status", "task_03", "task_04")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_03\tfailed\t\tcontent policy\ntask_04\tcancelled\t\t\n"


def test_a_server_error_is_retried(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, None, task_id="task_01", status_code=502, reply={"message": "bad"})
    expect_task(httpx_mock, task("task_01", "pending"))

    result = run("status", "task_01")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\tpending\t\t\n"
    assert result.stderr == "The server answered 502: bad. Retrying in 0.0 s (try 2).\n"


def test_the_history_learns_the_states(api: str, httpx_mock: HTTPXMock) -> None:
    record("task_01")
    expect_task(httpx_mock, task("task_01", "processing", progress=40, cost=0.05))

    result = run("status", "task_01")

    assert result.exit_code == 0, result.output
    [row] = history_rows()
    assert (row.state, row.cost) == ("processing", 0.05)


def test_on_a_terminal_a_table(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "is_terminal", lambda stream: True)
    expect_task(httpx_mock, task("task_01", "processing", progress=40))

    result = run("status", "task_01")

    assert result.exit_code == 0, result.output
    header, row = (line for line in result.stdout.splitlines() if "task" in line)
    assert header.split() == ["┃", "task", "┃", "status", "┃", "progress", "┃", "detail", "┃"]
    assert row.split() == ["│", "task_01", "│", "processing", "│", "40%", "│", "│"]


def test_on_a_terminal_brackets_from_the_server_are_shown_as_sent(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "is_terminal", lambda stream: True)
    expect_task(httpx_mock, task("task_01", "failed", error={"message": "[/policy] no"}))

    result = run("status", "task_01")

    assert result.exit_code == 0, result.output
    assert "[/policy] no" in result.stdout


@pytest.mark.parametrize("bad", ["../etc/passwd", "task 01", "task_01?x=1"])
def test_an_invalid_id_exits_2_and_sends_nothing(api: str, httpx_mock: HTTPXMock, bad: str) -> None:
    result = run("status", "task_01", bad)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: Invalid task id {bad!r}.\n")
    assert httpx_mock.get_requests() == []


def test_no_ids_at_all_exits_2(api: str, httpx_mock: HTTPXMock) -> None:
    result = run("status", input="\n  \n")

    assert result.exit_code == 2, result.output
    assert result.stderr == "Error: No task ids on standard input.\n"


def test_the_base_url_of_a_flag_is_used(
    httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_BASE_URL", "https://elsewhere.test")
    monkeypatch.setenv("APIMART_API_KEY", "sk-from-the-environment")
    httpx_mock.add_response(
        url=f"{API}/v1/tasks/task_01?language=en",
        match_headers={"Authorization": "Bearer sk-from-the-flag"},
        json={"code": 200, "data": task("task_01", "pending")},
    )

    result = run("--api-key", "sk-from-the-flag", "--base-url", f"{API}/", "status", "task_01")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\tpending\t\t\n"


def test_a_task_whose_query_fails_is_named(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "pending"))
    for _ in range(6):
        httpx_mock.add_response(url=f"{API}/v1/tasks/task_02?language=en", status_code=500)

    result = run("status", "task_01", "task_02")

    assert result.exit_code == 5, result.output
    assert result.stdout == "task_01\tpending\t\t\n"
    assert result.stderr.splitlines()[-2:] == [
        "Error: task_02: The server answered 500: Internal Server Error",
        "The service is having trouble; try again in a few minutes.",
    ]


def test_what_to_do_is_said_once(api: str, httpx_mock: HTTPXMock) -> None:
    refused = {"error": {"code": 401, "message": "invalid token", "type": "authentication_error"}}
    for task_id in ("task_01", "task_02"):
        expect_task(httpx_mock, None, task_id=task_id, status_code=401, reply=refused)

    result = run("status", "task_01", "task_02")

    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "Error: task_01: The server answered 401: invalid token\n"
        "Error: task_02: The server answered 401: invalid token\n"
        "Check the key: `apimart config set api_key`, or set APIMART_API_KEY.\n"
    )


def test_a_broken_history_is_only_a_warning(
    api: str, httpx_mock: HTTPXMock, isolated: Path
) -> None:
    (isolated / "data").mkdir(parents=True)
    (isolated / "data" / "history.sqlite3").write_bytes(b"this is not a database" * 100)
    expect_task(httpx_mock, task("task_01", "pending"))

    result = run("status", "task_01")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\tpending\t\t\n"
    assert result.stderr.startswith("Warning: The task history ")
    assert result.stderr.endswith(" The task history was not updated.\n")


def test_a_locked_history_is_a_warning_and_the_answers_are_printed(
    api: str, httpx_mock: HTTPXMock
) -> None:
    import sqlite3

    from apimart_cli.history import History

    with History.open() as history:
        history.record_submission(
            "task_01", base_url=api, prompt="a fox", fields={}, idempotency_key="key-1"
        )
        path = history.path
    expect_task(httpx_mock, task("task_01", "pending"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for as long as it likes
    try:
        result = run("status", "task_01")  # waits for the lock 2 s, not 10 s or its --timeout
    finally:
        holder.rollback()
        holder.close()

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\tpending\t\t\n"
    assert "is locked by another process" in result.stderr
    assert result.stderr.endswith(" The task history was not updated.\n")
