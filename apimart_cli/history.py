"""The local task log: every submitted (paid) task, written before its id is printed.

One SQLite file, one table. Every write is its own short ``BEGIN IMMEDIATE``
transaction, committed at once, so a killed process loses nothing already
written, and WAL plus a busy timeout let many `apimart` processes record at once.
Any SQLite or file-system failure surfaces as a ``HistoryError`` naming the file.

Every value written passes through one boundary (``_Writer``) that cuts out the
secrets given to ``secrets.hide``, so a key the service echoes in a failure
reason never reaches the file. A task's state (the service's) and whether its
images were saved (ours) are kept apart: a completed task whose images were
never saved is still pending while its result URLs live.

What is read back is trusted no further than it must be: another program may
have written the file, so a value of the wrong kind (fields that are not a JSON
object, files that are not a list, a time that is no date) is read as absent,
never an error. A file written by a newer version is refused, naming its
version, before anything is sent. Waiting for another process's lock ends with
the command's deadline.
"""

from __future__ import annotations

import builtins
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apimart_cli import secrets
from apimart_cli.constants import VIDEO_OPERATION
from apimart_cli.errors import HistoryError
from apimart_cli.tasks import FINAL_STATES

if TYPE_CHECKING:
    from apimart_cli.deadline import Deadline
    from apimart_cli.polling import Learned
    from apimart_cli.tasks import Task

__all__ = [
    "FINAL_STATES",
    "History",
    "TaskRecord",
    "default_path",
    "task_changes",
]

# Any other state, including one the API adds later, also counts as unfinished.

FILE_NAME = "history.sqlite3"
BUSY_TIMEOUT_SECONDS = 10.0  # the longest wait for another process's lock
MIN_BUSY_SECONDS = 0.5  # and the shortest, however little of the deadline is left
# The longest wait where the history only mirrors the server (`on_failure`): the command's
# answers matter more than recording them.
MIRROR_BUSY_SECONDS = 2.0
LEARNED_TASKS = 50  # the recent completed tasks `learned` looks at
SCHEMA_VERSION = 5  # PRAGMA user_version; add a step to _MIGRATIONS to change the schema

# The statements that bring a file from version N-1 to N, applied in order.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
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
    ),
    2: (
        # Saved apart from the state: when the images were all saved, how many there
        # are, and when their URLs stop working (Unix seconds).
        "ALTER TABLE tasks ADD COLUMN images INTEGER",
        "ALTER TABLE tasks ADD COLUMN expires_at REAL",
        "ALTER TABLE tasks ADD COLUMN saved_at REAL",
        # A version 1 file: a completed task with files had its images saved.
        "UPDATE tasks SET saved_at = updated_at WHERE state = 'completed' AND files != '[]'",
        "CREATE INDEX IF NOT EXISTS tasks_state_created ON tasks (state, created_at)",
    ),
    3: (
        # How long the service said a task would take, and how long it took (seconds):
        # waiting learns from them how far to trust the estimates.
        "ALTER TABLE tasks ADD COLUMN estimated_time REAL",
        "ALTER TABLE tasks ADD COLUMN actual_time REAL",
    ),
    4: (
        # The `request_id` of the reply that gave the task id, to quote to the vendor.
        "ALTER TABLE tasks ADD COLUMN request_id TEXT",
    ),
    5: (
        # The body sent with the idempotency key (`submission.stored_body`), so that every
        # resend of the key sends exactly it: NULL for rows written before.
        "ALTER TABLE tasks ADD COLUMN body TEXT",
    ),
}
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
    images: int | None = None  # how many images the completed task has, when known
    expires_at: float | None = None  # when its result URLs stop working (Unix seconds)
    saved_at: float | None = None  # when all its images had been saved; None: not (yet)
    request_id: str | None = None  # the submit reply's request id, where it gave one

    @property
    def finished(self) -> bool:
        """Whether the task reached a final state (completed, failed or cancelled)."""
        return self.state in FINAL_STATES

    @property
    def kind(self) -> str:
        """What the task makes: "video" for a video model's (its operation is kept with
        its fields) or where its saved files are videos, else "image"."""
        from apimart_cli.images import VIDEO_EXTENSIONS

        videos = any(Path(name).suffix.lower() in VIDEO_EXTENSIONS.values() for name in self.files)
        return "video" if videos or self.fields.get("operation") == VIDEO_OPERATION else "image"

    @property
    def duration(self) -> float | None:
        """A video's length in seconds, as it was asked for (its `duration` field)."""
        value = self.fields.get("duration")
        if self.kind != "video" or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    @property
    def saved(self) -> bool:
        """Whether the images of this (completed) task were all saved."""
        return self.saved_at is not None

    def pending(self, now: float | None = None) -> bool:
        """Unfinished, or completed with images never saved whose URLs still work."""
        if self.state not in FINAL_STATES:
            return True
        now = time.time() if now is None else now
        return (
            self.state == "completed"
            and not self.saved
            and self.expires_at is not None
            and self.expires_at > now
        )

    @property
    def sandbox(self) -> bool:
        """Whether the task went to a sandbox (a loopback base URL): it ended with it."""
        from apimart_cli.settings import is_sandbox_url

        return is_sandbox_url(self.base_url)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """`--since`'s Unix time: a duration back from now (`90m`, `2h`, `3d`, `1w`) or a
    local date or time (`2026-11-30`, `2026-11-30 14:00`, `2026-11-30T14:00:05`)."""
    import re
    from datetime import datetime

    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value.lower())
    if match:
        now = time.time() if now is None else now
        return now - float(match[1]) * _UNITS[match[2]]
    for layout in (
        "%Y-%m-%d",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
    ):
        try:
            return datetime.strptime(value, layout).timestamp()
        except ValueError:
            continue
    from apimart_cli.errors import UsageError

    shown = text if len(text) <= 40 else text[:39] + "…"
    raise UsageError(
        f"Cannot read --since {shown!r}.",
        "Give a duration such as 2h or 3d, or a date such as 2026-11-30 (or 2026-11-30 14:00).",
    )


