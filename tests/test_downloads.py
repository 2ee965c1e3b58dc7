"""Saving result images: named by task, complete or not at all, resumed, never with the key."""

from __future__ import annotations

import base64
import errno
import gzip
import io
import json
import os
import random
import stat
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytest_httpx import HTTPXMock

from apimart_cli import downloads, images, integrity, provenance, safefiles
from apimart_cli.client import Client
from apimart_cli.downloads import Downloader, SavedFile, format_time
from apimart_cli.errors import ApimartError, ExitCode, ServiceError, TaskError, UsageError
from apimart_cli.sandbox.videos import mp4_video
from apimart_cli.tasks import ResultImage
from tests.helpers.images import png_of_size

KEY = "sk-live-SECRET0123456789abcdef"
TASK_ID = "task_01KPQ7J7DWB7QZ3WCEK3YVPBRA"
URL = "https://upload.apimart.ai/f/image/9f2c.png"
NOW = 1_776_748_726.0
EXPIRES = int(NOW) + 3600
ETAG = '"9f2c-v1"'
LAST_MODIFIED = "Tue, 21 Apr 2026 05:00:00 GMT"


PNG = png_of_size(5000)
BIG_PNG = png_of_size(600_000)  # more than two 256 KiB chunks
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 200


class Truncated(httpx.SyncByteStream):
    """A body that breaks off: `data`, then the connection drops."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


class Ends(httpx.SyncByteStream):
    """A body that simply ends after `data`: no error, no length to miss."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


@pytest.fixture
def delays() -> list[float]:
    return []


@pytest.fixture
def retries() -> list[str]:
    return []


@pytest.fixture
def client() -> Iterator[Client]:
    with Client("https://api.test", KEY) as api:
        yield api


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


def make_downloader(
    client: Client, out: Path, delays: list[float], retries: list[str], **options: object
) -> Downloader:
    downloader = Downloader(
        client,
        out,
        sleep=delays.append,
        on_retry=retries.append,
        now=lambda: NOW,
        **options,  # type: ignore[arg-type]
    )
    downloader.prepare()
    return downloader


@pytest.fixture
def downloader(client: Client, out: Path, delays: list[float], retries: list[str]) -> Downloader:
    return make_downloader(client, out, delays, retries)


@pytest.fixture
def forcing(client: Client, out: Path, delays: list[float], retries: list[str]) -> Downloader:
    """A downloader run with --force."""
    return make_downloader(client, out, delays, retries, force=True)


def image(url: str = URL, expires_at: int | None = EXPIRES) -> ResultImage:
    return ResultImage(url, expires_at)


def files(folder: Path) -> list[str]:
    """Every name in the folder, hidden ones (part files) included."""
    return sorted(path.name for path in folder.iterdir())


def remember_validator(out: Path, url: str = URL, etag: str = ETAG) -> None:
    """What a killed run leaves beside its part file: which file the host was sending."""
    (out / f".{TASK_ID}_0.validator").write_text(
        json.dumps({"url": url, "etag": etag, "last_modified": None})
    )


def add_rest(
    httpx_mock: HTTPXMock,
    body: bytes,
    start: int,
    *,
    if_range: str | None = None,
    etag: str | None = None,
    total: int | str | None = None,
    mime: str = "image/png",
) -> None:
    """The host's 206 to `Range: bytes=<start>-`: the rest of `body` (total "*": no length)."""
    match = {"Range": f"bytes={start}-"} | ({"If-Range": if_range} if if_range else {})
    headers = {
        "Content-Type": mime,
        "Content-Range": f"bytes {start}-{len(body) - 1}/{total or len(body)}",
    } | ({"ETag": etag} if etag else {})
    rest = body[start:]
    if total == "*":
        httpx_mock.add_response(
            url=URL, match_headers=match, status_code=206, headers=headers, stream=Ends(rest)
        )
    else:
        httpx_mock.add_response(
            url=URL, match_headers=match, status_code=206, headers=headers, content=rest
        )


def no_authorization(httpx_mock: HTTPXMock) -> None:
    for sent in httpx_mock.get_requests():
        assert "Authorization" not in sent.headers
        assert KEY not in str(sent.headers)


# --- saving ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "name"),
    [
        ("image/png", PNG, f"{TASK_ID}_0.png"),
        ("image/png; charset=binary", PNG, f"{TASK_ID}_0.png"),
        ("image/jpeg", JPEG, f"{TASK_ID}_0.jpg"),
        ("IMAGE/JPG", JPEG, f"{TASK_ID}_0.jpg"),
    ],
)
def test_saves_under_the_task_name_by_content_type(
    downloader: Downloader,
    out: Path,
    httpx_mock: HTTPXMock,
    content_type: str,
    body: bytes,
    name: str,
) -> None:
    httpx_mock.add_response(
        method="GET",
        url=URL,
        headers={"Content-Type": content_type, "Content-Length": str(len(body))},
        content=body,
    )
    saved = downloader.download(TASK_ID, 0, image())
    assert saved == SavedFile(out / name)
    assert saved.path.read_bytes() == body
    assert files(out) == [name]  # no part file left
    no_authorization(httpx_mock)
    (sent,) = httpx_mock.get_requests()
    assert "Range" not in sent.headers


