"""`apimart upload`: files checked first, each uploaded once, its URL printed."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_httpx import HTTPXMock

from tests.cli.conftest import API, AUTH, PNG, api_requests, run

UPLOAD_URL = f"{API}/v1/uploads/images"


def reply(name: str) -> dict[str, object]:
    return {
        "url": f"https://cdn.test/{name}",
        "filename": name,
        "content_type": "image/png",
        "bytes": len(PNG),
        "created_at": 4_102_444_800,
    }


def expect_upload(httpx_mock: HTTPXMock, name: str, *, wrapped: bool = False) -> None:
    obj = reply(name)
    httpx_mock.add_response(
        method="POST",
        url=UPLOAD_URL,
        match_headers=AUTH,
        json={"code": 200, "data": obj} if wrapped else obj,
    )


def test_prints_each_url_and_sends_each_file_once(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.png").write_bytes(PNG + b"b")
    expect_upload(httpx_mock, "a.png")
    expect_upload(httpx_mock, "b.png", wrapped=True)
    result = run("upload", "a.png", "b.png")
    assert result.exit_code == 0, result.output
    assert result.stdout == "https://cdn.test/a.png\nhttps://cdn.test/b.png\n"
    sent = api_requests(httpx_mock)
    assert [r.headers["Content-Type"].split(";")[0] for r in sent] == ["multipart/form-data"] * 2
    assert PNG in sent[0].content
    # Again: both remembered, nothing sent, the same URLs.
    again = run("upload", "b.png", "a.png", "--json")
    assert again.exit_code == 0, again.output
    assert [json.loads(line) for line in again.stdout.splitlines()] == [
        reply("b.png"),
        reply("a.png"),
    ]
    assert len(api_requests(httpx_mock)) == 2


def test_a_bad_file_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "notes.txt").write_text("not an image")
    result = run("upload", "a.png", "notes.txt")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "notes.txt is not a PNG, JPEG, WebP or GIF image" in result.stderr
    assert api_requests(httpx_mock) == []


def test_an_ambiguous_failure_says_the_file_may_be_stored(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "b.png").write_bytes(PNG + b"b")
    expect_upload(httpx_mock, "a.png")
    httpx_mock.add_response(method="POST", url=UPLOAD_URL, status_code=500, json={})
    result = run("upload", "a.png", "b.png")
    assert result.exit_code == 5
    assert result.stdout == "https://cdn.test/a.png\n"  # the one that made it is still shown
    assert "may have been stored; it was not sent again" in result.stderr
    assert len(api_requests(httpx_mock)) == 2


def test_no_key_exits_3(httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(PNG)
    result = run("upload", "a.png")
    assert result.exit_code == 3
    assert "No API key" in result.stderr
