"""`apimart mcp` logs nothing with the key: the SDK's INFO logging and httpx's request
lines are off, and what is logged is redacted. In a process of its own, as logging is
set up once per process."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import needs_mcp

pytestmark = needs_mcp

KEY = "sk-mcp-log-4Rt8Wq2Zx9Lp"

SCRIPT = f"""
import logging
from mcp.server.mcpserver import MCPServer

def run(self, transport):  # stands in for serving: log as the SDK and httpx do
    logging.getLogger("httpx").info('HTTP Request: GET https://img.test/a.png?sig={KEY} "200 OK"')
    logging.getLogger("mcp.server.lowlevel").info("Processing request of type CallToolRequest")
    logging.getLogger("mcp.server").warning("the client sent {KEY}")

MCPServer.run = run
from apimart_cli import mcp_server, secrets
secrets.hide("{KEY}")
mcp_server.serve(mcp_server.Tools())
"""


def test_mcp_writes_no_request_lines_and_no_key_to_standard_error() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert KEY[:8] not in done.stderr
    assert "HTTP Request" not in done.stderr
    assert "Processing request" not in done.stderr
    assert "the client sent [API key]" in done.stderr
