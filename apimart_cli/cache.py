"""What the tool remembers between runs besides the history: uploads and model schemas.

One SQLite file in the data folder, private (0600) from the start. Uploads are
keyed by the service and the file's SHA-256, so a file sent once is reused by
every later command until its URL is about to expire. Model schemas are kept
for a day. The cache only saves work: if it cannot be read or written, the
command goes on without it, after one warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

FILE_NAME = "cache.sqlite3"
BUSY_TIMEOUT_SECONDS = 10.0
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
    ) -> None:
        self.path = path if path is not None else default_path()
        self._warn = warn
        self._clock = clock
        self._broken = False
        self._ready = False

    # -- uploads ----------------------------------------------------------------

    def upload(self, base_url: str, sha256: str) -> dict[str, Any] | None:
        """The service's object for this file's upload, if its URL still has time to live."""
        row = self._query(
            "SELECT reply FROM uploads WHERE base_url = ? AND sha256 = ? AND expires_at > ?",
            (base_url, sha256, self._clock()),
        )
        return None if row is None else dict(json.loads(row[0]))

    def remember_upload(
        self, base_url: str, sha256: str, reply: Mapping[str, Any], expires_at: float
    ) -> None:
        self._execute(
            "INSERT OR REPLACE INTO uploads (base_url, sha256, url, reply, expires_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (base_url, sha256, str(reply["url"]), json.dumps(dict(reply)), expires_at),
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
        return True, None if row[0] is None else dict(json.loads(row[0]))

    def remember_schema(self, base_url: str, model: str, schema: Mapping[str, Any] | None) -> None:
        self._execute(
            "INSERT OR REPLACE INTO schemas (base_url, model, schema, fetched_at) "
            "VALUES (?, ?, ?, ?)",
            (base_url, model, None if schema is None else json.dumps(dict(schema)), self._clock()),
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
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS)
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


MODELS_FILE = "models.txt"


def remember_models(ids: list[str]) -> None:
    """The service's model ids, one a line, in `models.txt` beside the cache: what the
    shell completions offer after --model (they cannot read SQLite). Best effort: a
    folder that cannot be written only leaves the completions with the built-in ids."""
    import re

    path = default_path().with_name(MODELS_FILE)
    # Only plain ids: the file is read by shell scripts.
    text = "".join(f"{i}\n" for i in ids if re.fullmatch(r"[A-Za-z0-9][\w.:/-]{0,127}", i))
    part = path.with_name(f".{MODELS_FILE}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(text, encoding="utf-8")
        part.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            part.unlink()
