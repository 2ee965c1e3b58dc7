"""Values no field takes and no reply should carry: each a clear error, nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from tests.cli.conftest import API, PNG, api_requests, run


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("x=NaN", "NaN is not a number JSON can carry"),
        ("x=Infinity", "Infinity is not a number JSON can carry"),
        ("x=-Infinity", "-Infinity is not a number JSON can carry"),
        ('x={"a": [1, NaN]}', "NaN is not a number JSON can carry"),
        ("x=1e999", "a number too large for JSON to carry"),
        ("seed=" + "9" * 400, "an integer (400 digits) out of range"),
        ("x=" + "[" * 500 + "]" * 500, "nested more than 32 levels deep"),
        ("x=" + "[" * 1000 + "]" * 1000, "nested"),
        ("x=" + '{"a":' * 600 + "1" + "}" * 600, "nested"),
    ],
    ids=[
        "nan",
        "inf",
        "-inf",
        "nested-nan",
        "1e999",
        "400-digits",
        "500-deep",
        "1000-deep",
        "600-objects",
    ],
)
def test_a_param_no_json_field_can_hold_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, param: str, message: str
) -> None:
    result = run("generate", "a red fox", "--param", param)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.splitlines()) <= 2
    assert api_requests(httpx_mock) == []


# -- hostile upload replies ------------------------------------------------------------------

UPLOAD_URL = f"{API}/v1/uploads/images"


@pytest.mark.parametrize(
    ("field", "value", "printed"),
    [
        ("created_at", int("9" * 400), "https://cdn.test/a.png"),
        ("created_at", "9" * 400, "https://cdn.test/a.png"),
        ("expires_at", -(10**18), "https://cdn.test/a.png"),  # unreadable: from created_at
        ("url", "https://cdn.test/a.png\nhttps://evil.test/\x1b]0;owned\x07", None),
        ("url", "https://cdn.test/\x1b[2J.png", None),
        ("url", "https://cdn.test/a b.png", None),
    ],
    ids=["400-digit-created", "400-digit-string", "expired", "newline-osc", "csi", "space"],
)
def test_a_hostile_upload_reply_is_read_or_refused_never_printed_raw(
    api: str,
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    field: str,
    value: object,
    printed: str | None,
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(PNG)
    reply: dict[str, object] = {"url": "https://cdn.test/a.png", "created_at": 4_102_444_800}
    reply[field] = value
    httpx_mock.add_response(method="POST", url=UPLOAD_URL, json=reply)
    result = run("upload", "a.png")
    assert "\x1b" not in result.output and "evil" not in result.output
    assert "Internal error" not in result.output
    if field == "url":
        assert result.exit_code == 5, result.output
        assert result.stdout == ""
        assert "a URL that cannot be one" in result.stderr
    else:
        assert result.exit_code == 0, result.output
        assert result.stdout == f"{printed}\n"
