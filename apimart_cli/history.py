"""The local task log: every submitted (paid) task, written before its id is printed.

One SQLite file, one table. Every write is its own short ``BEGIN IMMEDIATE``
transaction, committed at once, so a killed process loses nothing already
written, and WAL plus a busy timeout let many `apimart` processes record at once.
Any SQLite or file-system failure surfaces as a ``HistoryError`` naming the file.

Every value written passes through one boundary (``_Writer``) that cuts out the
secrets ``console`` was told to hide, so a key the service echoes in a failure
reason never reaches the file. A task's state (the service's) and whether its
images were saved (ours) are kept apart: a completed task whose images were
never saved is still pending while its result URLs live.
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
from typing import TYPE_CHECKING, Any

from apimart_cli import console
from apimart_cli.constants import VIDEO_OPERATION
from apimart_cli.errors import HistoryError
from apimart_cli.models import FINAL_STATES

if TYPE_CHECKING:
    from apimart_cli.models import Task
    from apimart_cli.polling import Learned

__all__ = [
    "FINAL_STATES",
    "History",
    "TaskRecord",
    "default_path",
    "task_changes",
]

# Any other state, including one the API adds later, also counts as unfinished.

FILE_NAME = "history.sqlite3"
BUSY_TIMEOUT_SECONDS = 10.0
LEARNED_TASKS = 50  # the recent completed tasks `learned` looks at
SCHEMA_VERSION = 3  # PRAGMA user_version; add a step to _MIGRATIONS to change the schema

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
        from urllib.parse import urlsplit

        from apimart_cli.settings import is_loopback

        try:
            return is_loopback(urlsplit(self.base_url).hostname or "")
        except ValueError:
            return False


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
        """Turn on WAL and bring the schema up to date, writing only when it is not."""
        conn = self._connection()
        if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            _enable_wal(conn)
        if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
            with self._write() as writer:
                # Read again under the lock: another process may have just upgraded it.
                version = writer.execute("PRAGMA user_version").fetchone()[0]
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in _MIGRATIONS[step]:
                        writer.execute(statement)
                writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[_Writer]:
        """One short write transaction, committed on exit; errors become ``HistoryError``."""
        with _translated(self.path):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")  # take the write lock now, waiting up to the timeout
            try:
                yield _Writer(conn)
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

    def record_sending(
        self,
        *,
        base_url: str,
        prompt: str,
        fields: Mapping[str, object],
        idempotency_key: str,
    ) -> None:
        """Record a submission about to be sent (state ``submitting``, no task id yet).

        Written before the request leaves, so that a kill at any point leaves the
        idempotency key to find the task by. A row already there for the key (a
        batch job sent again) is kept as it is.
        """
        now = time.time()
        with self._write() as conn:
            known = conn.execute(
                "SELECT 1 FROM tasks WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
            if known is None:
                conn.execute(
                    "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt,"
                    " fields, idempotency_key, state)"
                    " VALUES (NULL, ?, ?, ?, ?, ?, ?, 'submitting')",
                    (now, now, base_url, prompt, _dumps(fields), idempotency_key),
                )

    def forget_sending(self, idempotency_key: str) -> None:
        """Drop the record of a submission the service refused (nothing was created)."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM tasks WHERE idempotency_key = ? AND task_id IS NULL"
                " AND state = 'submitting'",
                (idempotency_key,),
            )

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
        the history holds what was submitted from here.
        """
        now = time.time()
        with self._write() as conn:
            row = conn.execute(
                "SELECT files, images, saved_at FROM tasks WHERE task_id = ?", (task_id,)
            ).fetchone()
            if row is None:
                return
            known = json.loads(row["files"])
            merged = list(dict.fromkeys([*known, *(str(Path(f).absolute()) for f in files)]))
            count = images if images is not None else row["images"]
            saved_at = row["saved_at"]
            if saved_at is None and merged and (count is None or len(merged) >= count):
                saved_at = now
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
                    json.dumps(merged),
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
        with _translated(self.path):
            row = (
                self._connection()
                .execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
                .fetchone()
            )
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
        with _translated(self.path):
            return [_record(row) for row in self._connection().execute(sql, params)]

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
        with _translated(self.path):
            rows = self._connection().execute(sql, (max(limit, 0),)).fetchall()
        ratios: list[float] = []
        durations: dict[str, list[float]] = {}
        for estimated, actual, fields in reversed(rows):  # oldest first, as they happened
            if estimated:
                ratios.append(actual / estimated)
            request = json.loads(fields)
            kind = task_kind(request.get("size"), request.get("resolution"))
            durations.setdefault(kind, []).append(actual)
        return Learned(tuple(ratios), {kind: tuple(d) for kind, d in durations.items()})

    def pending_ids(self, base_url: str) -> builtins.list[str]:
        """Ids of the tasks submitted to ``base_url`` that ``wait --pending`` picks up,
        oldest first: unfinished, or completed with images never saved whose URLs
        have not expired."""
        where, params = self._filters(pending_only=True, base_url=base_url)
        sql = (
            f"SELECT task_id FROM tasks{where}"  # noqa: S608 - fixed terms, values as parameters
            " AND task_id IS NOT NULL ORDER BY created_at, id"
        )
        with _translated(self.path):
            return [row[0] for row in self._connection().execute(sql, params)]

    def forget_sandbox(self) -> int:
        """Remove every task sent to a sandbox (a loopback base URL); how many were removed."""
        from urllib.parse import urlsplit

        from apimart_cli.settings import is_loopback

        def loopback(url: str) -> bool:
            try:
                return is_loopback(urlsplit(url).hostname or "")
            except ValueError:
                return False

        with self._write() as conn:
            urls = [row[0] for row in conn.execute("SELECT DISTINCT base_url FROM tasks")]
            sandboxes = [url for url in urls if loopback(url)]
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


class _Writer:
    """The one way into the file for writes: every text value goes in with the
    hidden secrets (``console.hide``: the API key) cut out."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, [_clean(value) for value in params])


def _clean(value: Any) -> Any:
    """``value`` with the hidden secrets cut out of it, and out of any text within it."""
    if isinstance(value, str):
        return console.redact(value)
    if isinstance(value, Mapping):
        return {_clean(str(key)): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


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
    return json.dumps(_clean(json.loads(text)), ensure_ascii=False, sort_keys=True)


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
        images=row["images"],
        expires_at=row["expires_at"],
        saved_at=row["saved_at"],
    )
