"""What the tool remembers between runs besides the history: uploads, model schemas, notes.

One SQLite file in the data folder, private (0600) from the start. Uploads are
keyed by the service and the file's SHA-256, so a file sent once is reused by
every later command until its URL is about to expire. Model schemas are kept
for a day. Notes are what the service said, kept for as long as it holds (that
it refuses base64 references, a model's docs, a synchronous result). The cache
only saves work: if it cannot be read or written, the command goes on without
it, after one warning; a row it cannot trust (not JSON, not an object, an upload
without a plain http(s) URL) counts as absent. What goes in passes through
`secrets` first: a reply may echo the API key. Waiting for another process's
lock ends with the command's deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apimart_cli import secrets

if TYPE_CHECKING:
    from apimart_cli.deadline import Deadline

FILE_NAME = "cache.sqlite3"
# The longest wait for another process's lock. Short: every write is a few rows, and the
# cache only saves work, so waiting longer for it would cost more than it saves.
BUSY_TIMEOUT_SECONDS = 2.0
MIN_BUSY_SECONDS = 0.5  # and the shortest, however little of the deadline is left
SCHEMA_TTL_SECONDS = 24 * 3600.0

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS uploads (
        base_url TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        url TEXT NOT NULL,
        reply TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (base_url, sha256)
    )""",
    """CREATE TABLE IF NOT EXISTS schemas (
        base_url TEXT NOT NULL,
        model TEXT NOT NULL,
        schema TEXT,
        fetched_at REAL NOT NULL,
        PRIMARY KEY (base_url, model)
    )""",
    """CREATE TABLE IF NOT EXISTS notes (
        base_url TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (base_url, name)
    )""",
)


def default_path() -> Path:
    """`cache.sqlite3` beside the task history, in the data folder."""
    from apimart_cli.history import default_path as history_path

    return history_path().with_name(FILE_NAME)


