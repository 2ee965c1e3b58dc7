"""Values no field takes and no reply should carry: each a clear error, nothing sent."""

from __future__ import annotations

import pytest
from pytest_httpx import HTTPXMock

from tests.cli.conftest import api_requests, run


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
