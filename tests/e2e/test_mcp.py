"""`apimart mcp` driven by the MCP SDK's own client, as an agent drives it, against the sandbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import API_KEY, COMMAND

mcp = pytest.importorskip("mcp", reason="the mcp extra is not installed")
anyio = pytest.importorskip("anyio")


@asynccontextmanager
async def connected(env: Mapping[str, str], cwd: Path, errlog: Any) -> AsyncIterator[Any]:
    """A client session with `apimart mcp`, started as an agent starts it."""
    params = mcp.StdioServerParameters(
        command=COMMAND[0], args=[*COMMAND[1:], "mcp"], env=dict(env), cwd=str(cwd)
    )
    async with (
        mcp.stdio_client(params, errlog=errlog) as (read, write),
        mcp.ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def call(
    env: Mapping[str, str], cwd: Path, tmp_path: Path, *calls: tuple[str, dict[str, Any]]
) -> list[Any]:
    """Each (tool, arguments) in one session; their results, and no key anywhere."""

    async def main() -> list[Any]:
        with (tmp_path / "mcp-stderr.log").open("w") as errlog:
            async with connected(env, cwd, errlog) as session:
                return [await session.call_tool(name, arguments) for name, arguments in calls]

    results: list[Any] = anyio.run(main)
    for result in results:
        assert API_KEY not in result.model_dump_json()
    assert API_KEY not in (tmp_path / "mcp-stderr.log").read_text()
    return results


def text(result: Any) -> str:
    return "".join(block.text for block in result.content)


def test_the_tools_an_agent_sees(env: dict[str, str], tmp_path: Path) -> None:
    async def main() -> Any:
        with (tmp_path / "err.log").open("w") as errlog:
            async with connected(env, tmp_path, errlog) as session:
                return await session.list_tools()

    tools = {tool.name: tool for tool in anyio.run(main).tools}

    assert {"balance", "history"} <= set(tools)
    for tool in tools.values():
        assert tool.description, f"{tool.name} has no description an agent can act on"
        assert tool.input_schema["type"] == "object"


def test_balance(env: dict[str, str], tmp_path: Path) -> None:
    (result,) = call(env, tmp_path, tmp_path, ("balance", {}))

    assert not result.is_error, text(result)
    assert result.structured_content["remain_balance"] is not None
    assert json.loads(text(result)) == result.structured_content


def test_a_failure_is_a_result_with_the_error_as_data(env: dict[str, str], tmp_path: Path) -> None:
    env = {key: value for key, value in env.items() if key != "APIMART_API_KEY"}

    balance, history = call(env, tmp_path, tmp_path, ("balance", {}), ("history", {}))

    assert balance.is_error
    assert text(balance).startswith("Error: No API key.\n")
    assert balance.structured_content["error"]["exit_code"] == 3
    assert not history.is_error, "the server goes on after a failure"


def test_the_key_echoed_by_the_service_never_reaches_the_agent(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    from apimart_cli.sandbox import Fault

    sandbox.inject(Fault("echo_key", path="/v1/balance", status=401))

    (result,) = call(env, tmp_path, tmp_path, ("balance", {}))  # `call` checks for the key

    assert result.is_error
    assert result.structured_content["error"]["exit_code"] == 3
    assert "[API key]" in text(result), "the echo arrived, with the key cut out"
