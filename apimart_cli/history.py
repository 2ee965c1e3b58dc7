"""The local task log: every submitted (paid) task, written before its id is printed.

One SQLite file, one table. Every write is its own short ``BEGIN IMMEDIATE``
transaction, committed at once, so a killed process loses nothing already
written, and WAL plus a busy timeout let many `apimart` processes record at once.
Any SQLite or file-system failure surfaces as a ``HistoryError`` naming the file.
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from apimart_cli.errors import HistoryError
from apimart_cli.models import FINAL_STATES

__all__ = ["FINAL_STATES", "UNFINISHED_STATES", "History", "TaskRecord", "default_path"]

# Any other state, including one the API adds later, also counts as unfinished.
UNFINISHED_STATES = frozenset({"submitted", "pending", "processing", "unknown"})

FILE_NAME = "history.sqlite3"
BUSY_TIMEOUT_SECONDS = 10.0
SCHEMA_VERSION = 1  # PRAGMA user_version; bump it and add a migration to change the schema

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tasks (
        id INTEGER PRIMARY KEY,
        task_id TEXT UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        base_url TEXT NOT NULL,
        prompt TEXT NOT NULL,
        fields TEXT NOT NULL,
        idempotency_key TEXT NOT NULL,
        state TEXT NOT NULL,
        cost REAL,
        files TEXT NOT NULL DEFAULT '[]',
        error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_base_url_created ON tasks (base_url, created_at)",
    "CREATE INDEX IF NOT EXISTS tasks_idempotency_key ON tasks (idempotency_key)",
)
_FINAL = tuple(sorted(FINAL_STATES))  # bound to the three ? of "state NOT IN (?, ?, ?)"


@dataclass(frozen=True)
class TaskRecord:
    """One row of the history: a submitted task, or a submission whose outcome is unknown."""

    task_id: str | None  # None when the submission's outcome is unknown (no id came back)
    created_at: float  # Unix seconds
    updated_at: float
    base_url: str
    prompt: str
    fields: dict[str, object]  # the request's fields, without base64 data
    idempotency_key: str
    state: str
    cost: float | None
    files: tuple[str, ...]
    error: str | None

    @property
    def finished(self) -> bool:
        """Whether the task reached a final state (completed, failed or cancelled)."""
        return self.state in FINAL_STATES


def default_path() -> Path:
    """``$APIMART_DATA_DIR/history.sqlite3``, else in platformdirs' user data folder."""
    data_dir = os.environ.get("APIMART_DATA_DIR")
    if data_dir:
        return Path(data_dir).expanduser() / FILE_NAME
    import platformdirs  # here, not at the top: most commands never need it

    return Path(platformdirs.user_data_dir("apimart")) / FILE_NAME


