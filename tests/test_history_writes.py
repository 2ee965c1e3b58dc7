"""How the history's writes are committed: a signal while one waits for the lock leaves
no lock behind; a submission is on the disk when committed, the service's word need not be."""

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


class SyncNoted:
    """A connection that notes the `PRAGMA synchronous` each write is committed under."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.levels: list[int] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            self.levels.append(self._conn.execute("PRAGMA synchronous").fetchone()[0])
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


FULL, NORMAL = 2, 1


def test_a_submission_is_on_the_disk_when_committed_and_the_services_word_need_not_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with History.open(tmp_path / "history.sqlite3") as history:
        noted = SyncNoted(history._connection())
        monkeypatch.setattr(history, "_connection", lambda: noted)
        history.record_sending(base_url=BASE, prompt="a fox", fields={}, idempotency_key="k1")
        history.record_submission(
            "task_1", base_url=BASE, prompt="a fox", fields={}, idempotency_key="k1"
        )
        history.update("task_1", state="completed", images=1)  # what the service says
        history.update("task_1", files=[str(tmp_path / "a.png")])  # an image saved: ours
        history.record_sending(base_url=BASE, prompt="a cat", fields={}, idempotency_key="k2")
    assert noted.levels == [FULL, FULL, NORMAL, FULL, FULL]
