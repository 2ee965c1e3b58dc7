"""The cache of uploads and schemas: it never holds the key, distrusts what it reads, and
never waits for a lock past the command's deadline."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from apimart_cli import cache as cache_module
from apimart_cli import secrets
from apimart_cli.cache import Cache
from apimart_cli.deadline import Deadline
from tests.helpers.clocks import FakeClock

BASE = "https://api.test"
KEY = "sk-cache-Zq81LmX0vT4w"
NOW = 1_800_000_000.0
URL = "https://files.test/u/abc.png"


def stored_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_an_upload_reply_or_schema_that_echoes_the_key_is_stored_without_it(
    tmp_path: Path,
) -> None:
    secrets.hide(KEY)
    cache = Cache(tmp_path / "cache.sqlite3", clock=lambda: NOW)
    cache.remember_upload(BASE, "abc", {"url": URL, "owner": f"key {KEY}"}, NOW + 100)
    cache.remember_schema(BASE, "m", {"description": f"for {KEY[:10]}", KEY: 1})

    assert cache.upload(BASE, "abc") == {"url": URL, "owner": "key [API key]"}
    data = stored_bytes(cache.path)
    assert KEY[:8].encode() not in data


def test_an_upload_url_that_held_the_key_is_never_given_back(tmp_path: Path) -> None:
    secrets.hide(KEY)
    cache = Cache(tmp_path / "cache.sqlite3", clock=lambda: NOW)
    cache.remember_upload(BASE, "abc", {"url": f"{URL}?sig={KEY}"}, NOW + 100)
    assert cache.upload(BASE, "abc") is None
    assert KEY.encode() not in stored_bytes(cache.path)


CORRUPT: list[Any] = [
    "not json {",
    "[1, 2]",
    "null",
    '{"x": 1}',
    '{"url": 5}',
    json.dumps({"url": "https://ok.test/a\n\x1b]8;;https://evil.test\x1b\\"}),
    json.dumps({"url": "file:///etc/passwd"}),
    json.dumps({"url": "https://elsewhere.test/b.png"}),  # not the url the row was kept under
    "[" * 100_000 + "]" * 100_000,
    None,
    12,
]


@pytest.mark.parametrize("reply", CORRUPT)
def test_a_corrupt_upload_row_counts_as_absent(tmp_path: Path, reply: Any) -> None:
    warnings: list[str] = []
    cache = Cache(tmp_path / "cache.sqlite3", warn=warnings.append, clock=lambda: NOW)
    cache.remember_upload(BASE, "abc", {"url": URL}, NOW + 100)
    with sqlite3.connect(cache.path) as conn:
        conn.execute("DROP TABLE uploads")
        conn.execute(
            "CREATE TABLE uploads (base_url, sha256, url, reply, expires_at,"
            " PRIMARY KEY (base_url, sha256))"
        )
        row = (BASE, "abc", URL, reply, NOW + 9)
        conn.execute("INSERT INTO uploads VALUES (?, ?, ?, ?, ?)", row)
    conn.close()

    assert cache.upload(BASE, "abc") is None
    assert warnings == []


@pytest.mark.parametrize("schema", ["not json {", "[1]", "null", "7", "[" * 100_000, 3])
def test_a_corrupt_schema_row_counts_as_not_kept(tmp_path: Path, schema: Any) -> None:
    cache = Cache(tmp_path / "cache.sqlite3", clock=lambda: NOW)
    cache.remember_schema(BASE, "m", {"type": "object"})
    with sqlite3.connect(cache.path) as conn:
        conn.execute("UPDATE schemas SET schema = ?", (schema,))
    conn.close()

    assert cache.schema(BASE, "m") == (False, None)


def test_waiting_for_a_lock_ends_with_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timeouts: list[float] = []
    connect = sqlite3.connect

    def recording(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        timeouts.append(kwargs["timeout"])
        return connect(*args, **kwargs)

    monkeypatch.setattr(cache_module.sqlite3, "connect", recording)
    clock = FakeClock(0.0)
    deadline = Deadline.after(1.5, clock=clock)
    cache = Cache(tmp_path / "cache.sqlite3", clock=lambda: NOW, deadline=deadline)
    cache.upload(BASE, "abc")
    clock.time = 1.4
    cache.upload(BASE, "abc")
    clock.time = 50.0
    cache.upload(BASE, "abc")
    assert timeouts == [1.5, 0.5, 0.5]  # at least half a second, to let a brief lock pass
    Cache(tmp_path / "other.sqlite3").upload(BASE, "abc")
    assert timeouts[-1] == cache_module.BUSY_TIMEOUT_SECONDS == 2.0  # it only saves work


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def test_a_reply_nested_too_deep_to_keep_is_not_kept_and_raises_nothing(tmp_path: Path) -> None:
    """A schema, an upload reply or model docs nested just short of what the parser
    refuses: the cache only saves work, so it keeps nothing, and says nothing."""
    warnings: list[str] = []
    cache = Cache(tmp_path / "cache.sqlite3", warn=warnings.append, clock=lambda: NOW)
    deep = _nested(5_000)
    cache.remember_schema(BASE, "m", {"type": "object", "properties": {"x": {"enum": deep}}})
    cache.remember_upload(BASE, "abc", {"url": URL, "extra": deep}, NOW + 100)
    cache.remember_note(BASE, "docs:m", {"markdown": "# m", "extra": deep}, NOW + 100)

    assert cache.schema(BASE, "m") == (False, None)
    assert cache.upload(BASE, "abc") is None
    assert cache.note(BASE, "docs:m") is None
    assert warnings == []