class Cache:
    """The cache at `path` (default: `default_path()`), opened on first use.

    Every method is safe to call from any thread (one connection per call) and
    never raises for a cache problem: `warn` hears of the first one, and the
    cache then behaves as if empty.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        deadline: Deadline | None = None,
    ) -> None:
        self.path = path if path is not None else default_path()
        self._warn = warn
        self._deadline = deadline
        self._clock = clock
        self._broken = False
        self._ready = False

    # -- uploads ----------------------------------------------------------------

    def upload(self, base_url: str, sha256: str) -> dict[str, Any] | None:
        """The service's object for this file's upload, if its URL still has time to live."""
        row = self._query(
            "SELECT reply, url FROM uploads WHERE base_url = ? AND sha256 = ? AND expires_at > ?",
            (base_url, sha256, self._clock()),
        )
        if row is None:
            return None
        reply = _object(row[0])
        if reply is None or not _plain_url(reply.get("url")) or reply["url"] != row[1]:
            return None
        return reply

    def remember_upload(
        self, base_url: str, sha256: str, reply: Mapping[str, Any], expires_at: float
    ) -> None:
        text = _encoded(dict(reply))
        if text is None:
            return  # not kept: the file is uploaded again next time
        self._execute(
            "INSERT OR REPLACE INTO uploads (base_url, sha256, url, reply, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (base_url, sha256, str(json.loads(text)["url"]), text, expires_at),
        )

    # -- model schemas ------------------------------------------------------------

    def schema(self, base_url: str, model: str) -> tuple[bool, dict[str, Any] | None]:
        """(found, schema): found is False when nothing fresh is kept; schema None: none exists."""
        row = self._query(
            "SELECT schema FROM schemas WHERE base_url = ? AND model = ? AND fetched_at > ?",
            (base_url, model, self._clock() - SCHEMA_TTL_SECONDS),
        )
        if row is None:
            return False, None
        if row[0] is None:
            return True, None
        schema = _object(row[0])
        return (False, None) if schema is None else (True, schema)

    def remember_schema(self, base_url: str, model: str, schema: Mapping[str, Any] | None) -> None:
        text = None if schema is None else _encoded(dict(schema))
        if schema is not None and text is None:
            return  # not kept: asked for again next time
        self._execute(
            "INSERT OR REPLACE INTO schemas (base_url, model, schema, fetched_at) "
            "VALUES (?, ?, ?, ?)",
            (base_url, model, text, self._clock()),
        )

    # -- notes ------------------------------------------------------------------------

    def note(self, base_url: str, name: str) -> Any:
        """The value noted under `name` for this service, if it has not expired; else None."""
        row = self._query(
            "SELECT value FROM notes WHERE base_url = ? AND name = ? AND expires_at > ?",
            (base_url, name, self._clock()),
        )
        return None if row is None else _json(row[0])

    def remember_note(self, base_url: str, name: str, value: Any, expires_at: float) -> None:
        """Note `value` (JSON) under `name` for this service until `expires_at` (Unix time)."""
        text = _encoded(value)
        if text is None:
            return
        self._execute(
            "INSERT OR REPLACE INTO notes (base_url, name, value, expires_at) VALUES (?, ?, ?, ?)",
            (base_url, name, text, expires_at),
        )

    # -- SQLite -------------------------------------------------------------------

    def _query(self, sql: str, args: tuple[object, ...]) -> tuple[Any, ...] | None:
        result: tuple[Any, ...] | None = None

        def read(conn: sqlite3.Connection) -> None:
            nonlocal result
            result = conn.execute(sql, args).fetchone()

        self._with_connection(read)
        return result

    def _execute(self, sql: str, args: tuple[object, ...]) -> None:
        self._with_connection(lambda conn: conn.execute(sql, args))

    def _with_connection(self, action: Callable[[sqlite3.Connection], object]) -> None:
        if self._broken:
            return
        try:
            if not self._ready:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                # Created by us, private from the start: it names files and URLs.
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            busy = BUSY_TIMEOUT_SECONDS
            if self._deadline is not None:
                busy = max(self._deadline.cap(busy), MIN_BUSY_SECONDS)
            conn = sqlite3.connect(self.path, timeout=busy)
            try:
                with conn:  # one transaction, committed on success
                    if not self._ready:
                        for statement in _SCHEMA:
                            conn.execute(statement)
                    action(conn)
                self._ready = True
            finally:
                conn.close()
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._broken = True
            if self._warn:
                self._warn(
                    f"Warning: the cache {self.path} cannot be used ({exc}); going on without it."
                )


def _encoded(value: object) -> str | None:
    """`value` as the JSON text to keep, redacted; None for a value nested too deeply to
    redact or encode (a reply just short of what the parser refuses): such a value is
    not kept, since the cache only saves work."""
    try:
        return json.dumps(secrets.redact_data(value))
    except RecursionError:
        return None


def _json(text: object) -> Any:
    """A stored JSON value, or None where the row holds none (another program wrote it)."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _object(text: object) -> dict[str, Any] | None:
    """A stored JSON object, or None for anything else (a row another program wrote)."""
    value = _json(text)
    return value if isinstance(value, dict) else None


def _plain_url(value: object) -> bool:
    """Whether `value` is an http(s) URL with nothing in it that could not be sent as is."""
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        return False
    return value.isascii() and value.isprintable() and " " not in value


MODELS_FILE = "models.txt"


def remember_models(ids: list[str]) -> None:
    """The service's model ids, one a line, in `models.txt` beside the cache: what the
    shell completions offer after --model (they cannot read SQLite). Best effort: a
    folder that cannot be written only leaves the completions with the built-in ids."""
    import re

    path = default_path().with_name(MODELS_FILE)
    # Only plain ids: the file is read by shell scripts. Never one that holds the key (a
    # service echoing it): this is no file of the key's.
    plain = [i for i in ids if re.fullmatch(r"[A-Za-z0-9][\w.:/-]{0,127}", i)]
    text = "".join(f"{i}\n" for i in plain if not secrets.holds_secret(i))
    part = path.with_name(f".{MODELS_FILE}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(text, encoding="utf-8")
        part.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink()