@contextmanager
def _translated(path: Path) -> Iterator[None]:
    """Turn any SQLite or OS error into a ``HistoryError`` that names the file and a fix."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            detail = exc.strerror if exc.filename is None else f"{exc.strerror}: {exc.filename}"
        elsewhere = "or set APIMART_DATA_DIR to another folder"
        if "not a database" in detail or "malformed" in detail:
            message = f"The task history {path} is not a readable SQLite database ({detail})."
            hint = f"Move it aside (mv '{path}' '{path}.bad') and run again, {elsewhere}."
        elif "locked" in detail or "busy" in detail:
            message = f"The task history {path} is locked by another process ({detail})."
            hint = f"Wait for other apimart commands to finish and try again, {elsewhere}."
        else:
            message = f"Cannot use the task history {path}: {detail}."
            hint = f"Check the permissions of {path.parent} and the disk space, {elsewhere}."
        raise HistoryError(message, hint) from exc


class History:
    """The task log at ``path`` (default: ``default_path()``); opened, and created if missing.

    Every public method raises ``HistoryError`` (exit code 2) rather than a
    SQLite error. ``History.open`` is the same as the constructor; it exists so
    that callers read as "open the history".
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else default_path()
        self._conn: sqlite3.Connection | None = None
        with _translated(self.path):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create the file ourselves so it is private from the start; SQLite
            # gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            # timeout= is SQLite's busy timeout; isolation_level=None: we BEGIN ourselves.
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)
            conn.row_factory = sqlite3.Row
            self._conn = conn
            try:
                self._setup()
            except BaseException:
                self.close()
                raise

    @classmethod
    def open(cls, path: Path | None = None) -> History:
        """Open (or create) the history; every failure is a ``HistoryError``."""
        return cls(path)

    def _setup(self) -> None:
        """Turn on WAL and create the schema, writing only when something is missing."""
        conn = self._connection()
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            _enable_wal(conn)
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            with self._write():
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, committed on exit; errors become ``HistoryError``."""
        with _translated(self.path):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting up to the timeout
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the history is closed")
        return self._conn

    def check_writable(self) -> None:
        """Raise ``HistoryError`` now if a write would fail: called before a paid submission."""
        with self._write() as conn:
            # A real, committed (and harmless) write: it needs the lock, the WAL and the disk.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")

    def record_submission(
        self,
        task_id: str,
        *,
        base_url: str,
        prompt: str,
        fields: Mapping[str, object],
        idempotency_key: str,
        state: str = "submitted",
    ) -> None:
        """Record a task the server accepted, before its id is printed.

        A row for the same idempotency key with no id yet (an earlier try whose
        outcome was unknown) is filled in rather than duplicated. A task id
        already recorded keeps its row; only its state changes, and never from
        a final state back to an unfinished one.
        """
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT state FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is not None:
                if row[0] not in FINAL_STATES or state in FINAL_STATES:
                    conn.execute(
                        "UPDATE tasks SET state = ?, updated_at = ? WHERE task_id = ?",
                        (state, now, task_id),
                    )
                return
            filled = conn.execute(
                "UPDATE tasks SET task_id = ?, updated_at = ?, base_url = ?, prompt = ?,"
                " fields = ?, state = ?, error = NULL WHERE id = (SELECT min(id) FROM tasks"
                " WHERE idempotency_key = ? AND task_id IS NULL)",
                (task_id, now, base_url, prompt, _dumps(fields), state, idempotency_key),
            )
            if filled.rowcount == 0:
                conn.execute(
                    "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt,"
                    " fields, idempotency_key, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (task_id, now, now, base_url, prompt, _dumps(fields), idempotency_key, state),
                )

    def record_unknown(
        self,
        *,
        base_url: str,
        prompt: str,
        fields: Mapping[str, object],
        idempotency_key: str,
        error: str,
    ) -> None:
        """Record a submission whose outcome is unknown (state ``unknown``, no task id).

        Another unknown try with the same idempotency key updates that row instead.
        """
        now = time.time()
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE tasks SET updated_at = ?, error = ? WHERE idempotency_key = ?"
                " AND task_id IS NULL",
                (now, error, idempotency_key),
            )
            if updated.rowcount == 0:
                conn.execute(
                    "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt,"
                    " fields, idempotency_key, state, error)"
                    " VALUES (NULL, ?, ?, ?, ?, ?, ?, 'unknown', ?)",
                    (now, now, base_url, prompt, _dumps(fields), idempotency_key, error),
                )

    def update(
        self,
        task_id: str,
        *,
        state: str | None = None,
        cost: float | None = None,
        files: Sequence[str] = (),
        error: str | None = None,
        base_url: str | None = None,
    ) -> None:
        """Update what is known of a task; ``None`` leaves a value as it is.

        ``files`` are added to those already recorded (unique, in order). A task
        id not in the history (one submitted elsewhere) is ignored, unless
        ``base_url`` is given: then a minimal row (empty prompt and fields) is
        inserted so that the task is remembered.
        """
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT files FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
            if row is None and base_url is None:
                return
            if row is None:
                conn.execute(
                    "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt,"
                    " fields, idempotency_key, state) VALUES (?, ?, ?, ?, '', '{}', '', ?)",
                    (task_id, now, now, base_url, state or "unknown"),
                )
            known = json.loads(row["files"]) if row is not None else []
            merged = list(dict.fromkeys([*known, *files]))
            conn.execute(
                "UPDATE tasks SET updated_at = ?, state = coalesce(?, state),"
                " cost = coalesce(?, cost), error = coalesce(?, error), files = ?"
                " WHERE task_id = ?",
                (now, state, cost, error, json.dumps(merged), task_id),
            )

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of one task, or None if it is not in the history."""
        with _translated(self.path):
            row = (
                self._connection()
                .execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
                .fetchone()
            )
            return None if row is None else _record(row)

    def list(
        self, *, pending_only: bool = False, limit: int | None = None, base_url: str | None = None
    ) -> builtins.list[TaskRecord]:
        """Recorded tasks, newest first; ``pending_only`` keeps the unfinished ones."""
        sql = (
            "SELECT * FROM tasks WHERE (? = 0 OR state NOT IN (?, ?, ?))"
            " AND (? IS NULL OR base_url = ?) ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        limit = -1 if limit is None else max(limit, 0)  # LIMIT -1: no limit
        params = (pending_only, *_FINAL, base_url, base_url, limit)
        with _translated(self.path):
            return [_record(row) for row in self._connection().execute(sql, params)]

    def pending_ids(self, base_url: str) -> builtins.list[str]:
        """Ids of the unfinished tasks submitted to ``base_url``, oldest first."""
        sql = (
            "SELECT task_id FROM tasks WHERE base_url = ? AND task_id IS NOT NULL"
            " AND state NOT IN (?, ?, ?) ORDER BY created_at, id"
        )
        with _translated(self.path):
            return [row[0] for row in self._connection().execute(sql, (base_url, *_FINAL))]

    def close(self) -> None:
        """Close the database; closing twice is harmless."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with _translated(self.path):
                conn.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL (a lasting setting), retrying while another process holds it.

    Changing the journal mode fails at once when the file is busy, without
    waiting for the busy timeout: eight processes creating the file together hit this.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _dumps(fields: Mapping[str, object]) -> str:
    # default=str: a stray non-JSON value (a Path, say) must not lose a paid task's record.
    return json.dumps(dict(fields), ensure_ascii=False, sort_keys=True, default=str)


def _record(row: sqlite3.Row) -> TaskRecord:
    return TaskRecord(
        task_id=row["task_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        base_url=row["base_url"],
        prompt=row["prompt"],
        fields=json.loads(row["fields"]),
        idempotency_key=row["idempotency_key"],
        state=row["state"],
        cost=row["cost"],
        files=tuple(json.loads(row["files"])),
        error=row["error"],
    )
