"""`apimart sizes`: the API's size x resolution table, needing no key and no network."""

from __future__ import annotations

from pytest_httpx import HTTPXMock

from .conftest import run


def test_off_a_terminal_tab_separated_rows(httpx_mock: HTTPXMock) -> None:
    result = run("sizes")

    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert rows[0] == "size\t1k\t2k\t4k"
    assert rows[1] == "1:1\t1024x1024 / 1254x1254\t2048x2048\t2880x2880"
    assert "16:9\t1536x864 / 1672x941\t2048x1152\t3840x2160" in rows
    assert rows[-1] == "9:21\t864x2016 / 821x1915\t1152x2688\t1648x3840"
    assert [row.split("\t")[0] for row in rows[1:]] == [
        "1:1", "3:2", "2:3", "4:3", "3:4", "5:4", "4:5", "16:9",
        "9:16", "2:1", "1:2", "3:1", "1:3", "21:9", "9:21",
    ]  # fmt: skip
    assert result.stderr == ""
    assert httpx_mock.get_requests() == []


def test_sizes_with_a_bad_base_url_still_works() -> None:
    result = run("--base-url", "http://api.test", "sizes")

    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 16


def test_version() -> None:
    from apimart_cli import __version__

    result = run("--version")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"apimart {__version__}\n"
