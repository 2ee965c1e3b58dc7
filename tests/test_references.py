"""Reference uploads: the multipart body, the client's upload, the remembered URLs."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.cache import Cache
from apimart_cli.client import Client
from apimart_cli.errors import ApimartError, ExitCode, ServiceError, UsageError
from apimart_cli.payload import READ_CHUNK_BYTES, build_request, resolve_reference
from apimart_cli.references import (
    UPLOAD_LIFETIME_SECONDS,
    UPLOAD_MARGIN_SECONDS,
    Uploader,
    check_upload_files,
    is_base64_refusal,
    parse_upload,
    prepare_upload,
    upload_files,
    with_uploaded,
)
from tests.helpers.clocks import FakeClock
from tests.helpers.images import png_head

KEY = "sk-live-UPLOAD0123456789abcdef"
BASE = "https://api.test"
UPLOAD_URL = f"{BASE}/v1/uploads/images"
AUTH = {"Authorization": f"Bearer {KEY}"}
PNG_HEAD = png_head(1, 1)
NOW = 1_800_000_000.0


def image(path: Path, size: int = 100, fill: bytes = b"x") -> Path:
    path.write_bytes(PNG_HEAD + fill * (size - len(PNG_HEAD)))
    return path


def uploaded(url: str = "https://cdn.test/u/1.png", **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "filename": "1.png",
        "content_type": "image/png",
        "bytes": 100,
        "created_at": int(NOW),
        **extra,
    }


@pytest.fixture
def client() -> Any:
    with Client(BASE, KEY, sleep=lambda _: None) as api:
        yield api


def multipart(upload: Any) -> bytes:
    return b"".join(upload.iter_body())


# -- the body --------------------------------------------------------------------------------


def test_the_body_is_one_file_field_framed_as_multipart(tmp_path: Path) -> None:
    path = image(tmp_path / "my photo (1).png")
    upload = prepare_upload(resolve_reference(str(path)))
    body = multipart(upload)
    b = upload.boundary.encode()
    assert body == (
        b"--" + b + b"\r\n"
        b'Content-Disposition: form-data; name="file"; filename="my_photo__1_.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + path.read_bytes() + b"\r\n--" + b + b"--\r\n"
    )
    assert upload.body_length() == len(body)
    assert upload.content_type == f"multipart/form-data; boundary={upload.boundary}"
    assert upload.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_httpx_reads_the_body_as_the_multipart_form_it_is(tmp_path: Path) -> None:
    """Parsed back by a real multipart reader (httpx's own form encoder agrees)."""
    from email.parser import BytesParser

    path = image(tmp_path / "a.png", 5000)
    upload = prepare_upload(resolve_reference(str(path)))
    message = BytesParser().parsebytes(
        f"Content-Type: {upload.content_type}\r\n\r\n".encode() + multipart(upload)
    )
    (part,) = message.get_payload()
    assert part.get_param("name", header="content-disposition") == "file"
    assert part.get_content_type() == "image/png"
    assert part.get_payload(decode=True) == path.read_bytes()


def test_the_file_is_streamed_in_bounded_chunks(tmp_path: Path) -> None:
    path = image(tmp_path / "big.png", 3 * READ_CHUNK_BYTES + 7)
    chunks = list(prepare_upload(resolve_reference(str(path))).iter_body())
    assert max(len(chunk) for chunk in chunks) <= READ_CHUNK_BYTES
    assert len(chunks) >= 5


def test_a_file_that_changes_while_sent_is_refused(tmp_path: Path) -> None:
    path = image(tmp_path / "a.png", 1000)
    upload = prepare_upload(resolve_reference(str(path)))
    with path.open("ab") as file:
        file.write(b"more")
    with pytest.raises(UsageError, match="changed while being sent"):
        multipart(upload)


def test_a_file_rewritten_to_the_same_size_before_it_is_sent_is_refused(tmp_path: Path) -> None:
    """Its URL is remembered under the SHA-256 read first: other bytes sent under it
    would hand a later command's file the wrong picture. The last of the file never
    goes out, so the service never holds a whole body."""
    path = image(tmp_path / "a.png", 3 * READ_CHUNK_BYTES + 7)
    upload = prepare_upload(resolve_reference(str(path)))
    path.write_bytes(PNG_HEAD + b"y" * (3 * READ_CHUNK_BYTES + 7 - len(PNG_HEAD)))
    sent: list[bytes] = []
    with pytest.raises(UsageError, match="changed while being sent"):
        for chunk in upload.iter_body():
            sent.append(chunk)
    assert sum(len(chunk) for chunk in sent[1:]) < 3 * READ_CHUNK_BYTES + 7


def test_a_data_uri_is_uploaded_from_its_bytes() -> None:
    import base64

    data = PNG_HEAD + b"y" * 50
    upload = prepare_upload(
        resolve_reference("data:image/png;base64," + base64.b64encode(data).decode())
    )
    assert data in multipart(upload)
    assert b'filename="image.png"' in multipart(upload)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("missing.png", "not found"),
        ("notes.txt", "is not a PNG, JPEG, WebP or GIF"),
        ("https://x.test/a.png", "is not a local file"),
        ("huge.png", "the API takes at most 20 MiB"),
    ],
)
def test_each_file_is_checked_before_anything_is_sent(
    tmp_path: Path, arg: str, message: str
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with (tmp_path / "huge.png").open("wb") as file:
        file.write(PNG_HEAD)
        file.truncate(20 * 1024 * 1024 + 1)
    image(tmp_path / "good.png")
    with pytest.raises(UsageError, match=message):
        check_upload_files(
            [str(tmp_path / "good.png"), arg if "://" in arg else str(tmp_path / arg)]
        )


# -- the service's reply ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [uploaded(), {"code": 200, "data": uploaded()}],
    ids=["bare", "wrapped"],
)
def test_the_reply_is_read_wrapped_or_not(reply: dict[str, Any]) -> None:
    obj, expires = parse_upload(reply, now=NOW + 60)
    assert obj["url"] == "https://cdn.test/u/1.png"
    assert expires == NOW + UPLOAD_LIFETIME_SECONDS - UPLOAD_MARGIN_SECONDS


@pytest.mark.parametrize(
    ("created_at", "expected"),
    [
        (int(NOW) - 3600, NOW - 3600),
        ((int(NOW) - 3600) * 1000, NOW - 3600),  # milliseconds
        ("2027-01-15T04:00:00Z", 1_799_985_600.0),  # ISO 8601
        ("2027-01-15T04:00:00", 1_799_985_600.0),  # no zone: UTC
        (str(int(NOW) - 3600), NOW - 3600),
        (None, NOW),  # missing: counted from now
        ("yesterday", NOW),  # unreadable: from now
        (NOW + 7200, NOW),  # a server clock ahead of ours never stretches the life
    ],
)
def test_the_url_lives_72_hours_from_created_at_less_a_margin(
    created_at: object, expected: float
) -> None:
    _, expires = parse_upload(uploaded(created_at=created_at), now=NOW)
    assert expires == expected + UPLOAD_LIFETIME_SECONDS - UPLOAD_MARGIN_SECONDS


def test_an_earlier_expires_at_in_the_reply_wins() -> None:
    _, expires = parse_upload(uploaded(expires_at=int(NOW) + 3600 * 24), now=NOW)
    assert expires == NOW + 3600 * 24 - UPLOAD_MARGIN_SECONDS


@pytest.mark.parametrize("reply", [{}, {"url": ""}, {"url": "ftp://x"}, {"code": 200, "data": {}}])
def test_a_reply_without_a_url_is_a_service_error(reply: dict[str, Any]) -> None:
    with pytest.raises(ServiceError, match="has no URL"):
        parse_upload(reply, now=NOW)


@pytest.mark.parametrize(
    "url",
    [
        "https://cdn.test/sk-upload-Hq27NcV0pL3x/1.png",
        "https://cdn.test/1.png?token=sk-upload-Hq27NcV0pL3x",
        "https://cdn.test/1.png?token=sk%2Dupload%2DHq27NcV0pL3x",
    ],
)
def test_a_url_that_holds_the_key_is_refused_never_printed_or_sent(url: str) -> None:
    from apimart_cli import secrets

    secrets.hide("sk-upload-Hq27NcV0pL3x")
    with pytest.raises(ServiceError, match="holds the API key") as caught:
        parse_upload(uploaded(url=url), now=NOW)
    assert "Hq27NcV0pL3x" not in caught.value.message


@pytest.mark.parametrize("url", ["http:///a.png", "https://", "https://:443/a.png", "http://[::1"])
def test_a_url_without_a_host_is_refused(url: str) -> None:
    with pytest.raises(ServiceError, match="has a URL that cannot be one"):
        parse_upload(uploaded(url=url), now=NOW)


def test_a_field_of_the_reply_nested_too_deep_is_left_out_and_the_rest_kept() -> None:
    """A reply field nested just short of what the parser refuses: the upload's URL is
    still used, and its object can be printed (`upload --json`) and remembered."""
    import json

    deep: list[Any] = []
    for _ in range(5_000):
        deep = [deep]
    obj, _ = parse_upload(uploaded(extra=deep, note={"a": [1]}), now=NOW)
    assert obj["url"] == "https://cdn.test/u/1.png"
    assert "extra" not in obj
    assert obj["note"] == {"a": [1]}
    json.dumps(obj)


# -- the client ------------------------------------------------------------------------------


def test_upload_sends_the_multipart_body_with_the_key(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    path = image(tmp_path / "a.png", 4000)
    upload = prepare_upload(resolve_reference(str(path)))
    httpx_mock.add_response(
        method="POST",
        url=UPLOAD_URL,
        match_headers={**AUTH, "Content-Type": upload.content_type},
        match_content=multipart(upload),
        json=uploaded(),
    )
    assert client.upload_image(upload) == uploaded()
    (request,) = httpx_mock.get_requests()
    assert request.headers["Content-Length"] == str(upload.body_length())
    assert "idempotency-key" not in request.headers


@pytest.mark.parametrize("status", [429, 503])
def test_upload_is_resent_where_nothing_was_stored(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path, status: int
) -> None:
    upload = prepare_upload(resolve_reference(str(image(tmp_path / "a.png"))))
    httpx_mock.add_response(method="POST", url=UPLOAD_URL, status_code=status, json={})
    httpx_mock.add_response(
        method="POST", url=UPLOAD_URL, match_content=multipart(upload), json=uploaded()
    )
    assert client.upload_image(upload)["url"] == "https://cdn.test/u/1.png"


def test_upload_is_resent_when_the_connection_never_opened(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    upload = prepare_upload(resolve_reference(str(image(tmp_path / "a.png"))))
    httpx_mock.add_exception(httpx.ConnectError("refused"), method="POST", url=UPLOAD_URL)
    httpx_mock.add_response(method="POST", url=UPLOAD_URL, json=uploaded())
    assert client.upload_image(upload)["url"] == "https://cdn.test/u/1.png"


@pytest.mark.parametrize(
    "failure",
    [
        {"status_code": 500, "json": {"error": {"message": "boom"}}},
        {"exception": httpx.ReadTimeout("no reply")},
    ],
    ids=["500", "no-reply"],
)
def test_an_ambiguous_upload_failure_is_not_resent(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path, failure: dict[str, Any]
) -> None:
    upload = prepare_upload(resolve_reference(str(image(tmp_path / "a.png"))))
    if "exception" in failure:
        httpx_mock.add_exception(failure["exception"], method="POST", url=UPLOAD_URL)
    else:
        httpx_mock.add_response(method="POST", url=UPLOAD_URL, **failure)
    with pytest.raises(ApimartError) as caught:
        client.upload_image(upload)
    assert caught.value.exit_code == ExitCode.SERVICE
    assert "may have been stored; it was not sent again" in caught.value.message
    assert len(httpx_mock.get_requests()) == 1


def test_a_refused_upload_is_not_resent(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    upload = prepare_upload(resolve_reference(str(image(tmp_path / "a.png"))))
    httpx_mock.add_response(
        method="POST",
        url=UPLOAD_URL,
        status_code=400,
        json={"error": {"message": "unsupported format"}},
    )
    with pytest.raises(ApimartError, match="unsupported format") as caught:
        client.upload_image(upload)
    assert caught.value.exit_code == ExitCode.FAILED


# -- remembered uploads ----------------------------------------------------------------------


def test_the_cache_is_private_and_remembers_until_expiry(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    cache = Cache(tmp_path / "data" / "cache.sqlite3", clock=clock)
    assert cache.upload(BASE, "abc") is None
    cache.remember_upload(BASE, "abc", uploaded(), NOW + 100)
    assert stat.S_IMODE(os.stat(cache.path).st_mode) == 0o600
    assert cache.upload(BASE, "abc") == uploaded()
    assert cache.upload("https://other.test", "abc") is None  # another service: another upload
    clock.time = NOW + 100
    assert cache.upload(BASE, "abc") is None


def test_a_broken_cache_warns_once_and_acts_empty(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    warnings: list[str] = []
    cache = Cache(path, warn=warnings.append)
    assert cache.upload(BASE, "abc") is None
    cache.remember_upload(BASE, "abc", uploaded(), NOW + 100)
    assert len(warnings) == 1 and str(path) in warnings[0]


def test_each_distinct_content_is_uploaded_once_and_remembered(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    a = image(tmp_path / "a.png", fill=b"a")
    twin = image(tmp_path / "twin.png", fill=b"a")  # same bytes, another name
    b = image(tmp_path / "b.png", fill=b"b")
    for name in ("a", "b"):
        httpx_mock.add_response(
            method="POST",
            url=UPLOAD_URL,
            match_content=None,
            json=uploaded(f"https://cdn.test/{name}.png"),
        )
    cache = Cache(tmp_path / "cache.sqlite3", clock=lambda: NOW)
    refs = [resolve_reference(str(p)) for p in (a, twin, b, a)]
    urls = Uploader(client, cache, concurrency=1, clock=lambda: NOW).upload_all(refs)
    assert set(urls.values()) == {"https://cdn.test/a.png", "https://cdn.test/b.png"}
    assert urls[refs[0]] == urls[refs[1]]
    # A later run finds them all remembered: nothing more is sent.
    again = Uploader(client, cache, concurrency=4, clock=lambda: NOW).upload_all(refs)
    assert again == urls
    assert len(httpx_mock.get_requests()) == 2


def test_parallel_uploads_raise_the_first_failure(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    refs = [
        resolve_reference(str(image(tmp_path / f"{i}.png", fill=bytes([65 + i])))) for i in range(2)
    ]
    httpx_mock.add_response(
        method="POST", url=UPLOAD_URL, status_code=402, json={"error": {"message": "pay"}}
    )
    httpx_mock.add_response(method="POST", url=UPLOAD_URL, json=uploaded(), is_optional=True)
    with pytest.raises(ApimartError, match="pay"):
        Uploader(client, Cache(tmp_path / "c.sqlite3"), concurrency=1).upload_all(refs)


def test_upload_files_yields_each_object_in_order(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    paths = [image(tmp_path / f"{i}.png", fill=bytes([65 + i])) for i in range(2)]
    for i in range(2):
        httpx_mock.add_response(
            method="POST", url=UPLOAD_URL, json=uploaded(f"https://cdn.test/{i}.png")
        )
    objects = list(upload_files(client, check_upload_files([str(p) for p in paths]), warn=print))
    assert [o["url"] for o in objects] == ["https://cdn.test/0.png", "https://cdn.test/1.png"]


def test_with_uploaded_replaces_only_the_uploaded_references(tmp_path: Path) -> None:
    path = image(tmp_path / "a.png")
    request = build_request("p", images=[str(path), "https://x.test/b.png"])
    file_ref = request.references[0]
    changed = with_uploaded(request, {file_ref: "https://cdn.test/a.png"})
    assert changed.dry_run()["image_urls"] == ["https://cdn.test/a.png", "https://x.test/b.png"]


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        (400, "base64 image data is no longer supported; upload it", True),
        (400, "image_requires_upload", True),
        (400, "prompt rejected by moderation", False),
        (500, "base64 not supported", False),
    ],
)
def test_what_counts_as_refusing_base64(
    tmp_path: Path, status: int, message: str, expected: bool
) -> None:
    from apimart_cli.client import make_status_error

    error = make_status_error(status, {}, f'{{"error": {{"message": "{message}"}}}}'.encode())
    with_file = build_request("p", images=[str(image(tmp_path / "a.png"))])
    assert is_base64_refusal(error, with_file) is expected
    assert is_base64_refusal(error, build_request("p", images=["https://x.test/a.png"])) is False
