"""A signal that comes while a history write waits for the lock leaves no lock behind."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from apimart_cli.history import History

BASE = "https://api.test"


class InterruptedOnLock:
    """A connection whose `BEGIN IMMEDIATE` takes the lock, then Ctrl-C is raised, as
    Python raises a signal that arrived during the call as soon as the call returns."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        cursor = self._conn.execute(sql, *args)
        if sql == "BEGIN IMMEDIATE":
            raise KeyboardInterrupt
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_ctrl_c_as_the_write_lock_is_taken_leaves_it_free_for_the_other_writers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.sqlite3"
    with History.open(path) as main, History.open(path) as worker:
        real = main._connection()
        monkeypatch.setattr(main, "_connection", lambda: InterruptedOnLock(real))
        with pytest.raises(KeyboardInterrupt):
            main.record_sending(base_url=BASE, prompt="a fox", fields={}, idempotency_key="k1")
        assert not real.in_transaction
        worker._connection().execute("PRAGMA busy_timeout = 100")  # fail fast if still held
        worker.record_submission(
            "task_1", base_url=BASE, prompt="a fox", fields={}, idempotency_key="k2"
        )
        assert [r.task_id for r in worker.list()] == ["task_1"]
