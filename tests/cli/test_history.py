"""`apimart history`: the tasks submitted from here, newest first."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli import console
from apimart_cli.history import History

from .conftest import API, PNG, history_rows, record, run


def when(task_id: str | None) -> str:
    [row] = [row for row in history_rows() if row.task_id == task_id]
    return datetime.fromtimestamp(row.created_at).strftime("%Y-%m-%d %H:%M:%S")


def fill() -> None:
    """Four tasks, oldest first: one completed with a file, one failed, two unfinished."""
    record("task_01", prompt="a red fox")
    record("task_02", prompt="a lighthouse\nat  dawn")
    record("task_03", prompt="a blue whale")
    with History.open() as history:
        history.update("task_01", state="completed", files=["out/task_01_0.png"], cost=0.05)
        history.update("task_03", state="failed", error="content policy", cost=0.01)
        history.record_unknown(
            base_url=API, prompt="a paid mystery", fields={}, idempotency_key="key-9", error="500"
        )


def test_newest_first_one_line_each_off_a_terminal() -> None:
    fill()

    result = run("history")

    assert result.exit_code == 0, result.output
    # id, time, state, prompt, files (absolute), cost, "sandbox" or nothing
    saved = Path.cwd() / "out" / "task_01_0.png"
    assert result.stdout.splitlines() == [
        f"(unknown; key key-9)\t{when(None)}\tunknown\ta paid mystery\t\t\t",
        f"task_03\t{when('task_03')}\tfailed\ta blue whale\t\t0.01\t",
        f"task_02\t{when('task_02')}\tsubmitted\ta lighthouse at dawn\t\t\t",
        f"task_01\t{when('task_01')}\tcompleted\ta red fox\t{saved}\t0.05\t",
    ]
    assert result.stderr == "4 tasks, cost 0.06 in all (2 without a cost reported).\n"


def test_pending_keeps_the_unfinished_ones(api: str) -> None:
    fill()

    result = run("history", "--pending")

    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [
        "(unknown; key key-9)",
        "task_02",
    ]


def test_limit() -> None:
    fill()

    result = run("history", "--limit", "2")

    assert result.exit_code == 0, result.output
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [
        "(unknown; key key-9)",
        "task_03",
    ]


def test_limit_must_be_positive() -> None:
    result = run("history", "--limit", "0")

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "--limit" in result.stderr


def test_json() -> None:
    fill()

    result = run("history", "--json", "--limit", "3")

    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(o["task_id"], o["state"]) for o in objects] == [
        (None, "unknown"),
        ("task_03", "failed"),
        ("task_02", "submitted"),
    ]
    assert objects[1] == {
        "task_id": "task_03",
        "created_at": objects[1]["created_at"],
        "updated_at": objects[1]["updated_at"],
        "base_url": API,
        "sandbox": False,
        "state": "failed",
        "kind": "image",
        "duration": None,
        "saved": False,
        "expires_at": None,
        "prompt": "a blue whale",
        "fields": {},
        "idempotency_key": "key-task_03",
        "cost": 0.01,
        "files": [],
        "error": "content policy",
    }
    assert objects[0]["idempotency_key"] == "key-9"
    # The total of what is listed: data, on standard error, so stdout stays one object a task.
    assert json.loads(result.stderr) == {"total": {"tasks": 3, "cost": 0.01}}


def test_empty_history() -> None:
    result = run("history")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "0 tasks, no cost reported.\n"
    assert run("-q", "history").stderr == ""


def test_since_search_and_state_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    fill()
    with History.open() as history:
        history._conn.execute(  # type: ignore[union-attr]
            "UPDATE tasks SET created_at = created_at - 3 * 86400 WHERE task_id = 'task_01'"
        )

    def ids(*args: str) -> list[str]:
        result = run("history", *args)
        assert result.exit_code == 0, result.output
        return [line.split("\t")[0] for line in result.stdout.splitlines()]

    assert ids("--since", "2d") == ["(unknown; key key-9)", "task_03", "task_02"]
    assert ids("--since", "2d", "--search", "LIGHT") == ["task_02"]
    assert ids("--state", "completed,failed") == ["task_03", "task_01"]
    assert ids("--state", "failed", "--state", "submitted") == ["task_03", "task_02"]
    today = datetime.now().strftime("%Y-%m-%d")
    assert "task_01" not in ids("--since", today)
    assert ids("--search", "whale", "--json") == [] or True  # --json: objects, checked below
    found = run("history", "--search", "whale", "--json")
    assert [json.loads(line)["task_id"] for line in found.stdout.splitlines()] == ["task_03"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "Error: Cannot read --since 'yesterday'."),
        (["--since", "2026-13-45"], "Error: Cannot read --since '2026-13-45'."),
        (["--state", "done"], "Error: Unknown state 'done'."),
    ],
)
def test_a_bad_filter_exits_2_naming_it(args: list[str], message: str) -> None:
    result = run("history", *args)

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.splitlines()[0] == message


def test_pending_includes_completed_tasks_whose_images_were_never_saved(api: str) -> None:
    record("task_unsaved")
    record("task_saved")
    with History.open() as history:
        for task_id in ("task_unsaved", "task_saved"):
            history.update(task_id, state="completed", images=1, expires_at=4_102_444_800)
        history.update("task_saved", files=["task_saved_0.png"])

    result = run("history", "--pending", "--json")

    [listed] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (listed["task_id"], listed["state"], listed["saved"]) == (
        "task_unsaved",
        "completed",
        False,
    )


def test_sandbox_tasks_are_marked_and_can_be_forgotten() -> None:
    record("task_real")
    record("task_sandbox", base_url="http://127.0.0.1:8787")

    listed = run("history")
    assert [line.split("\t")[-1] for line in listed.stdout.splitlines()] == ["sandbox", ""]

    result = run("history", "--forget-sandbox")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "Forgot 1 sandbox task.\n"
    assert [row.task_id for row in history_rows()] == ["task_real"]


def test_on_a_terminal_a_table_that_shows_brackets_as_typed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record("task_01", prompt="a fox [/bold] in [red]snow")
    monkeypatch.setattr(console, "is_terminal", lambda stream: True)
    monkeypatch.setenv("COLUMNS", "120")

    result = run("history")

    assert result.exit_code == 0, result.output
    assert "task_01" in result.stdout
    assert "[/bold] in" in result.stdout  # the cell wraps; the brackets are all there
    assert "[red]snow" in result.stdout


def test_on_a_narrow_terminal_every_task_id_is_shown_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids = [f"task_01KPQ7J7DWZ{n}X9M3V2B8N4C6Q1R5T0Y" for n in range(3)]
    for task_id in ids:
        record(task_id, prompt="a very long prompt " * 10)
    record("task_in_a_sandbox", base_url="http://127.0.0.1:9")
    monkeypatch.setattr(console, "is_terminal", lambda stream: True)
    monkeypatch.setenv("COLUMNS", "100")

    result = run("history")

    assert result.exit_code == 0, result.output
    for task_id in ids:
        assert task_id in result.stdout  # on one line, not cut, not folded
    assert "(sandbox)" in result.stdout
    assert "…" in result.stdout  # the prompt is what gives way


def test_a_history_from_a_newer_version_stops_generate_before_anything_is_sent(
    httpx_mock: HTTPXMock,
) -> None:
    import sqlite3

    with History.open() as history:
        path = history.path
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 42")
    conn.close()

    result = run("--api-key", "sk-newer-0123456789", "--base-url", API, "generate", "a fox")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "written by a newer version of apimart (its format is 42;" in result.stderr
    # The package is installed from a clone, never from the Python Package Index.
    assert "pip install ." in result.stderr and "-U apimart-cli" not in result.stderr
    assert httpx_mock.get_requests() == []


def test_hostile_rows_are_listed_without_an_internal_error(tmp_path: Path) -> None:
    import sqlite3

    fill()
    with History.open() as history:
        path = history.path
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE tasks SET fields = 'not json', files = '5', created_at = 1e300,"
            " updated_at = 'NaN', cost = 'free'"
        )
    conn.close()
    (tmp_path / "out").mkdir()
    for task_id in ("task_01", "task_02", "task_03"):
        (tmp_path / "out" / f"{task_id}_0.png").write_bytes(PNG)

    for args in (["history"], ["history", "--json"], ["history", "--pending"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
    gallery = run("gallery", str(tmp_path / "out"))
    assert gallery.exit_code == 0, gallery.output
    assert "a red fox" in (tmp_path / "out" / "index.html").read_text(encoding="utf-8")


def test_totals_follow_the_cost_rule_and_leave_sandbox_costs_out() -> None:
    for task_id in ("task_01", "task_02", "task_03"):
        record(task_id)
    record("task_09", base_url="http://127.0.0.1:8787")
    with History.open() as history:
        for task_id in ("task_01", "task_02", "task_03", "task_09"):
            history.update(task_id, state="completed", cost=0.05)

    result = run("history", "--json")
    assert json.loads(result.stderr) == {"total": {"tasks": 4, "cost": 0.15}}
    assert "0.15000000000000002" not in result.stderr

    result = run("history")
    assert result.stderr == ("4 tasks, cost 0.15 in all; 1 sent to a sandbox, not counted.\n")


def test_pending_lists_what_wait_pending_picks_up_and_says_what_else_there_is(
    api: str,
) -> None:
    record("task_here")
    record("task_elsewhere", base_url="https://other.example")
    record("task_sandbox", base_url="http://127.0.0.1:8787")

    result = run("history", "--pending")

    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == ["task_here"]
    with History.open() as history:
        assert history.pending_ids(API) == ["task_here"]  # what `wait --pending` waits for
    assert result.stderr.splitlines()[:2] == [
        "Not listed: 1 unfinished task(s) sent to a sandbox, which ended with it; "
        "`apimart history --forget-sandbox` removes them.",
        "Not listed: 1 unfinished task(s) sent to https://other.example; "
        "wait for them with `apimart --base-url URL wait --pending`.",
    ]


def test_a_history_of_sandbox_tasks_only_totals_0_not_no_cost() -> None:
    record("task_09", base_url="http://127.0.0.1:8787")
    with History.open() as history:
        history.update("task_09", state="completed", cost=0.05)
    assert run("history").stderr == "1 task, cost 0 in all; 1 sent to a sandbox, not counted.\n"
    assert json.loads(run("history", "--json").stderr) == {"total": {"tasks": 1, "cost": 0}}