def test_every_image_of_a_task_is_saved_under_its_index(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    second = "https://upload.apimart.ai/f/image/second.jpg"
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    httpx_mock.add_response(url=second, headers={"Content-Type": "image/jpeg"}, content=JPEG)
    images = (image(), image(second))
    saved = [downloader.download(TASK_ID, i, picture) for i, picture in enumerate(images)]
    assert [s.path.name for s in saved] == [f"{TASK_ID}_0.png", f"{TASK_ID}_1.jpg"]
    assert files(out) == [f"{TASK_ID}_0.png", f"{TASK_ID}_1.jpg"]
    no_authorization(httpx_mock)


def test_existing_file_is_kept_without_force(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    existing = out / f"{TASK_ID}_0.jpg"
    existing.write_bytes(b"the old image")
    saved = downloader.download(TASK_ID, 0, image())
    assert saved == SavedFile(existing, kept_existing=True)
    assert existing.read_bytes() == b"the old image"
    assert httpx_mock.get_requests() == []


def test_existing_file_is_replaced_with_force(
    forcing: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    existing = out / f"{TASK_ID}_0.png"
    existing.write_bytes(b"the old image")
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    saved = forcing.download(TASK_ID, 0, image())
    assert saved == SavedFile(existing)
    assert existing.read_bytes() == PNG
    assert files(out) == [existing.name]


# --- incomplete bodies: retried and resumed ---------------------------------------------


def test_short_body_is_retried_and_resumed_with_a_range(
    downloader: Downloader,
    out: Path,
    delays: list[float],
    retries: list[str],
    httpx_mock: HTTPXMock,
) -> None:
    httpx_mock.add_response(
        url=URL,
        headers={"Content-Type": "image/png", "Content-Length": str(len(PNG)), "ETag": ETAG},
        content=PNG[:1200],
    )
    add_rest(httpx_mock, PNG, 1200, if_range=ETAG, etag=ETAG)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert files(out) == [f"{TASK_ID}_0.png"]
    assert len(delays) == 1 and 0.25 <= delays[0] <= 0.5
    assert retries and "1200 of 5000 bytes" in retries[0]
    no_authorization(httpx_mock)


def test_dropped_connection_is_resumed(
    downloader: Downloader, out: Path, delays: list[float], httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=URL,
        headers={
            "Content-Type": "image/png",
            "Content-Length": str(len(BIG_PNG)),
            "Last-Modified": LAST_MODIFIED,
        },
        stream=Truncated(BIG_PNG[:300_000]),
    )
    written = 300_000  # every byte that arrived reached the part file
    add_rest(httpx_mock, BIG_PNG, written, if_range=LAST_MODIFIED)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == BIG_PNG
    assert files(out) == [f"{TASK_ID}_0.png"]
    assert len(delays) == 1


def test_part_file_of_a_killed_run_is_resumed(
    downloader: Downloader, out: Path, delays: list[float], httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(PNG[:3000])
    remember_validator(out)
    add_rest(httpx_mock, PNG, 3000, if_range=ETAG)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert files(out) == [f"{TASK_ID}_0.png"]
    assert delays == []


def test_full_reply_to_a_range_request_restarts_cleanly(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(b"stale bytes of another image" * 10)
    remember_validator(out)
    httpx_mock.add_response(
        url=URL,
        match_headers={"Range": "bytes=280-"},
        headers={"Content-Type": "image/png", "Content-Length": str(len(PNG))},
        content=PNG,
    )
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert files(out) == [f"{TASK_ID}_0.png"]


def test_416_to_a_range_request_starts_again(
    downloader: Downloader, out: Path, delays: list[float], httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(PNG + b"extra")
    remember_validator(out)
    httpx_mock.add_response(url=URL, match_headers={"Range": "bytes=5005-"}, status_code=416)
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert "Range" not in httpx_mock.get_requests()[1].headers
    assert len(delays) == 1


def test_range_reply_for_the_wrong_offset_is_refused(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(PNG[:3000])
    remember_validator(out)
    httpx_mock.add_response(
        url=URL,
        status_code=206,
        headers={"Content-Type": "image/png", "Content-Range": f"bytes 1000-4999/{len(PNG)}"},
        content=PNG[1000:],
    )
    with pytest.raises(ServiceError):
        downloader.download(TASK_ID, 0, image())
    assert files(out) == []


def test_a_range_reply_holding_the_whole_image_starts_again_with_it(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    # Asked for the rest, the host sent every byte (`bytes 0-4999/5000`): that is the image.
    (out / f".{TASK_ID}_0.part").write_bytes(PNG[:3000])
    remember_validator(out)
    httpx_mock.add_response(
        url=URL,
        status_code=206,
        headers={"Content-Type": "image/png", "Content-Range": f"bytes 0-4999/{len(PNG)}"},
        content=PNG,
    )
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert files(out) == [f"{TASK_ID}_0.png"]


def test_server_errors_are_retried_then_fail(
    downloader: Downloader,
    out: Path,
    delays: list[float],
    retries: list[str],
    httpx_mock: HTTPXMock,
) -> None:
    httpx_mock.add_response(url=URL, status_code=503, headers={"Retry-After": "3"})
    for _ in range(4):
        httpx_mock.add_response(url=URL, status_code=500)
    httpx_mock.add_response(
        url=URL,
        headers={"Content-Type": "image/png", "Content-Length": str(len(PNG))},
        content=PNG[:10],
    )
    with pytest.raises(ServiceError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.SERVICE
    assert caught.value.hint and "apimart download" in caught.value.hint
    assert len(httpx_mock.get_requests()) == 6
    assert delays[0] == 3.0  # Retry-After honoured
    assert len(delays) == len(retries) == 5
    assert files(out) == []  # no part file left after a failure


# --- replies that are not the image ---------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/html; charset=utf-8", b"<html><body>Access denied</body></html>"),
        ("text/html", PNG),
        ("application/json", b'{"error": "expired"}'),
        (None, PNG),
        ("image/png", b"<!DOCTYPE html><html><body>Not found</body></html>"),
        ("image/png", b"\x00" * 500),
        ("image/jpeg", PNG[:4] + b"\x00" * 100),
        ("image/png", b""),
    ],
)
def test_reply_that_is_not_an_image_is_refused(
    downloader: Downloader,
    out: Path,
    delays: list[float],
    httpx_mock: HTTPXMock,
    content_type: str | None,
    body: bytes,
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    httpx_mock.add_response(url=URL, headers=headers, content=body)
    with pytest.raises(ServiceError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.SERVICE == 5
    assert URL in caught.value.message
    assert files(out) == []
    assert delays == []


@pytest.mark.parametrize("status", [304, 400, 451])
def test_other_statuses_fail(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, status: int
) -> None:
    httpx_mock.add_response(url=URL, status_code=status)
    with pytest.raises(ServiceError):
        downloader.download(TASK_ID, 0, image())
    assert files(out) == []


# --- expiry -----------------------------------------------------------------------------


def test_expired_url_is_not_fetched(downloader: Downloader, httpx_mock: HTTPXMock) -> None:
    expired = int(NOW) - 60
    with pytest.raises(TaskError) as caught:
        downloader.download(TASK_ID, 0, image(expires_at=expired))
    assert caught.value.exit_code == ExitCode.FAILED == 1
    assert format_time(expired) == "2026-04-21 05:17:46 UTC"
    assert format_time(expired) in caught.value.message
    assert TASK_ID in caught.value.message
    assert httpx_mock.get_requests() == []


def test_expiring_exactly_now_is_expired(downloader: Downloader) -> None:
    with pytest.raises(TaskError):
        downloader.download(TASK_ID, 0, image(expires_at=int(NOW)))


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_after_expiry_says_when_it_expired(
    client: Client, out: Path, httpx_mock: HTTPXMock, status: int
) -> None:
    times = iter([NOW, NOW + 7200.0])  # the URL expires between the check and the reply
    downloader = Downloader(client, out, now=lambda: next(times), sleep=lambda s: None)
    downloader.prepare()
    httpx_mock.add_response(url=URL, status_code=status)
    with pytest.raises(TaskError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert format_time(EXPIRES) in caught.value.message
    assert caught.value.exit_code == ExitCode.FAILED
    assert files(out) == []


@pytest.mark.parametrize("status", [403, 404, 410])
def test_gone_before_expiry_is_a_task_error(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, status: int
) -> None:
    httpx_mock.add_response(url=URL, status_code=status)
    with pytest.raises(TaskError) as caught:
        downloader.download(TASK_ID, 0, image(expires_at=None))
    assert str(status) in caught.value.message
    assert files(out) == []


# --- data: URIs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mime", "body", "name"),
    [("image/png", PNG, f"{TASK_ID}_0.png"), ("image/jpeg", JPEG, f"{TASK_ID}_0.jpg")],
)
def test_data_uri_is_saved_without_http(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, mime: str, body: bytes, name: str
) -> None:
    uri = f"data:{mime};base64,{base64.b64encode(body).decode()}"
    saved = downloader.download(TASK_ID, 0, image(uri, expires_at=int(NOW) - 10))
    assert saved == SavedFile(out / name)
    assert saved.path.read_bytes() == body
    assert files(out) == [name]
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png;base64,not base64!",
        "data:text/plain;base64," + base64.b64encode(b"hello").decode(),
        "data:image/png," + PNG[:20].decode("latin-1"),
    ],
)
def test_bad_data_uri_is_refused(downloader: Downloader, out: Path, uri: str) -> None:
    with pytest.raises(ServiceError):
        downloader.download(TASK_ID, 0, image(uri))
    assert files(out) == []


# --- tasks --------------------------------------------------------------------------------


@pytest.mark.parametrize("task_id", ["../evil", "a/b", ".hidden"])
def test_a_name_never_leaves_the_folder(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, task_id: str
) -> None:
    with pytest.raises(UsageError):
        downloader.download(task_id, 0, image())
    assert files(out) == []
    assert httpx_mock.get_requests() == []


def test_prepare_creates_the_folder(client: Client, tmp_path: Path) -> None:
    folder = tmp_path / "a" / "b"
    Downloader(client, folder).prepare()
    assert folder.is_dir()


def test_prepare_refuses_a_file(client: Client, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UsageError) as caught:
        Downloader(client, blocker / "out").prepare()
    assert caught.value.exit_code == ExitCode.USAGE


def _hole(tmp_path: Path) -> Path:
    """A link to nothing."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere" / "x")
    return link


def _file(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("")
    return tmp_path / "file"


@pytest.mark.parametrize(
    ("blocker", "under", "said"),
    [
        (_file, False, "is a file"),
        (_file, True, "is a file"),
        (_hole, False, "is a link to nothing"),
        (_hole, True, "is a link to nothing"),
    ],
)
def test_prepare_names_what_is_in_the_way_of_the_folder(
    client: Client,
    tmp_path: Path,
    blocker: Callable[[Path], Path],
    under: bool,
    said: str,
) -> None:
    # Not "File exists" or "Not a directory": what is at which name, and nothing made.
    in_the_way = blocker(tmp_path)
    folder = in_the_way / "out" if under else in_the_way
    with pytest.raises(UsageError) as caught:
        Downloader(client, folder).prepare()
    assert caught.value.exit_code == ExitCode.USAGE
    assert f"{in_the_way} {said}" in caught.value.message
    assert not (tmp_path / "nowhere").exists()


HOSTILE_NAME = "e\x1b]0;title\x07\x1b[31mred\x9b2J\nsecond line\r"


def _no_controls(text: str) -> None:
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text), repr(text)


def test_a_folder_name_with_escapes_reaches_no_message_raw(client: Client, tmp_path: Path) -> None:
    # An output folder from a script or a file name can hold anything a name can:
    # a message about it must not drive the terminal or forge a line of its own.
    (tmp_path / HOSTILE_NAME).write_text("")
    with pytest.raises(UsageError) as caught:
        Downloader(client, tmp_path / HOSTILE_NAME).prepare()
    _no_controls(caught.value.message)
    assert "second line" in caught.value.message


def test_an_image_name_in_a_hostile_folder_reaches_no_message_raw(
    client: Client, tmp_path: Path, delays: list[float], retries: list[str]
) -> None:
    out = tmp_path / HOSTILE_NAME
    downloader = make_downloader(client, out, delays, retries)
    (out / f"{TASK_ID}_0.png").mkdir()
    (out / f".{TASK_ID}_1.part").mkdir()
    for index in (0, 1):
        with pytest.raises(UsageError) as caught:
            downloader.download(TASK_ID, index, image())
        _no_controls(caught.value.message)


def test_a_disk_error_in_a_hostile_folder_reaches_no_message_raw(
    client: Client,
    tmp_path: Path,
    delays: list[float],
    retries: list[str],
    httpx_mock: HTTPXMock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / HOSTILE_NAME
    downloader = make_downloader(client, out, delays, retries)

    def full(*args: object, **kwargs: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "x"))

    monkeypatch.setattr(safefiles, "open_no_follow", full)
    with pytest.raises(ApimartError) as caught:
        downloader.download(TASK_ID, 0, image())
    _no_controls(caught.value.message)
    assert "No space left on device" in caught.value.message


# --- two runs into one folder ----------------------------------------------------------


def _other_run_while_locking(
    monkeypatch: pytest.MonkeyPatch, part: Path, action: Callable[[Path], None]
) -> None:
    """Make the first lock wait for another run that then does `action` to the part file."""
    real_lock = safefiles.lock
    calls: list[None] = []

    def lock(fd: int, *, wait: bool = True) -> bool:
        if not calls:
            calls.append(None)
            action(part)
        return real_lock(fd, wait=wait)

    monkeypatch.setattr(safefiles, "lock", lock)


def test_image_finished_by_another_run_while_waiting_for_the_lock(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = out / f"{TASK_ID}_0.png"

    def finish(part: Path) -> None:  # the other run completes and renames its part file
        part.write_bytes(PNG)
        part.replace(target)

    _other_run_while_locking(monkeypatch, out / f".{TASK_ID}_0.part", finish)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved == SavedFile(target, kept_existing=True)
    assert target.read_bytes() == PNG  # never truncated or rewritten in place
    assert files(out) == [target.name]
    assert httpx_mock.get_requests() == []


def test_part_removed_by_another_run_while_waiting_for_the_lock(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(part: Path) -> None:  # the other run gives up and removes its part file
        part.write_bytes(PNG[:100])
        part.unlink()

    _other_run_while_locking(monkeypatch, out / f".{TASK_ID}_0.part", fail)
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved == SavedFile(out / f"{TASK_ID}_0.png")
    assert saved.path.read_bytes() == PNG
    assert files(out) == [saved.path.name]


# --- names, whatever the URL or id ----------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://upload.apimart.ai/f/image/..%2F..%2Fx.png",
        "https://upload.apimart.ai/f/image/../../../etc/x.png",
        "https://upload.apimart.ai/f/%2e%2e/%2e%2e/x.png?name=../../y.png",
    ],
)
def test_a_hostile_url_name_is_never_used(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, url: str
) -> None:
    httpx_mock.add_response(url=url, content=PNG, headers={"Content-Type": "image/png"})
    saved = downloader.download(TASK_ID, 0, image(url))
    assert saved.path == out / f"{TASK_ID}_0.png"
    assert files(out) == [f"{TASK_ID}_0.png"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


_TASK_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./ %"


@given(
    task_id=st.text(alphabet=_TASK_ID_CHARS, min_size=0, max_size=40),
    index=st.integers(min_value=0, max_value=20),
)
@settings(max_examples=200, deadline=None)
def test_every_name_is_a_plain_file_in_the_folder(task_id: str, index: int) -> None:
    folder = Path("/srv/out")
    try:
        stem = downloads.image_stem(task_id, index)
    except UsageError:
        return
    for extension in (".png", ".jpg", ".webp", ".gif", ".part"):
        target = folder / f"{stem}{extension}"
        assert target.parent == folder
        assert "/" not in stem and ".." not in stem and not stem.startswith(".")


def test_a_folder_in_the_way_of_the_part_file_is_an_error_not_a_crash(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").mkdir()
    with pytest.raises(UsageError) as caught:  # a local problem: nothing to do with the service
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.USAGE
    assert f".{TASK_ID}_0.part" in caught.value.message
    assert httpx_mock.get_requests() == []


def test_retry_after_zero_means_at_once(
    downloader: Downloader, delays: list[float], httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=URL, status_code=503, headers={"Retry-After": "0"})
    httpx_mock.add_response(url=URL, content=PNG, headers={"Content-Type": "image/png"})
    downloader.download(TASK_ID, 0, image())
    assert delays == [0.0]


# --- whole images, by their own structure ----------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def wholepng_of_size(width: int = 40, height: int = 30, seed: int = 1) -> bytes:
    """A real PNG: signature, IHDR, IDAT (noise, so that it is not tiny), IEND."""
    rows = random.Random(seed).randbytes(height * (1 + width * 3))
    rows = b"".join(
        b"\x00" + rows[i + 1 : i + 1 + width * 3] for i in range(0, len(rows), 1 + width * 3)
    )
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(rows, 0))
        + _chunk(b"IEND", b"")
    )


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def whole_jpeg(seed: int = 1, thumbnail: bytes = b"") -> bytes:
    """A JPEG's structure: SOI, APP0, APP1 (a thumbnail: SOI..EOI), SOF0, SOS, data, EOI."""
    scan = random.Random(seed).randbytes(3000)
    stuffed = (
        scan.replace(b"\xff", b"\xff\x00") + b"\xff\xd3" + scan[:100].replace(b"\xff", b"\xff\x00")
    )
    return (
        b"\xff\xd8"
        + _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
        + _segment(0xE1, b"Exif\x00\x00" + thumbnail)
        + _segment(0xC0, b"\x08\x00\x10\x00\x10\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01")
        + _segment(0xDA, b"\x03\x01\x00\x02\x11\x03\x11\x00\x3f\x00")
        + stuffed
        + b"\xff\xd9"
    )


def whole_webp(seed: int = 1) -> bytes:
    payload = b"\x2f" + random.Random(seed).randbytes(2001)  # VP8L, padded to an even length
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def whole_gif(seed: int = 1) -> bytes:
    rng = random.Random(seed)
    blocks = b"".join(bytes([255]) + rng.randbytes(255) for _ in range(4)) + b"\x00"
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", 16, 16, 0x80, 0, 0)  # a global colour table of 2 entries
        + b"\x00\x00\x00\xff\xff\xff"
        + b"\x21\xf9\x04\x01\x00\x00\x00\x00"  # a graphic control extension
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 16, 16, 0)
        + b"\x02"
        + blocks
        + b"\x3b"
    )


WHOLE = {
    "image/png": wholepng_of_size(),
    "image/jpeg": whole_jpeg(thumbnail=whole_jpeg(seed=2)),
    "image/webp": whole_webp(),
    "image/gif": whole_gif(),
}


@pytest.mark.parametrize("mime", sorted(WHOLE))
def test_a_whole_image_is_whole(mime: str) -> None:
    assert integrity.flaw(WHOLE[mime], to_the_end=True) is None
    assert integrity.flaw(WHOLE[mime], to_the_end=False) is None


@pytest.mark.parametrize("mime", sorted(WHOLE))
@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_every_cut_of_an_image_is_short(mime: str, data: st.DataObject) -> None:
    whole = WHOLE[mime]
    cut = data.draw(st.integers(min_value=16, max_value=len(whole) - 1))
    found = integrity.flaw(whole[:cut], to_the_end=True)
    assert found is not None and found.short, (cut, found)


def test_a_cut_right_after_a_jpeg_thumbnail_is_short() -> None:
    jpeg = WHOLE["image/jpeg"]
    thumbnail_end = jpeg.index(b"\xff\xd9") + 2  # the embedded thumbnail's end-of-image
    found = integrity.flaw(jpeg[:thumbnail_end], to_the_end=True)
    assert found is not None and found.short


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n" + random.Random(3).randbytes(2000), "IHDR"),
        (PNG[:29] + bytes([PNG[29] ^ 1]) + PNG[30:], "CRC"),  # IHDR's CRC no longer matches
        (wholepng_of_size()[:60] + b"\x00" * 8 + wholepng_of_size()[68:], "CRC"),  # damage in IDAT
    ],
)
def test_broken_png_structure_is_found(body: bytes, reason: str) -> None:
    found = integrity.flaw(body, to_the_end=True)
    assert found is not None and not found.short and reason in found.reason


@pytest.mark.parametrize("mime", sorted(WHOLE))
def test_an_image_cut_short_without_a_length_is_resumed_to_its_end(
    downloader: Downloader,
    out: Path,
    retries: list[str],
    httpx_mock: HTTPXMock,
    mime: str,
) -> None:
    whole, cut = WHOLE[mime], len(WHOLE[mime]) // 2
    httpx_mock.add_response(
        url=URL, headers={"Content-Type": mime, "ETag": ETAG}, stream=Ends(whole[:cut])
    )
    add_rest(httpx_mock, whole, cut, if_range=ETAG, etag=ETAG, total="*", mime=mime)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == whole
    assert files(out) == [saved.path.name]
    assert retries and "cut short" in retries[0]


def test_an_image_always_cut_short_without_a_length_is_never_saved(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    whole = WHOLE["image/png"]
    httpx_mock.add_response(
        url=URL, headers={"Content-Type": "image/png"}, stream=Ends(whole[:940]), is_reusable=True
    )
    with pytest.raises(ServiceError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.SERVICE
    assert "cut short" in caught.value.message
    assert files(out) == []
    # No validator from the host: nothing to check a resume against, so each try starts over.
    assert all("Range" not in sent.headers for sent in httpx_mock.get_requests())


# --- gzip -------------------------------------------------------------------------------


def test_a_gzip_encoded_image_is_decoded_and_saved(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    whole = WHOLE["image/png"]
    encoded = gzip.compress(whole)
    httpx_mock.add_response(
        url=URL,
        headers={
            "Content-Type": "image/png",
            "Content-Encoding": "gzip",
            "Content-Length": str(len(encoded)),
        },
        stream=Ends(encoded),
    )
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == whole
    (sent,) = httpx_mock.get_requests()
    assert sent.headers["Accept-Encoding"] == "identity"


def test_a_gzip_encoded_image_cut_short_starts_again_without_a_range(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    whole = WHOLE["image/png"]
    encoded = gzip.compress(whole)
    headers = {"Content-Type": "image/png", "Content-Encoding": "gzip", "ETag": ETAG}
    httpx_mock.add_response(url=URL, headers=headers, stream=Ends(encoded[: len(encoded) // 2]))
    httpx_mock.add_response(url=URL, headers=headers, stream=Ends(encoded))
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == whole
    # Ranges count encoded bytes, the part file holds decoded ones: no resume.
    assert "Range" not in httpx_mock.get_requests()[1].headers


# --- resuming only the same file ----------------------------------------------------------


OLD_IMAGE, NEW_IMAGE = wholepng_of_size(320, 320, seed=1), wholepng_of_size(320, 320, seed=2)
CHUNK = 256 * 1024  # what a dropped connection leaves in the part file


def changing_host(request: httpx.Request) -> httpx.Response:
    """A host now serving NEW_IMAGE (ETag v2) that honours If-Range, as HTTP says."""
    headers = {"Content-Type": "image/png", "ETag": '"v2"'}
    wanted = request.headers.get("Range")
    if wanted and request.headers.get("If-Range") in (None, '"v2"'):
        start = int(wanted.removeprefix("bytes=").rstrip("-"))
        headers["Content-Range"] = f"bytes {start}-{len(NEW_IMAGE) - 1}/{len(NEW_IMAGE)}"
        return httpx.Response(206, headers=headers, content=NEW_IMAGE[start:])
    return httpx.Response(200, headers=headers, content=NEW_IMAGE)


def test_a_resume_never_stitches_another_image_onto_the_part(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(OLD_IMAGE[:1000])
    remember_validator(out, etag='"v1"')
    httpx_mock.add_callback(changing_host, url=URL)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == NEW_IMAGE
    (sent,) = httpx_mock.get_requests()
    assert sent.headers["If-Range"] == '"v1"'
    assert files(out) == [saved.path.name]  # the validator went with the part file


@pytest.mark.parametrize(
    "validator",
    [None, "not json", json.dumps({"url": "https://elsewhere.test/x.png", "etag": ETAG})],
)
def test_a_part_file_of_unknown_origin_is_not_resumed(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, validator: str | None
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(OLD_IMAGE[:1000])
    if validator is not None:
        (out / f".{TASK_ID}_0.validator").write_text(validator)
    httpx_mock.add_callback(changing_host, url=URL)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == NEW_IMAGE
    (sent,) = httpx_mock.get_requests()
    assert "Range" not in sent.headers
    assert files(out) == [saved.path.name]


@pytest.mark.parametrize(
    ("etag", "total"),
    [
        ('"v2"', None),  # it says which version it sends: another one
        (None, "*"),  # it names no version and no length: the PNG's CRCs catch the seam
    ],
)
def test_a_host_that_ignores_if_range_is_caught_and_restarted(
    downloader: Downloader,
    out: Path,
    retries: list[str],
    httpx_mock: HTTPXMock,
    etag: str | None,
    total: str | None,
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(OLD_IMAGE[:1000])
    remember_validator(out, etag='"v1"')
    add_rest(httpx_mock, NEW_IMAGE, 1000, etag=etag, total=total)
    httpx_mock.add_callback(changing_host, url=URL)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == NEW_IMAGE
    assert "Range" not in httpx_mock.get_requests()[1].headers
    assert retries and "starting again" in retries[0]


# --- PNG signature, then garbage ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"\x89PNG\r\n\x1a\n" + random.Random(5).randbytes(1872),  # what a broken host sent
        PNG[:29] + bytes([PNG[29] ^ 1]) + PNG[30:],  # IHDR fails its CRC
        PNG[:20],  # shorter than a PNG's header
    ],
)
def test_a_png_signature_followed_by_garbage_is_not_saved(
    downloader: Downloader, out: Path, delays: list[float], httpx_mock: HTTPXMock, body: bytes
) -> None:
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=body)
    with pytest.raises(ServiceError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.SERVICE
    assert "broken image" in caught.value.message and URL in caught.value.message
    assert files(out) == []
    assert delays == []


# --- nothing written through what is planted in the folder --------------------------------


def plain_png_reply(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)


@pytest.mark.parametrize("name", [f".{TASK_ID}_0.part", f".{TASK_ID}_0.validator"])
def test_a_link_planted_at_a_working_file_is_never_followed(
    downloader: Downloader, out: Path, victim: Path, httpx_mock: HTTPXMock, name: str
) -> None:
    (out / name).symlink_to(victim)
    httpx_mock.add_response(
        url=URL, headers={"Content-Type": "image/png", "ETag": ETAG}, content=PNG
    )
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert victim.read_bytes() == b"precious"
    assert files(out) == [saved.path.name]  # the link removed, not used


def test_a_dangling_link_at_the_part_file_creates_nothing_elsewhere(
    downloader: Downloader, out: Path, tmp_path: Path, httpx_mock: HTTPXMock
) -> None:
    target = tmp_path / "elsewhere.png"
    (out / f".{TASK_ID}_0.part").symlink_to(target)
    plain_png_reply(httpx_mock)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert not target.exists()


def test_a_link_at_the_part_file_of_a_data_uri_is_never_followed(
    downloader: Downloader, out: Path, victim: Path
) -> None:
    (out / f".{TASK_ID}_0.part").symlink_to(victim)
    uri = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
    saved = downloader.download(TASK_ID, 0, image(uri))
    assert saved.path.read_bytes() == PNG
    assert victim.read_bytes() == b"precious"
    assert files(out) == [saved.path.name]


def test_a_hard_link_at_the_part_file_is_not_written_into(
    downloader: Downloader, out: Path, victim: Path, httpx_mock: HTTPXMock
) -> None:
    os.link(victim, out / f".{TASK_ID}_0.part")
    plain_png_reply(httpx_mock)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("planted", ["part", "validator"])
def test_a_file_of_another_user_at_a_working_name_is_replaced_not_a_failure(
    downloader: Downloader,
    out: Path,
    httpx_mock: HTTPXMock,
    monkeypatch: pytest.MonkeyPatch,
    planted: str,
) -> None:
    # Another user's file, which this one may not open (EACCES; the tests may run as
    # root, who may open anything, so the refusal is made here), is no file of ours:
    # removed like a planted link, and the download goes on.
    theirs = out / f".{TASK_ID}_0.{planted}"
    theirs.write_bytes(b"theirs")
    real_open = safefiles.open_no_follow

    def open_no_follow(path: Path, flags: int, mode: int = safefiles.PRIVATE) -> int:
        try:
            foreign = Path(path).read_bytes() == b"theirs"
        except OSError:
            foreign = False
        if foreign:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(safefiles, "open_no_follow", open_no_follow)
    if planted == "validator":  # beside a part file a killed run left
        (out / f".{TASK_ID}_0.part").write_bytes(PNG[:100])
    plain_png_reply(httpx_mock)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert files(out) == [saved.path.name]


def test_a_fifo_at_the_part_file_is_removed_not_read(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    os.mkfifo(out / f".{TASK_ID}_0.part")  # opening it to read or append would block forever
    plain_png_reply(httpx_mock)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert files(out) == [saved.path.name]


def test_a_new_image_is_not_private_but_made_as_the_umask_says(
    downloader: Downloader, httpx_mock: HTTPXMock
) -> None:
    plain_png_reply(httpx_mock)
    old = os.umask(0o027)
    safefiles.umask.cache_clear()
    try:
        saved = downloader.download(TASK_ID, 0, image())
    finally:
        os.umask(old)
        safefiles.umask.cache_clear()
    assert saved.path.stat().st_mode & 0o777 == 0o640


def test_a_dangling_link_at_the_final_name_is_kept_without_force(
    downloader: Downloader, out: Path, tmp_path: Path, httpx_mock: HTTPXMock
) -> None:
    final = out / f"{TASK_ID}_0.png"
    final.symlink_to(tmp_path / "nowhere.png")
    saved = downloader.download(TASK_ID, 0, image())
    assert saved == SavedFile(final, kept_existing=True)
    assert final.is_symlink() and not (tmp_path / "nowhere.png").exists()
    assert httpx_mock.get_requests() == []


def test_a_link_at_the_final_name_is_replaced_with_force_never_written_through(
    forcing: Downloader, out: Path, victim: Path, httpx_mock: HTTPXMock
) -> None:
    final = out / f"{TASK_ID}_0.png"
    final.symlink_to(victim)
    plain_png_reply(httpx_mock)
    saved = forcing.download(TASK_ID, 0, image())
    assert saved == SavedFile(final)
    assert not final.is_symlink() and final.read_bytes() == PNG
    assert victim.read_bytes() == b"precious"


def test_a_file_that_appears_at_the_final_name_meanwhile_is_kept_without_force(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    final = out / f"{TASK_ID}_0.png"

    def reply_after_another_program_saved_one(request: httpx.Request) -> httpx.Response:
        final.write_bytes(b"saved meanwhile")
        return httpx.Response(200, headers={"Content-Type": "image/png"}, content=PNG)

    httpx_mock.add_callback(reply_after_another_program_saved_one, url=URL)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved == SavedFile(final, kept_existing=True)
    assert final.read_bytes() == b"saved meanwhile"
    assert files(out) == [final.name]


# --- a folder where the image goes --------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_folder_at_the_image_name_is_an_error_naming_it(
    client: Client,
    out: Path,
    delays: list[float],
    retries: list[str],
    httpx_mock: HTTPXMock,
    force: bool,
) -> None:
    downloader = make_downloader(client, out, delays, retries, force=force)
    (out / f"{TASK_ID}_0.png").mkdir()
    with pytest.raises(UsageError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.USAGE
    assert str(out / f"{TASK_ID}_0.png") in caught.value.message
    assert httpx_mock.get_requests() == []


# --- interrupted: the part file stays for the next run ------------------------------------


class Interrupted(httpx.SyncByteStream):
    """Ctrl-C or SIGTERM (raised as KeyboardInterrupt) after `data` arrived."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise KeyboardInterrupt


def test_an_interrupted_download_leaves_its_part_file_to_resume(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=URL,
        headers={"Content-Type": "image/png", "ETag": ETAG, "Content-Length": str(len(BIG_PNG))},
        stream=Interrupted(BIG_PNG[:300_000]),
    )
    with pytest.raises(KeyboardInterrupt):
        downloader.download(TASK_ID, 0, image())
    assert files(out) == [f".{TASK_ID}_0.part", f".{TASK_ID}_0.validator"]
    written = (out / f".{TASK_ID}_0.part").stat().st_size
    assert 0 < written < len(BIG_PNG)

    add_rest(httpx_mock, BIG_PNG, written, if_range=ETAG)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == BIG_PNG
    assert files(out) == [saved.path.name]


# --- a step before the final name -----------------------------------------------------


def test_finish_rewrites_the_checked_file_before_it_takes_its_name(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    whole = WHOLE["image/png"]
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=whole)
    seen: list[tuple[str, bytes, bool]] = []
    note = _chunk(b"tEXt", b"Comment\x00made here")

    def insert_a_chunk(path: Path) -> None:
        data = path.read_bytes()
        seen.append((path.name, data, (out / f"{TASK_ID}_0.png").exists()))
        path.write_bytes(data[:33] + note + data[33:])

    saved = downloader.download(TASK_ID, 0, image(), finish=insert_a_chunk)
    assert seen == [(f".{TASK_ID}_0.part", whole, False)]  # the whole image, not yet in place
    assert saved.path.read_bytes() == whole[:33] + note + whole[33:]
    assert files(out) == [saved.path.name]


@pytest.mark.parametrize("finish", ["none", "in place", "replaced"])
def test_the_saved_image_is_synced_once_whoever_wrote_it_last(
    downloader: Downloader,
    out: Path,
    httpx_mock: HTTPXMock,
    monkeypatch: pytest.MonkeyPatch,
    finish: str,
) -> None:
    """On disk before it takes its name, and not twice: where the step before the name
    replaces the file (the provenance chunk), its replacement is synced, not the part."""
    from apimart_cli.provenance import embed_file

    whole = WHOLE["image/png"]
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=whole)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    parts: list[int] = []

    def replace(path: Path) -> None:
        parts.append(path.stat().st_ino)
        embed_file(path, {"prompt": "a fox"})

    steps = {
        "none": None,
        "in place": lambda path: path.write_bytes(path.read_bytes()),
        "replaced": replace,
    }
    saved = downloader.download(TASK_ID, 0, image(), finish=steps[finish])
    assert synced.count(saved.path.stat().st_ino) == 1
    if finish == "replaced":
        [part] = parts
        assert part != saved.path.stat().st_ino and part not in synced  # a wasted sync


def test_a_failing_finish_saves_nothing(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    plain_png_reply(httpx_mock)

    def fail(path: Path) -> None:
        raise ValueError("cannot add provenance")

    with pytest.raises(ValueError):
        downloader.download(TASK_ID, 0, image(), finish=fail)
    assert files(out) == []


def test_finish_is_not_run_on_a_kept_file(downloader: Downloader, out: Path) -> None:
    (out / f"{TASK_ID}_0.png").write_bytes(PNG)
    ran: list[Path] = []
    downloader.download(TASK_ID, 0, image(), finish=ran.append)
    assert ran == []


# --- a full disk ---------------------------------------------------------------------------


def test_too_many_open_files_says_to_raise_the_limit_not_to_free_space(
    downloader: Downloader, out: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hint was to check the folder's permissions and free space.
    def no_more(path: Path, *args: object, **kwargs: object) -> int:
        raise OSError(errno.EMFILE, "Too many open files", str(path))

    monkeypatch.setattr(safefiles, "open_no_follow", no_more)
    with pytest.raises(ApimartError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert "Too many open files" in caught.value.message
    assert caught.value.hint == "Raise the limit on open files (ulimit -n), then download again."
    assert files(out) == []


def test_a_full_disk_mid_download_leaves_nothing_behind(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdopen = os.fdopen

    class FullDisk(io.BufferedRandom):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            raise OSError(errno.ENOSPC, "No space left on device")

    def fdopen(fd: int, mode: str = "r", *args: object, **kwargs: object) -> IO[bytes]:
        if mode == "r+b":
            return FullDisk(io.FileIO(fd, "r+"))
        return real_fdopen(fd, mode, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(os, "fdopen", fdopen)
    plain_png_reply(httpx_mock)
    with pytest.raises(ApimartError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert "No space left on device" in caught.value.message
    assert caught.value.hint and "free space" in caught.value.hint
    assert files(out) == []


def test_a_host_without_validators_is_resumed_only_into_the_same_image(
    downloader: Downloader, out: Path, retries: list[str], httpx_mock: HTTPXMock
) -> None:
    """No ETag, no Last-Modified: the length must match, and the PNG's CRCs catch a seam."""
    assert len(OLD_IMAGE) == len(NEW_IMAGE)
    length = {"Content-Type": "image/png", "Content-Length": str(len(NEW_IMAGE))}
    httpx_mock.add_response(url=URL, headers=length, stream=Truncated(OLD_IMAGE[:CHUNK]))
    add_rest(httpx_mock, NEW_IMAGE, CHUNK)  # meanwhile: another image of the same length
    httpx_mock.add_response(url=URL, headers=length, content=NEW_IMAGE)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == NEW_IMAGE
    assert "If-Range" not in httpx_mock.get_requests()[1].headers
    assert "Range" not in httpx_mock.get_requests()[2].headers
    assert any("broken" in line for line in retries)


def test_a_host_without_validators_is_resumed_when_the_length_matches(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    length = {"Content-Type": "image/png", "Content-Length": str(len(NEW_IMAGE))}
    httpx_mock.add_response(url=URL, headers=length, stream=Truncated(NEW_IMAGE[:CHUNK]))
    add_rest(httpx_mock, NEW_IMAGE, CHUNK)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == NEW_IMAGE
    assert len(httpx_mock.get_requests()) == 2


def test_a_206_of_another_length_starts_again(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    length = {"Content-Type": "image/png", "Content-Length": str(len(NEW_IMAGE))}
    httpx_mock.add_response(url=URL, headers=length, stream=Truncated(NEW_IMAGE[:CHUNK]))
    add_rest(httpx_mock, NEW_IMAGE[: CHUNK + 1000], CHUNK)  # a shorter file now
    httpx_mock.add_response(url=URL, headers=length, content=NEW_IMAGE)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == NEW_IMAGE
    assert "Range" not in httpx_mock.get_requests()[2].headers


def test_a_folder_at_the_validator_name_is_an_error_naming_it(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(PNG[:1000])
    (out / f".{TASK_ID}_0.validator").mkdir()
    with pytest.raises(UsageError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.USAGE
    assert f".{TASK_ID}_0.validator is a folder" in caught.value.message
    assert httpx_mock.get_requests() == []


# --- videos: whole by their own structure, resumed -----------------------------------

VIDEO = mp4_video(64, 64, 2, "waves at dusk")


def video(url: str = URL) -> ResultImage:
    return ResultImage(url, None, "video")


@pytest.mark.parametrize("content_type", ["video/mp4", "application/octet-stream"])
def test_a_video_is_saved_under_the_extension_its_bytes_say(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, content_type: str
) -> None:
    httpx_mock.add_response(url=URL, headers={"Content-Type": content_type}, content=VIDEO)
    saved = downloader.download(TASK_ID, 0, video())
    assert saved == SavedFile(out / f"{TASK_ID}_0.mp4")
    assert saved.path.read_bytes() == VIDEO
    assert files(out) == [saved.path.name]
    no_authorization(httpx_mock)


def test_a_video_cut_short_under_a_length_that_claims_it_whole_is_resumed(
    downloader: Downloader, out: Path, retries: list[str], httpx_mock: HTTPXMock
) -> None:
    # The host announces the short length and sends it all: only the boxes can tell.
    cut = len(VIDEO) // 2
    httpx_mock.add_response(
        url=URL,
        headers={"Content-Type": "video/mp4", "Content-Length": str(cut), "ETag": ETAG},
        content=VIDEO[:cut],
    )
    add_rest(httpx_mock, VIDEO, cut, if_range=ETAG, etag=ETAG, mime="video/mp4")
    saved = downloader.download(TASK_ID, 0, video())
    assert saved.path.read_bytes() == VIDEO
    assert files(out) == [f"{TASK_ID}_0.mp4"]
    assert retries and "cut short" in retries[0] and "mdat" in retries[0]


def test_a_video_always_cut_short_is_never_saved(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    cut = VIDEO[: len(VIDEO) - 10]
    httpx_mock.add_response(
        url=URL, headers={"Content-Type": "video/mp4"}, content=cut, is_reusable=True
    )
    with pytest.raises(ServiceError):
        downloader.download(TASK_ID, 0, video())
    assert not any(name.endswith(".mp4") for name in files(out))


def test_a_page_where_a_video_should_be_is_refused(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=URL, headers={"Content-Type": "text/html"}, content=b"<html>")
    with pytest.raises(ServiceError, match="The video host sent text/html, not a video"):
        downloader.download(TASK_ID, 0, video())
    httpx_mock.add_response(url=URL, headers={"Content-Type": "video/mp4"}, content=b"<html>" * 100)
    with pytest.raises(ServiceError, match="not an image or a video"):
        downloader.download(TASK_ID, 0, video())
    assert files(out) == []


def test_a_saved_video_is_found_again_and_kept(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    (out / f"{TASK_ID}_0.mp4").write_bytes(VIDEO)
    saved = downloader.download(TASK_ID, 0, video())
    assert saved.kept_existing
    assert httpx_mock.get_requests() == []


def test_a_video_listed_among_images_is_saved_as_the_video_it_is(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    # A model with no schema may list its video under `images`: its bytes decide.
    httpx_mock.add_response(url=URL, headers={"Content-Type": "video/mp4"}, content=VIDEO)
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.name == f"{TASK_ID}_0.mp4" and saved.path.read_bytes() == VIDEO


# --- the provenance chunk, put in as the bytes stream past IHDR ------------------------

NOTE = provenance.itxt_chunk({"prompt": "a fox"})


def stamped(png: bytes) -> bytes:
    return png[: images.IHDR_END] + NOTE + png[images.IHDR_END :]


def stamp() -> downloads.Stamp:
    return downloads.Stamp(lambda: NOTE)


class Watched(httpx.SyncByteStream):
    """A body in pieces; before each, `look()` checks the folder as it is."""

    def __init__(self, data: bytes, look: Callable[[], None], piece: int = 64 * 1024) -> None:
        self.data, self.look, self.piece = data, look, piece

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.data), self.piece):
            self.look()
            yield self.data[start : start + self.piece]


def test_a_stamped_png_is_written_once_and_named_only_whole_and_stamped(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    final = out / f"{TASK_ID}_0.png"
    part = out / f".{TASK_ID}_0.part"
    parts: set[int] = set()

    def look() -> None:
        assert not final.exists()  # never a half-written or unstamped image under its name
        assert set(files(out)) <= {part.name, f".{TASK_ID}_0.validator"}  # no second copy
        if part.exists():
            parts.add(part.stat().st_ino)

    body = BIG_PNG
    httpx_mock.add_response(
        url=URL,
        headers={"Content-Type": "image/png", "Content-Length": str(len(body)), "ETag": ETAG},
        stream=Watched(body, look),
    )
    saved = downloader.download(TASK_ID, 0, image(), finish=stamp())
    assert saved.path == final
    assert final.read_bytes() == stamped(body)
    assert provenance.read_file(final) == {"prompt": "a fox"}
    assert parts == {final.stat().st_ino}  # the part file itself took the name
    assert files(out) == [final.name]


def test_a_stamped_download_is_synced_once(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    saved = downloader.download(TASK_ID, 0, image(), finish=stamp())
    assert synced.count(saved.path.stat().st_ino) == 1  # the rest: the validator beside it
    assert saved.path.read_bytes() == stamped(PNG)


def test_a_stamped_download_killed_halfway_resumes_at_the_hosts_offset(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=URL,
        headers={"Content-Type": "image/png", "ETag": ETAG, "Content-Length": str(len(BIG_PNG))},
        stream=Interrupted(BIG_PNG[:300_000]),
    )
    with pytest.raises(KeyboardInterrupt):
        downloader.download(TASK_ID, 0, image(), finish=stamp())
    part = out / f".{TASK_ID}_0.part"
    assert part.read_bytes() == stamped(BIG_PNG[:300_000])  # the chunk is in already
    assert not (out / f"{TASK_ID}_0.png").exists()

    # The host is asked for the rest from its own offset, not the part file's size.
    add_rest(httpx_mock, BIG_PNG, 300_000, if_range=ETAG)
    saved = downloader.download(TASK_ID, 0, image(), finish=stamp())
    assert saved.path.read_bytes() == stamped(BIG_PNG)
    assert files(out) == [saved.path.name]


def test_a_kill_before_the_head_passed_starts_again_and_still_stamps(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    # Which file the part is of is written once, with the chunk it holds (one write, no
    # sync, per download): before the head has passed, there is nothing to resume by.
    httpx_mock.add_response(
        url=URL,
        headers={"Content-Type": "image/png", "ETag": ETAG, "Content-Length": str(len(PNG))},
        stream=Interrupted(PNG[:20]),
    )
    with pytest.raises(KeyboardInterrupt):
        downloader.download(TASK_ID, 0, image(), finish=stamp())
    assert not (out / f".{TASK_ID}_0.validator").exists()
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    saved = downloader.download(TASK_ID, 0, image(), finish=stamp())
    assert "Range" not in httpx_mock.get_requests()[-1].headers
    assert saved.path.read_bytes() == stamped(PNG)


def test_a_download_writes_which_file_it_is_once_and_syncs_the_image_then_its_name(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The validator is a hint for a resume: written atomically, never synced. The image
    # is synced before it takes its name, and its name with the folder once it has it.
    # It cost five syncs and two validators a file, and the name was never synced.
    synced: list[bool] = []  # each sync: of a folder?
    real_fsync = os.fsync

    def recording(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    written: list[Path] = []
    real_write_atomic = safefiles.write_atomic
    monkeypatch.setattr(
        safefiles,
        "write_atomic",
        lambda path, *args, **kwargs: (
            written.append(path) or real_write_atomic(path, *args, **kwargs)
        ),
    )
    headers = {"Content-Type": "image/png", "ETag": ETAG, "Content-Length": str(len(PNG))}
    httpx_mock.add_response(url=URL, headers=headers, content=PNG)

    saved = downloader.download(TASK_ID, 0, image(), finish=stamp())

    assert saved.path.read_bytes() == stamped(PNG)
    assert written == [out / f".{TASK_ID}_0.validator"]
    assert synced == [False, True]  # the image, then its folder


def test_a_part_killed_inside_its_chunk_starts_again(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    # The validator says a chunk went in, but the kill came before all of it was written.
    head = PNG[: images.IHDR_END]
    (out / f".{TASK_ID}_0.part").write_bytes(head + NOTE[:10])
    (out / f".{TASK_ID}_0.validator").write_text(
        json.dumps({"url": URL, "etag": ETAG, "inserted": len(NOTE)})
    )
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    saved = downloader.download(TASK_ID, 0, image(), finish=stamp())
    assert "Range" not in httpx_mock.get_requests()[0].headers
    assert saved.path.read_bytes() == stamped(PNG)


@pytest.mark.parametrize("stamping_now", [True, False])
def test_a_part_saved_the_other_way_is_not_resumed(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, stamping_now: bool
) -> None:
    """A part file without the chunk (a run with --no-metadata) is not finished by a run
    that stamps, nor one with the chunk by a run that does not: either starts again."""
    before = PNG[:3000] if stamping_now else stamped(PNG)[:3000]
    (out / f".{TASK_ID}_0.part").write_bytes(before)
    inserted = {} if stamping_now else {"inserted": len(NOTE)}
    (out / f".{TASK_ID}_0.validator").write_text(json.dumps({"url": URL, "etag": ETAG} | inserted))
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    saved = downloader.download(TASK_ID, 0, image(), finish=stamp() if stamping_now else None)
    assert "Range" not in httpx_mock.get_requests()[0].headers
    assert saved.path.read_bytes() == (stamped(PNG) if stamping_now else PNG)


def test_a_stamped_jpeg_is_saved_as_served_and_resumed(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    jpeg = WHOLE["image/jpeg"]
    cut = len(jpeg) // 2
    headers = {"Content-Type": "image/jpeg", "ETag": ETAG, "Content-Length": str(len(jpeg))}
    httpx_mock.add_response(url=URL, headers=headers, stream=Interrupted(jpeg[:cut]))
    with pytest.raises(KeyboardInterrupt):
        downloader.download(TASK_ID, 0, image(), finish=stamp())
    add_rest(httpx_mock, jpeg, cut, if_range=ETAG, mime="image/jpeg")
    saved = downloader.download(TASK_ID, 0, image(), finish=stamp())
    assert saved.path.read_bytes() == jpeg


def test_a_stamped_data_uri_png_carries_the_chunk(downloader: Downloader, out: Path) -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    saved = downloader.download(TASK_ID, 0, image(uri, None), finish=stamp())
    assert saved.path.read_bytes() == stamped(PNG)
