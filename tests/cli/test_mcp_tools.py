"""The MCP tools build their client as the commands do (`app.make_client`): retries
are told, and an unreachable service names the setting its base URL came from."""

from __future__ import annotations

import socket

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.errors import ApimartError
from tests.helpers import needs_mcp

from .conftest import API, AUTH, KEY

pytestmark = needs_mcp


def test_a_retry_is_told_on_standard_error(
    httpx_mock: HTTPXMock, capsys: pytest.CaptureFixture[str]
) -> None:
    from apimart_cli.mcp_server import Tools

    url = f"{API}/v1/balance"
    httpx_mock.add_response(url=url, status_code=503, headers={"Retry-After": "0"})
    httpx_mock.add_response(url=url, match_headers=AUTH, json={"remain_balance": 5})

    reply = Tools(api_key=KEY, base_url=API).balance(timeout=30)

    assert reply["remain_balance"] == 5
    err = capsys.readouterr().err
    assert "Retrying in" in err and KEY not in err


def test_an_unreachable_service_names_where_its_base_url_came_from() -> None:
    from apimart_cli.mcp_server import Tools

    with socket.socket() as probe:  # a port on this machine that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(ApimartError) as raised:
        Tools(api_key=KEY, base_url=f"http://127.0.0.1:{port}").balance(timeout=30)

    assert "comes from --base-url" in str(raised.value.hint)
