"""`apimart history`: the tasks submitted from here, newest first."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from apimart_cli import console
from apimart_cli.history import History

from .conftest import API, history_rows, record, run


def when(task_id: str | None) -> str:
    [row] = [row for row in history_rows() if row.task_id == task_id]
    return datetime.fromtimestamp(row.created_at).strftime("%Y-%m-%d %H:%M:%S")


def fill() -> None:
    """Four tasks, oldest first: one completed with a file, one failed, two unfinished."""
    record("task_01", prompt="a red fox")
    record("task_02", prompt="a lighthouse\nat  dawn")
    record("task_03", prompt="a blue whale")
    with History.open() as history:
        history.update("task_01", state="completed", files=["out/task_01_0.png"])
        history.update("task_03", state="failed", error="content policy")
        history.record_unknown(
            base_url=API, prompt="a paid mystery", fields={}, idempotency_key="key-9", error="500"
        )


def test_newest_first_one_line_each_off_a_terminal() -> None:
    fill()

    result = run("history")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"(unknown; key key-9)\t{when(None)}\tunknown\ta paid mystery\t",
        f"task_03\t{when('task_03')}\tfailed\ta blue whale\t",
        f"task_02\t{when('task_02')}\tsubmitted\ta lighthouse at dawn\t",
        f"task_01\t{when('task_01')}\tcompleted\ta red fox\tout/task_01_0.png",
    ]
    assert result.stderr == ""


def test_pending_keeps_the_unfinished_ones() -> None:
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
        "state": "failed",
        "prompt": "a blue whale",
        "fields": {},
        "idempotency_key": "key-task_03",
        "cost": None,
        "files": [],
        "error": "content policy",
    }
    assert objects[0]["idempotency_key"] == "key-9"


def test_empty_history() -> None:
    result = run("history")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""


def test_on_a_terminal_a_table_that_shows_brackets_as_typed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record("task_01", prompt="a fox [/bold] in [red]snow")
    monkeypatch.setattr(console, "is_terminal", lambda stream: True)

    result = run("history")

    assert result.exit_code == 0, result.output
    assert "task_01" in result.stdout
    assert "[/bold] in" in result.stdout  # the cell wraps; the brackets are all there
    assert "[red]snow" in result.stdout