def default_path() -> Path:
    """``$APIMART_DATA_DIR/history.sqlite3``, else in platformdirs' user data folder."""
    data_dir = os.environ.get("APIMART_DATA_DIR")
    if data_dir:
        from apimart_cli.config_file import user_path

        return user_path(data_dir, "APIMART_DATA_DIR") / FILE_NAME
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

    def __init__(
        self,
        path: Path | None = None,
        *,
        deadline: Deadline | None = None,
        on_failure: Callable[[HistoryError], None] | None = None,
    ) -> None:
        """`deadline`: the command's, which no wait for a lock outlasts (by more than
        MIN_BUSY_SECONDS). `on_failure`: where the history only mirrors the server
        (`status`, `wait`), an `update` that fails is told to it, once, and the
        history is written no more, rather than raising."""
        self.path = path if path is not None else default_path()
        self._conn: sqlite3.Connection | None = None
        self._deadline = deadline
        self._on_failure = on_failure
        self._failed = False
        with _translated(self.path):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Create the file ourselves so it is private from the start; SQLite
            # gives its -wal and -shm files the same mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            # timeout= is SQLite's busy timeout; isolation_level=None: we BEGIN ourselves.
            conn = sqlite3.connect(self.path, timeout=self._busy(), isolation_level=None)
            conn.row_factory = sqlite3.Row
            self._conn = conn
            try:
                self._setup()
            except BaseException:
                self.close()
                raise

    @classmethod
    def open(
        cls,
        path: Path | None = None,
        *,
        deadline: Deadline | None = None,
        on_failure: Callable[[HistoryError], None] | None = None,
    ) -> History:
        """Open (or create) the history; every failure is a ``HistoryError``."""
        return cls(path, deadline=deadline, on_failure=on_failure)

    def _busy(self) -> float:
        """Seconds to wait for another process's lock: up to the deadline, and not long
        at all where the history only mirrors the server."""
        longest = BUSY_TIMEOUT_SECONDS if self._on_failure is None else MIRROR_BUSY_SECONDS
        if self._deadline is None:
            return longest
        return max(self._deadline.cap(longest), MIN_BUSY_SECONDS)

    def _setup(self) -> None:
        """Turn on WAL and bring the schema up to date, writing only when it is not.
        A file from a newer version is refused: this one cannot know what it holds."""
        conn = self._connection()
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            _enable_wal(conn, self._busy())
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if isinstance(found, int) and found > SCHEMA_VERSION:
            raise HistoryError(
                f"The task history {self.path} was written by a newer version of apimart"
                f" (its format is {found}; this version reads up to {SCHEMA_VERSION}).",
                "Install the newer apimart again (from its clone: pip install ., or pipx"
                " install --force .), or set APIMART_DATA_DIR to another folder.",
            )
        if found < SCHEMA_VERSION:
            with self._write() as writer:
                # Read again under the lock: another process may have just upgraded it.
                version = writer.execute("PRAGMA user_version").fetchone()[0]
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        writer.execute(statement)
                writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[_Writer]:
        """One short write transaction, committed on exit; errors become ``HistoryError``.

        A `durable` one is on the disk when it is committed (a submission's record,
        before the request leaves). Another (what the service said of a task, which it
        says again) is on the disk by the next checkpoint, at the latest when the
        history is closed: a killed process loses neither, a power cut may lose the
        other (WAL with synchronous=NORMAL), and the commit waits for no disk."""
        with _translated(self.path):
            conn = self._connection()
            conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            try:
                # Take the write lock now, waiting up to the timeout. Inside the try: a
                # Ctrl-C that comes while it waits is raised as soon as it returns, and
                # must not leave the lock held, which every other writer would then wait on.
                conn.execute("BEGIN IMMEDIATE")
                yield _Writer(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

    def _read(self, sql: str, params: Sequence[object] = ()) -> builtins.list[sqlite3.Row]:
        """The rows `sql` selects, outside any write (its errors as a HistoryError)."""
        with _translated(self.path):
            return self._connection().execute(sql, params).fetchall()

    def _read_one(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        """The first row `sql` selects, or None."""
        with _translated(self.path):
            row: sqlite3.Row | None = self._connection().execute(sql, params).fetchone()
            return row

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.ProgrammingError("the history is closed")
        if self._deadline is not None:  # what is left of the time, now
            self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy() * 1000)}")
        return self._conn

    def check_writable(self) -> None:
        """Raise ``HistoryError`` now if a write would fail: called before a paid submission."""
        with self._write() as conn:
            # A real, committed (and harmless) write: it needs the lock, the WAL and the disk.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version = {int(version)}")

    def record_sending(
        self,
        *,
        base_url: str,
        prompt: str,
        fields: Mapping[str, object],
        idempotency_key: str,
        body: Mapping[str, object] | None = None,
    ) -> None:
        """Record a submission about to be sent (state ``submitting``, no task id yet).

        Written before the request leaves, so that a kill at any point leaves the
        idempotency key to find the task by, and the `body` bound to it. A row
        already there for the key (a submission sent again) is kept as it is, its
        body too: a key is bound to the body first sent with it.
        """
        now = time.time()
        stored = None if body is None else _dumps_body(body)
        with self._write() as conn:
            known = conn.execute(
                "SELECT body FROM tasks WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            if known is None:
                conn.execute(
                    "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt,"
                    " fields, idempotency_key, state, body)"
                    " VALUES (NULL, ?, ?, ?, ?, ?, ?, 'submitting', ?)",
                    (now, now, base_url, prompt, _dumps(fields), idempotency_key, stored),
                )
            elif known[0] is None and stored is not None:  # a row from before bodies were kept
                conn.execute(
                    "UPDATE tasks SET body = ? WHERE idempotency_key = ?",
                    (stored, idempotency_key),
                )

    def forget_sending(self, idempotency_key: str) -> None:
        """Drop the record of a submission the service refused in a way that proves
        nothing was created under its key: the key is free to go."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM tasks WHERE idempotency_key = ? AND task_id IS NULL"
                " AND state IN ('submitting', 'unknown')",
                (idempotency_key,),
            )

    def bound_body(self, idempotency_key: str) -> dict[str, Any] | None:
        """The body bound to a key (`record_sending`), or None if none is recorded."""
        row = self._read_one(
            "SELECT body FROM tasks WHERE idempotency_key = ? AND body IS NOT NULL"
            " ORDER BY id LIMIT 1",
            (idempotency_key,),
        )
        if row is None:
            return None
        try:
            body = json.loads(row[0])
        except (ValueError, TypeError, RecursionError):  # another program wrote the row
            return None
        return body if isinstance(body, dict) else None

    def bound_operation(self, idempotency_key: str) -> str | None:
        """The operation recorded with a key's fields (a video's), or None (an image's)."""
        row = self._read_one(
            "SELECT fields FROM tasks WHERE idempotency_key = ? ORDER BY id LIMIT 1",
            (idempotency_key,),
        )
        operation = None if row is None else _fields(row[0]).get("operation")
        return operation if isinstance(operation, str) else None

    def is_unanswered(self, idempotency_key: str) -> bool:
        """Whether the key was sent before and never answered with a task id."""
        found = self._read_one(
            "SELECT 1 FROM tasks WHERE idempotency_key = ? AND task_id IS NULL LIMIT 1",
            (idempotency_key,),
        )
        return found is not None

    def answered(self, idempotency_key: str) -> builtins.list[str]:
        """The task ids the service answered `idempotency_key` with, in the order they came
        (none: the key was never answered here)."""
        rows = self._read(
            "SELECT task_id FROM tasks WHERE idempotency_key = ? AND task_id IS NOT NULL"
            " ORDER BY id",
            (idempotency_key,),
        )
        return [row[0] for row in rows]

    def sent_to(self, idempotency_key: str) -> str | None:
        """The base URL `idempotency_key` was first sent to (None: never sent from here)."""
        row = self._read_one(
            "SELECT base_url FROM tasks WHERE idempotency_key = ? ORDER BY id LIMIT 1",
            (idempotency_key,),
        )
        return None if row is None else _text(row[0])

    def unknown_submissions(
        self, base_url: str, keys: Sequence[str] = ()
    ) -> builtins.list[TaskRecord]:
        """Submissions to `base_url` whose outcome is unknown (state ``unknown`` or
        ``submitting``, no task id), oldest first; with `keys`, only those keys'."""
        sql = (
            "SELECT * FROM tasks WHERE task_id IS NULL AND state IN ('unknown', 'submitting')"
            " AND base_url = ?"
        )
        params: builtins.list[Any] = [base_url]
        if keys:
            sql += f" AND idempotency_key IN ({', '.join('?' * len(keys))})"
            params += list(keys)
        sql += " ORDER BY created_at, id"
        return [_record(row) for row in self._read(sql, params)]

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
                _drop_unanswered(conn, idempotency_key)
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
            _drop_unanswered(conn, idempotency_key)

    def record_request_id(self, task_id: str, request_id: str) -> None:
        """Keep the request id the submit reply carried for this task."""
        with self._write() as conn:
            conn.execute("UPDATE tasks SET request_id = ? WHERE task_id = ?", (request_id, task_id))

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

        Another unknown try with the same idempotency key updates that row instead. A key
        already answered with a task id (another send of it, at the same time, got the
        answer first) is not made unknown again: every later `resend` would send it.
        """
        now = time.time()
        with self._write() as conn:
            answered = conn.execute(
                "SELECT 1 FROM tasks WHERE idempotency_key = ? AND task_id IS NOT NULL LIMIT 1",
                (idempotency_key,),
            ).fetchone()
            if answered is not None:
                _drop_unanswered(conn, idempotency_key)
                return
            updated = conn.execute(
                "UPDATE tasks SET updated_at = ?, error = ?, state = 'unknown'"
                " WHERE idempotency_key = ? AND task_id IS NULL",
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
        images: int | None = None,
        expires_at: float | None = None,
        estimated_time: float | None = None,
        actual_time: float | None = None,
    ) -> None:
        """Update what is known of a task; ``None`` leaves a value as it is.

        ``files`` are saved images, added to those already recorded (unique, in
        order, as absolute paths). Once the files number the task's ``images``
        (or any are given while that number is unknown), the task counts as
        saved. A task id not in the history (one submitted elsewhere) is ignored:
        the history holds what was submitted from here. An update that changes
        nothing writes nothing (``updated_at`` is when the record last changed).
        With `on_failure`, a failure is told to it once, and later updates are
        skipped.
        """
        if self._failed:
            return
        try:
            self._update(
                task_id, state, cost, files, error, images, expires_at, estimated_time, actual_time
            )
        except HistoryError as failure:
            if self._on_failure is None:
                raise
            self._failed = True
            self._on_failure(failure)

    def _update(
        self,
        task_id: str,
        state: str | None,
        cost: float | None,
        files: Sequence[str],
        error: str | None,
        images: int | None,
        expires_at: float | None,
        estimated_time: float | None,
        actual_time: float | None,
    ) -> None:
        now = time.time()
        given = {
            "state": state,
            "cost": cost,
            "error": error,
            "images": images,
            "expires_at": expires_at,
            "estimated_time": estimated_time,
            "actual_time": actual_time,
        }
        paths = [str(Path(f).absolute()) for f in files]
        # Read first, without the write lock: most updates (a status asked again, a poll of
        # a task still as it was) change nothing, and writing them would take the lock and
        # sync the disk for nothing.
        row = self._read_one(_UPDATE_READS, (task_id,))
        if row is None or _updated(row, given, paths, now) is None:
            return
        # The service's word alone is asked again if lost; the images saved are not.
        with self._write(durable=bool(paths)) as conn:
            row = conn.execute(_UPDATE_READS, (task_id,)).fetchone()  # again, under the lock
            changed = None if row is None else _updated(row, given, paths, now)
            if changed is None:
                return
            files_json, saved_at = changed
            conn.execute(
                "UPDATE tasks SET updated_at = ?, state = coalesce(?, state),"
                " cost = coalesce(?, cost), error = coalesce(?, error), files = ?,"
                " images = coalesce(?, images), expires_at = coalesce(?, expires_at),"
                " estimated_time = coalesce(?, estimated_time),"
                " actual_time = coalesce(?, actual_time), saved_at = ? WHERE task_id = ?",
                (
                    now,
                    state,
                    cost,
                    error,
                    files_json,
                    images,
                    expires_at,
                    estimated_time,
                    actual_time,
                    saved_at,
                    task_id,
                ),
            )

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of one task, or None if it is not in the history."""
        row = self._read_one("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        return None if row is None else _record(row)

    def list(
        self,
        *,
        pending_only: bool = False,
        limit: int | None = None,
        base_url: str | None = None,
        since: float | None = None,
        search: str | None = None,
        states: Sequence[str] = (),
    ) -> builtins.list[TaskRecord]:
        """Recorded tasks, newest first.

        ``pending_only`` keeps those ``wait --pending`` would pick up (unfinished,
        or completed with images never saved whose URLs still work); ``since``
        those submitted at or after that Unix time; ``search`` those whose prompt
        holds that text (any case); ``states`` those in one of these states.
        """
        where, params = self._filters(
            pending_only=pending_only,
            base_url=base_url,
            since=since,
            search=search,
            states=states,
        )
        # Only the fixed terms of _filters are formatted in; every value is a parameter.
        sql = f"SELECT * FROM tasks{where} ORDER BY created_at DESC, id DESC LIMIT ?"  # noqa: S608
        params.append(-1 if limit is None else max(limit, 0))  # LIMIT -1: no limit
        return [_record(row) for row in self._read(sql, params)]

    @staticmethod
    def _filters(
        *,
        pending_only: bool = False,
        base_url: str | None = None,
        since: float | None = None,
        search: str | None = None,
        states: Sequence[str] = (),
    ) -> tuple[str, builtins.list[Any]]:
        """A WHERE clause with only the conditions asked for, so SQLite picks its index."""
        terms: builtins.list[str] = []
        params: builtins.list[Any] = []
        if pending_only:
            terms.append(
                "(state NOT IN (?, ?, ?) OR (state = 'completed' AND saved_at IS NULL"
                " AND expires_at > ?))"
            )
            params += [*_FINAL, time.time()]
        if base_url is not None:
            terms.append("base_url = ?")
            params.append(base_url)
        if since is not None:
            terms.append("created_at >= ?")
            params.append(since)
        if search:
            terms.append("prompt LIKE ? ESCAPE '\\'")
            escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params.append(f"%{escaped}%")
        if states:
            terms.append(f"state IN ({', '.join('?' * len(states))})")
            params += list(states)
        return (" WHERE " + " AND ".join(terms) if terms else ""), params

    def learned(self, limit: int = LEARNED_TASKS) -> Learned:
        """What the `limit` most recent completed tasks say of how long tasks take: how
        their actual time compared with the service's estimate, and how long each
        kind (size and resolution) took. Waiting aims its polls with it."""
        from apimart_cli.polling import Learned, task_kind

        sql = (
            "SELECT estimated_time, actual_time, fields FROM tasks WHERE state = 'completed'"
            " AND actual_time > 0 ORDER BY created_at DESC, id DESC LIMIT ?"
        )
        rows = self._read(sql, (max(limit, 0),))
        ratios: list[float] = []
        durations: dict[str, list[float]] = {}
        for estimated, actual, fields in reversed(rows):  # oldest first, as they happened
            if not _positive(actual):
                continue
            if _positive(estimated):
                ratios.append(actual / estimated)
            request = _fields(fields)
            kind = task_kind(request.get("size"), request.get("resolution"))
            durations.setdefault(kind, []).append(actual)
        return Learned(tuple(ratios), {kind: tuple(d) for kind, d in durations.items()})

    def pending_counts(
        self,
        *,
        since: float | None = None,
        search: str | None = None,
        states: Sequence[str] = (),
    ) -> dict[str, int]:
        """How many tasks `wait --pending` would pick up, by the base URL each went to
        (counted here: a history of 100,000 rows may hold 20,000 of them)."""
        where, params = self._filters(pending_only=True, since=since, search=search, states=states)
        sql = f"SELECT base_url, COUNT(*) FROM tasks{where} GROUP BY base_url"  # noqa: S608
        rows = self._read(sql, params)
        return {str(row[0]): int(row[1]) for row in rows}

    def pending_ids(self, base_url: str) -> builtins.list[str]:
        """Ids of the tasks submitted to ``base_url`` that ``wait --pending`` picks up,
        oldest first: unfinished, or completed with images never saved whose URLs
        have not expired."""
        where, params = self._filters(pending_only=True, base_url=base_url)
        sql = (
            f"SELECT task_id FROM tasks{where}"  # noqa: S608 - fixed terms, values as parameters
            " AND task_id IS NOT NULL ORDER BY created_at, id"
        )
        return [row[0] for row in self._read(sql, params)]

    def forget_sandbox(self) -> int:
        """Remove every task sent to a sandbox (a loopback base URL); how many were removed."""
        from apimart_cli.settings import is_sandbox_url

        with self._write() as conn:
            urls = [row[0] for row in conn.execute("SELECT DISTINCT base_url FROM tasks")]
            sandboxes = [url for url in urls if is_sandbox_url(url)]
            if not sandboxes:
                return 0
            marks = ", ".join("?" * len(sandboxes))
            return conn.execute(
                f"DELETE FROM tasks WHERE base_url IN ({marks})",  # noqa: S608 - only ?s
                sandboxes,
            ).rowcount

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


def _drop_unanswered(conn: _Writer, idempotency_key: str) -> None:
    """The key has its answer: a row of it still without a task id (another send of the
    key, cut short after this one was answered) is no unknown outcome, and would have
    `resend` send the key again."""
    conn.execute(
        "DELETE FROM tasks WHERE idempotency_key = ? AND task_id IS NULL", (idempotency_key,)
    )


def _enable_wal(conn: sqlite3.Connection, seconds: float) -> None:
    """Switch the file to WAL (a lasting setting), retrying for up to `seconds` while
    another process holds it.

    Changing the journal mode fails at once when the file is busy, without
    waiting for the busy timeout: eight processes creating the file together hit this.
    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


# What an update reads of a row: what it merges, and the values it may set.
_UPDATE_READS = (
    "SELECT files, saved_at, state, cost, error, images, expires_at, estimated_time,"
    " actual_time FROM tasks WHERE task_id = ?"
)


def _updated(
    row: sqlite3.Row, given: Mapping[str, object], paths: Sequence[str], now: float
) -> tuple[str, float | None] | None:
    """The files (as JSON) and saved time a row has after an update of the `given`
    values (by column; None: left as it is) and saved `paths`; None if the update
    changes nothing in it."""
    known = _files(row["files"])
    merged = list(dict.fromkeys([*known, *paths]))
    images = given["images"]
    count = images if isinstance(images, int) else _count(row["images"])
    saved_at = _time(row["saved_at"])
    if saved_at is None and merged and (count is None or len(merged) >= count):
        saved_at = now
    unchanged = (
        merged == known
        and saved_at == _time(row["saved_at"])
        # As _Writer writes them: a secret in an error is cut out.
        and all(v is None or secrets.redact_data(v) == row[k] for k, v in given.items())
    )
    return None if unchanged else (json.dumps(merged), saved_at)


class _Writer:
    """The one way into the file for writes: every text value goes in with the
    hidden secrets (``secrets.hide``: the API key) cut out."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, [secrets.redact_data(value) for value in params])


def task_changes(task: Task) -> dict[str, Any]:
    """What a poll of ``task`` tells the history: ``update(task.task_id, **task_changes(task))``.

    Its state and cost; for a completed task, how many images it has and when
    the first of their URLs expires; for a failed or cancelled one, its reason.
    """
    changes: dict[str, Any] = {"state": task.status, "cost": task.cost}
    if task.estimated_time is not None and task.estimated_time > 0:
        changes["estimated_time"] = task.estimated_time
    actual = task.raw.get("actual_time")
    if task.status == "completed" and isinstance(actual, (int, float)) and actual > 0:
        changes["actual_time"] = float(actual)
    if task.status == "completed" and task.images:
        changes["images"] = len(task.images)
        expiries = [image.expires_at for image in task.images if image.expires_at is not None]
        if expiries:
            changes["expires_at"] = float(min(expiries))
    elif task.finished:
        changes["error"] = task.error_message or "no reason given"
    return changes


def _dumps(fields: Mapping[str, object]) -> str:
    # default=str: a stray non-JSON value (a Path, say) must not lose a paid task's record.
    # The secrets are cut out before the text is JSON: an escaped key would not match.
    text = json.dumps(dict(fields), ensure_ascii=False, sort_keys=True, default=str)
    return json.dumps(secrets.redact_data(json.loads(text)), ensure_ascii=False, sort_keys=True)


def _dumps_body(body: Mapping[str, object]) -> str:
    """A body as JSON in the order it is sent (a resend rebuilds it in that order)."""
    return json.dumps(secrets.redact_data(dict(body)), ensure_ascii=False)


def _record(row: sqlite3.Row) -> TaskRecord:
    """A row as a record, each value checked: what another program wrote there that no
    version of this one writes is read as absent (an empty text, no time, no files)."""
    return TaskRecord(
        task_id=_text(row["task_id"]),
        created_at=_time(row["created_at"]) or 0.0,
        updated_at=_time(row["updated_at"]) or 0.0,
        base_url=_text(row["base_url"]) or "",
        prompt=_text(row["prompt"]) or "",
        fields=_fields(row["fields"]),
        idempotency_key=_text(row["idempotency_key"]) or "",
        state=_text(row["state"]) or "unknown",
        cost=_finite(row["cost"]),
        files=tuple(_files(row["files"])),
        error=_text(row["error"]),
        images=_count(row["images"]),
        expires_at=_time(row["expires_at"]),
        saved_at=_time(row["saved_at"]),
        request_id=_text(row["request_id"]),
    )


# The latest time read as one: the end of year 9999 (later cannot be shown as a date).
_LATEST = 253402300799.0
# The deepest a stored request's fields may nest: they are flat; printing deeper would fail.
_MAX_DEPTH = 32


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _positive(value: object) -> bool:
    number = _finite(value)
    return number is not None and number > 0


def _time(value: object) -> float | None:
    number = _finite(value)
    return number if number is not None and 0 <= number <= _LATEST else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _loads(text: object) -> object:
    """A stored JSON value, or None where it is none (or nested too deeply to read)."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text, parse_constant=lambda constant: None)  # no NaN, no Infinity
    except (ValueError, RecursionError):
        return None
    return value if json_depth(value) <= _MAX_DEPTH else None


def _fields(text: object) -> dict[str, object]:
    value = _loads(text)
    return value if isinstance(value, dict) else {}


def _files(text: object) -> builtins.list[str]:
    value = _loads(text)
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def json_depth(value: object) -> int:
    """How deeply a JSON-like `value` nests (a scalar: 0), found without recursion: what
    was read from a file is checked before anything recursive (printing it) meets it."""
    deepest = 0
    stack: builtins.list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest
