"""The generation request: limits checked before sending, and the streamed JSON body."""

from __future__ import annotations

import base64
import json
import os
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apimart_cli.constants import MAX_REFERENCE_BYTES
from apimart_cli.errors import ExitCode, UsageError
from apimart_cli.payload import (
    GenerationRequest,
    Reference,
    build_request,
    resolve_reference,
)
from tests.helpers.images import png_head

MIB = 1024 * 1024
PNG = png_head(1, 1)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00;"
PNG_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
URL = "https://example.com/fox.png?size=large&x=%22"


def write(folder: Path, name: str, data: bytes, size: int | None = None) -> Path:
    """A file holding `data`, made sparse up to `size` bytes when given (fast, takes no disk)."""
    path = folder / name
    with path.open("wb") as file:
        file.write(data)
        if size is not None:
            file.truncate(size)
    return path


def usage_error(call: object, *args: object, **kwargs: object) -> UsageError:
    """The UsageError `call` raises; every one must carry a hint."""
    assert callable(call)
    with pytest.raises(UsageError) as caught:
        call(*args, **kwargs)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.hint
    return caught.value


def file_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


# --- references -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "mime"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (WEBP, "image/webp"), (GIF, "image/gif")],
)
def test_file_type_comes_from_its_bytes_not_its_name(
    tmp_path: Path, data: bytes, mime: str
) -> None:
    path = write(tmp_path, "picture.txt", data)
    ref = resolve_reference(str(path))
    assert ref == Reference(str(path), "file", path=path, mime=mime, size=len(data))


def test_file_path_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write(tmp_path, "fox.png", PNG)
    ref = resolve_reference("~/fox.png")
    assert ref.path == tmp_path / "fox.png"
    assert ref.source == "~/fox.png"


@pytest.mark.parametrize(
    ("name", "make", "expected"),
    [
        ("missing.png", lambda p: None, "not found"),
        ("folder.png", lambda p: p.mkdir(), "is a directory"),
        ("notes.png", lambda p: p.write_text("not an image at all"), "not a PNG, JPEG"),
        ("empty.png", lambda p: p.write_bytes(b""), "not a PNG, JPEG"),
        ("huge.png", lambda p: write(p.parent, p.name, PNG, MAX_REFERENCE_BYTES + 1), "20 MiB"),
        ("fifo.png", lambda p: os.mkfifo(p), "not a regular file"),
    ],
)
def test_bad_reference_files_are_refused_naming_the_path(
    tmp_path: Path, name: str, make: object, expected: str
) -> None:
    path = tmp_path / name
    assert callable(make)
    make(path)
    error = usage_error(resolve_reference, str(path))
    assert str(path) in error.message
    assert expected in error.message


def test_file_of_exactly_20_mib_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "big.png", PNG, MAX_REFERENCE_BYTES)
    assert resolve_reference(str(path)).size == MAX_REFERENCE_BYTES


def test_unreadable_file_chmod(tmp_path: Path) -> None:
    path = write(tmp_path, "locked.png", PNG)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("this user (root) can read a mode-000 file")
        error = usage_error(resolve_reference, str(path))
        assert str(path) in error.message
    finally:
        path.chmod(0o600)


def test_unreadable_file_open_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "locked.png", PNG)

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied", str(self))

    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", refuse)
        error = usage_error(resolve_reference, str(path))
    assert error.message == f"Cannot read reference image {path}: Permission denied."


@pytest.mark.parametrize(
    "uri",
    [
        PNG_URI,
        file_uri(JPEG, "image/jpeg"),
        file_uri(WEBP, "image/webp"),
        file_uri(GIF, "image/gif"),
        "data:image/png;base64,QQ==",
        "data:image/png;base64,QUI=",
        "DATA:IMAGE/PNG;BASE64,QUJD",
    ],
)
def test_valid_data_uris_pass_through(uri: str) -> None:
    ref = resolve_reference(uri)
    assert ref.kind == "data"
    assert ref.source == uri
    payload = uri.partition(",")[2]
    assert ref.size == len(base64.b64decode(payload))
    assert ref.mime == uri[5:].partition(";")[0].lower()


@pytest.mark.parametrize(
    "uri",
    [
        "data:image/png;base64,",  # no data
        "data:image/png;base64,QUJ",  # length not a multiple of 4
        "data:image/png;base64,QU=D",  # padding inside
        "data:image/png;base64,Q===",  # too much padding
        "data:image/png;base64,QU JD",  # a space
        "data:image/png;base64,QUJD\n",  # a newline
        "data:image/png;base64,QU-_",  # URL-safe alphabet
        "data:image/svg+xml;base64,QUJD",  # not an accepted type
        "data:image/jpg;base64,QUJD",
        "data:text/plain;base64,QUJD",
        "data:image/png,QUJD",  # not base64
        "data:image/png;base64",  # no comma
        "data:,hello",
    ],
)
def test_bad_data_uris_are_refused(uri: str) -> None:
    error = usage_error(resolve_reference, uri)
    assert repr(uri) in error.message


def test_long_bad_data_uri_is_quoted_short() -> None:
    uri = "data:image/png;base64," + "A" * 1000 + "!"
    error = usage_error(resolve_reference, uri)
    assert len(error.message) < 200
    assert "data:image/png;base64,AAAA" in error.message


def test_oversized_data_uri_is_refused() -> None:
    uri = "data:image/png;base64," + "AAAA" * (MAX_REFERENCE_BYTES // 3 + 1)
    error = usage_error(resolve_reference, uri)
    assert "20 MiB" in error.message


@pytest.mark.parametrize(
    "url", [URL, "http://127.0.0.1:8787/a.png", "HTTPS://EXAMPLE.COM/A.PNG", "https://例え.jp/画像"]
)
def test_urls_pass_through_unchanged(url: str) -> None:
    assert resolve_reference(url) == Reference(url, "url")
    assert resolve_reference(url).summary() == url


@pytest.mark.parametrize(
    "url", ["ftp://example.com/a.png", "file:///tmp/a.png", "s3://bucket/a.png", "https://"]
)
def test_non_http_urls_are_refused(url: str) -> None:
    error = usage_error(resolve_reference, url)
    assert repr(url) in error.message


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_reference_is_refused(text: str) -> None:
    usage_error(resolve_reference, text)


# --- fields: prompt, model, size, resolution, n ----------------------------


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t "])
def test_empty_prompt_is_refused(prompt: str) -> None:
    assert usage_error(build_request, prompt).message == "The prompt is empty."


def test_prompt_with_undecodable_bytes_is_refused() -> None:
    usage_error(build_request, "a fox \udcff")


def test_prompt_is_sent_as_given() -> None:
    assert build_request("  a fox\n").prompt == "  a fox\n"


@pytest.mark.parametrize(
    ("size", "sent", "noted"),
    [
        ("16:9", "16:9", False),
        ("auto", "auto", False),
        ("1536x864", "1536x864", False),
        ("1536X864", "1536x864", False),
        (" 1881x836 ", "1881x836", False),
        ("1000x1000", "1000x1000", True),
        ("3840x64", "3840x64", True),
    ],
)
def test_valid_sizes(size: str, sent: str, noted: bool) -> None:
    request = build_request("fox", size=size)
    assert request.size == sent
    expected = (f"size {sent} is not in the API's table; sent as given",) if noted else ()
    assert request.notes == expected


@pytest.mark.parametrize("size", ["", "17:9", "0x100", "3841x100", "big", "16x9x2", "-1x5", "16x9"])
def test_invalid_sizes(size: str) -> None:
    assert repr(size) in usage_error(build_request, "fox", size=size).message


def test_a_tiny_size_goes_out_as_given_when_forced() -> None:
    request = build_request("fox", size="16x9", force_size=True)
    assert request.size == "16x9"
    assert request.notes == ("size 16x9 is not in the API's table; sent as given",)


@pytest.mark.parametrize(("resolution", "sent"), [("1k", "1k"), ("2K", "2k"), ("4k", "4k")])
def test_valid_resolutions(resolution: str, sent: str) -> None:
    assert build_request("fox", resolution=resolution).resolution == sent


@pytest.mark.parametrize("resolution", ["", "8k", "1080p", "k"])
def test_invalid_resolutions(resolution: str) -> None:
    assert repr(resolution) in usage_error(build_request, "fox", resolution=resolution).message


@pytest.mark.parametrize("n", [1, 10])
def test_valid_n(n: int) -> None:
    assert build_request("fox", n=n).n == n


@pytest.mark.parametrize("n", [0, 11, -1, True])
def test_invalid_n(n: int) -> None:
    assert f"n {n!r}" in usage_error(build_request, "fox", n=n).message


def test_empty_model_is_refused() -> None:
    usage_error(build_request, "fox", model=" ")


# --- reference limits -------------------------------------------------------


def test_seventeen_references_are_refused_before_any_is_read() -> None:
    images = ["/no/such/file.png"] * 17
    assert "17 reference images" in usage_error(build_request, "fox", images=images).message


def test_sixteen_references_are_accepted() -> None:
    assert len(build_request("fox", images=[URL] * 16).references) == 16


@pytest.mark.parametrize(("files", "data_bytes"), [(13, 0), (12, 17 * MIB - 1)])
def test_references_over_256_mib_in_all_are_refused(
    tmp_path: Path, files: int, data_bytes: int
) -> None:
    """Sparse files of 20 MiB each, and optionally a data URI: both count toward the total."""
    images = [str(write(tmp_path, f"{i}.png", PNG, MAX_REFERENCE_BYTES)) for i in range(files)]
    if data_bytes:
        images.append(file_uri(bytes(data_bytes)))
    total = files * MAX_REFERENCE_BYTES + data_bytes
    assert total > 256 * MIB
    error = usage_error(build_request, "fox", images=images)
    assert f"({total} bytes)" in error.message


def test_sixteen_files_of_15_mib_are_accepted(tmp_path: Path) -> None:
    paths = [str(write(tmp_path, f"{i}.png", PNG, 15 * MIB)) for i in range(16)]
    assert sum(ref.size for ref in build_request("fox", images=paths).references) == 240 * MIB


def test_a_single_string_is_one_reference() -> None:
    assert build_request("fox", images=URL).references == (Reference(URL, "url"),)


# --- what is sent -----------------------------------------------------------


def test_unset_fields_are_not_sent() -> None:
    request = build_request("a fox")
    assert request.fields() == {}
    assert json.loads(b"".join(request.iter_body())) == {"model": "gpt-image-2", "prompt": "a fox"}


def test_fields_hold_summaries_not_base64(tmp_path: Path) -> None:
    path = write(tmp_path, "fox.png", PNG + bytes(3000))
    size = len(PNG) + 3000
    request = build_request(
        "fox", size="16:9", resolution="2k", n=3, images=[URL, str(path)], official_fallback=True
    )
    fields = request.fields()
    assert fields == {
        "n": 3,
        "size": "16:9",
        "resolution": "2k",
        "image_urls": [URL, f"data:image/png;base64,iVBORw0KGgoAAAAN…({size} bytes from {path})"],
        "official_fallback": True,
    }
    assert base64.b64encode(PNG + bytes(3000)).decode()[:40] not in json.dumps(fields)


def test_dry_run_shortens_inlined_images(tmp_path: Path) -> None:
    path = write(tmp_path, "fox.gif", GIF)
    uri = file_uri(JPEG, "image/jpeg")
    request = build_request("fox", images=[uri, str(path), URL])
    assert request.dry_run() == {
        "model": "gpt-image-2",
        "prompt": "fox",
        "image_urls": [
            f"data:image/jpeg;base64,{uri[23:39]}…({len(JPEG)} bytes)",
            f"data:image/gif;base64,R0lGODlhAQABAIAA…({len(GIF)} bytes from {path})",
            URL,
        ],
    }


PROMPTS = ["a red fox", '他说："你好"\n\t\\ ok', "emoji 🦊 and \u2028 and \x00", "ä" * 5000]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_body_is_exactly_json_dumps(tmp_path: Path, prompt: str) -> None:
    png = write(tmp_path, "fox.png", PNG + os.urandom(1001))
    webp = write(tmp_path, "fox.webp", WEBP + os.urandom(500_000))
    request = build_request(
        prompt,
        n=2,
        size="1000x1000",
        resolution="4k",
        images=[URL, PNG_URI, str(png), str(webp)],
        official_fallback=True,
    )
    expected = {
        "model": "gpt-image-2",
        "prompt": prompt,
        "n": 2,
        "size": "1000x1000",
        "resolution": "4k",
        "image_urls": [
            URL,
            PNG_URI,
            file_uri(png.read_bytes()),
            file_uri(webp.read_bytes(), "image/webp"),
        ],
        "official_fallback": True,
    }
    body = b"".join(request.iter_body())
    assert body == json.dumps(expected, ensure_ascii=False).encode("utf-8")
    assert request.body_length() == len(body)


def test_url_needing_json_escapes_is_encoded_exactly() -> None:
    url = 'https://example.com/a"b\\c/狐.png'
    ref = resolve_reference(url)
    encoded = b"".join(ref.iter_encoded(chunk_size=4))
    assert encoded == json.dumps(url, ensure_ascii=False)[1:-1].encode()
    assert ref.encoded_length() == len(encoded)


def test_body_can_be_streamed_again(tmp_path: Path) -> None:
    path = write(tmp_path, "fox.jpg", JPEG + os.urandom(700_000))
    request = build_request("fox", images=[str(path)])
    first = b"".join(request.iter_body())
    assert b"".join(request.iter_body()) == first
    assert len(first) == request.body_length()


@pytest.mark.parametrize(
    "change", [lambda p: p.write_bytes(PNG + b"x"), lambda p: p.write_bytes(PNG[:-1])]
)
def test_file_changed_before_sending_is_refused(tmp_path: Path, change: object) -> None:
    path = write(tmp_path, "fox.png", PNG)
    request = build_request("fox", images=[str(path)])
    assert callable(change)
    change(path)
    error = usage_error(lambda: b"".join(request.iter_body()))
    assert str(path) in error.message


def test_file_grown_while_sending_is_refused_before_its_last_chunk(tmp_path: Path) -> None:
    path = write(tmp_path, "fox.png", PNG + bytes(100))
    ref = resolve_reference(str(path))
    chunks = ref.iter_encoded(chunk_size=30)
    sent = [next(chunks), next(chunks)]  # the prefix and the first 30 bytes
    with path.open("ab") as file:
        file.write(b"more")
    with pytest.raises(UsageError):
        sent.extend(chunks)
    assert sum(map(len, sent)) < ref.encoded_length()


@pytest.mark.parametrize(("count", "size"), [(1, 60 * MIB), (16, 15 * MIB)])
def test_streaming_keeps_memory_bounded(tmp_path: Path, count: int, size: int) -> None:
    """60 MiB is over the API's limit, but streaming does not care: it shows the bound."""
    paths = [write(tmp_path, f"{i}.png", PNG, size) for i in range(count)]
    refs = tuple(Reference(str(path), "file", path, "image/png", size) for path in paths)
    request = GenerationRequest("fox", references=refs)
    total = largest = 0
    tracemalloc.start()
    try:
        for chunk in request.iter_body():
            total += len(chunk)
            largest = max(largest, len(chunk))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == request.body_length() > count * size * 4 // 3
    assert largest <= MIB
    assert peak < 16 * MIB


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=3000), chunk_size=st.integers(min_value=1, max_value=100))
def test_streamed_base64_equals_whole_file_base64(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, chunk_size: int
) -> None:
    path = write(tmp_path_factory.mktemp("prop"), "any.png", data)
    ref = Reference(str(path), "file", path=path, mime="image/png", size=len(data))
    encoded = b"".join(ref.iter_encoded(chunk_size=chunk_size))
    assert encoded == b"data:image/png;base64," + base64.b64encode(data)
    assert ref.encoded_length() == len(encoded)


@settings(max_examples=100, deadline=None)
@given(prompt=st.text(min_size=1).filter(str.strip), n=st.none() | st.integers(1, 10))
def test_body_equals_json_dumps_for_any_prompt(prompt: str, n: int | None) -> None:
    request = build_request(prompt, n=n, images=[URL, PNG_URI])
    expected: dict[str, object] = {"model": "gpt-image-2", "prompt": prompt}
    if n is not None:
        expected["n"] = n
    expected["image_urls"] = [URL, PNG_URI]
    body = b"".join(request.iter_body())
    assert body == json.dumps(expected, ensure_ascii=False).encode("utf-8")
    assert request.body_length() == len(body)
