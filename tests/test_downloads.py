"""Saving result images: named by task, complete or not at all, resumed, never with the key."""

from __future__ import annotations

import base64
import random
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

from apimart_cli import downloads
from apimart_cli.client import Client
from apimart_cli.downloads import Downloader, SavedFile, format_time
from apimart_cli.errors import ApimartError, ExitCode, ServiceError, TaskError, UsageError
from apimart_cli.models import ResultImage, Task

KEY = "sk-live-SECRET0123456789abcdef"
TASK_ID = "task_01KPQ7J7DWB7QZ3WCEK3YVPBRA"
URL = "https://upload.apimart.ai/f/image/9f2c.png"
NOW = 1_776_748_726.0
EXPIRES = int(NOW) + 3600


def _png(size: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return head + random.Random(size).randbytes(size - len(head))


PNG = _png(5000)
BIG_PNG = _png(600_000)  # more than two 256 KiB chunks
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 200


class Truncated(httpx.SyncByteStream):
    """A body that breaks off: `data`, then the connection drops."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


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


def image(url: str = URL, expires_at: int | None = EXPIRES) -> ResultImage:
    return ResultImage(url, expires_at)


def files(folder: Path) -> list[str]:
    """Every name in the folder, hidden ones (part files) included."""
    return sorted(path.name for path in folder.iterdir())


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


def test_download_task_saves_every_image(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    second = "https://upload.apimart.ai/f/image/second.jpg"
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    httpx_mock.add_response(url=second, headers={"Content-Type": "image/jpeg"}, content=JPEG)
    task = Task(TASK_ID, "completed", images=(image(), image(second)))
    saved = downloader.download_task(task)
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
    client: Client,
    out: Path,
    delays: list[float],
    retries: list[str],
    httpx_mock: HTTPXMock,
) -> None:
    downloader = make_downloader(client, out, delays, retries, force=True)
    existing = out / f"{TASK_ID}_0.png"
    existing.write_bytes(b"the old image")
    httpx_mock.add_response(url=URL, headers={"Content-Type": "image/png"}, content=PNG)
    saved = downloader.download(TASK_ID, 0, image())
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
        headers={"Content-Type": "image/png", "Content-Length": str(len(PNG))},
        content=PNG[:1200],
    )
    httpx_mock.add_response(
        url=URL,
        match_headers={"Range": "bytes=1200-"},
        status_code=206,
        headers={
            "Content-Type": "image/png",
            "Content-Range": f"bytes 1200-{len(PNG) - 1}/{len(PNG)}",
            "Content-Length": str(len(PNG) - 1200),
        },
        content=PNG[1200:],
    )
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
        headers={"Content-Type": "image/png", "Content-Length": str(len(BIG_PNG))},
        stream=Truncated(BIG_PNG[:300_000]),
    )
    written = 256 * 1024  # whole chunks reach the part file
    httpx_mock.add_response(
        url=URL,
        match_headers={"Range": f"bytes={written}-"},
        status_code=206,
        headers={
            "Content-Type": "image/png",
            "Content-Range": f"bytes {written}-{len(BIG_PNG) - 1}/{len(BIG_PNG)}",
        },
        content=BIG_PNG[written:],
    )
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == BIG_PNG
    assert files(out) == [f"{TASK_ID}_0.png"]
    assert len(delays) == 1


def test_part_file_of_a_killed_run_is_resumed(
    downloader: Downloader, out: Path, delays: list[float], httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(PNG[:3000])
    httpx_mock.add_response(
        url=URL,
        match_headers={"Range": "bytes=3000-"},
        status_code=206,
        headers={"Content-Type": "image/png", "Content-Range": f"bytes 3000-4999/{len(PNG)}"},
        content=PNG[3000:],
    )
    saved = downloader.download(TASK_ID, 0, image())
    assert saved.path.read_bytes() == PNG
    assert files(out) == [f"{TASK_ID}_0.png"]
    assert delays == []


def test_full_reply_to_a_range_request_restarts_cleanly(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock
) -> None:
    (out / f".{TASK_ID}_0.part").write_bytes(b"stale bytes of another image" * 10)
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
    httpx_mock.add_response(
        url=URL,
        status_code=206,
        headers={"Content-Type": "image/png", "Content-Range": f"bytes 0-4999/{len(PNG)}"},
        content=PNG,
    )
    with pytest.raises(ServiceError):
        downloader.download(TASK_ID, 0, image())
    assert files(out) == []


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


@pytest.mark.parametrize(
    ("task", "words"),
    [
        (Task(TASK_ID, "failed", error_message="moderation"), ["failed", "moderation"]),
        (Task(TASK_ID, "cancelled"), ["cancelled"]),
        (Task(TASK_ID, "processing", progress=40), ["processing"]),
    ],
)
def test_download_task_that_is_not_completed(
    downloader: Downloader, httpx_mock: HTTPXMock, task: Task, words: list[str]
) -> None:
    with pytest.raises(TaskError) as caught:
        downloader.download_task(task)
    assert caught.value.exit_code == ExitCode.FAILED
    assert TASK_ID in caught.value.message
    for word in words:
        assert word in caught.value.message
    assert httpx_mock.get_requests() == []


def test_completed_task_without_images(downloader: Downloader) -> None:
    with pytest.raises(ServiceError):
        downloader.download_task(Task(TASK_ID, "completed"))


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


# --- two runs into one folder ----------------------------------------------------------


def _other_run_while_locking(
    monkeypatch: pytest.MonkeyPatch, action: Callable[[Path], None]
) -> None:
    """Make the first `_lock` wait for another run that then does `action` to the part file."""
    real_lock = downloads._lock
    calls: list[None] = []

    def lock(handle: IO[bytes]) -> None:
        if not calls:
            calls.append(None)
            action(Path(handle.name))
        real_lock(handle)

    monkeypatch.setattr(downloads, "_lock", lock)


def test_image_finished_by_another_run_while_waiting_for_the_lock(
    downloader: Downloader, out: Path, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = out / f"{TASK_ID}_0.png"

    def finish(part: Path) -> None:  # the other run completes and renames its part file
        part.write_bytes(PNG)
        part.replace(target)

    _other_run_while_locking(monkeypatch, finish)
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

    _other_run_while_locking(monkeypatch, fail)
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
    with pytest.raises(ApimartError) as caught:
        downloader.download(TASK_ID, 0, image())
    assert caught.value.exit_code == ExitCode.FAILED
    assert f".{TASK_ID}_0.part" in caught.value.message
    assert httpx_mock.get_requests() == []


def test_retry_after_zero_means_at_once(
    downloader: Downloader, delays: list[float], httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=URL, status_code=503, headers={"Retry-After": "0"})
    httpx_mock.add_response(url=URL, content=PNG, headers={"Content-Type": "image/png"})
    downloader.download(TASK_ID, 0, image())
    assert delays == [0.0]
