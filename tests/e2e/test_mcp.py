"""`apimart mcp` started as an agent starts it, the MCP SDK's own client talking to it
over its standard input and output, against the sandbox: the transport end to end. What
the tools do is in `tests/flows/test_mcp.py`, with the client connected in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from tests.e2e.conftest import API_KEY, COMMAND
from tests.helpers import needs_mcp

pytestmark = needs_mcp


@asynccontextmanager
async def connected(env: Mapping[str, str], cwd: Path, errlog: Any) -> AsyncIterator[Any]:
    """A client session with `apimart mcp`, started as an agent starts it."""
    import mcp

    params = mcp.StdioServerParameters(
        command=COMMAND[0], args=[*COMMAND[1:], "mcp"], env=dict(env), cwd=str(cwd)
    )
    async with (
        mcp.stdio_client(params, errlog=errlog) as (read, write),
        mcp.ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def text(result: Any) -> str:
    return "".join(block.text for block in result.content)


def test_generate_waits_saves_and_says_what_it_cost(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    updates: list[tuple[float, float | None, str | None]] = []

    async def main() -> tuple[Any, Any, Any, Any]:
        async def progress(done: float, total: float | None, message: str | None) -> None:
            updates.append((done, total, message))

        with (tmp_path / "err.log").open("w") as errlog:
            async with connected(env, tmp_path, errlog) as session:
                tools = await session.list_tools()
                result = await session.call_tool(
                    "generate",
                    {"prompt": "a lighthouse", "size": "1:1", "output_dir": str(out)},
                    progress_callback=progress,
                )
                task_ids = (result.structured_content or {}).get("task_ids", [])
                history = await session.call_tool("history", {})
                status = await session.call_tool("status", {"task_ids": task_ids})
                return tools, result, history, status

    tools, result, history, status = anyio.run(main)

    assert "generate" in {tool.name for tool in tools.tools}
    assert not result.is_error, text(result)
    data = result.structured_content
    (task_id,) = data["task_ids"]
    (task,) = data["tasks"]
    assert task["task_id"] == task_id and task["status"] == "completed"
    (path,) = task["files"]
    assert Path(path).parent == out and Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert data["cost"] == task["cost"] and task["cost"] > 0
    assert updates, "progress notifications reach an agent that asked for them"
    assert any(message and "completed" in message for _, _, message in updates)
    assert API_KEY not in str(updates)

    assert history.structured_content["tasks"][0]["task_id"] == task_id
    assert status.structured_content["tasks"][0]["status"] == "completed"
    for said in (result, history, status):
        assert API_KEY not in said.model_dump_json()
    assert API_KEY not in (tmp_path / "err.log").read_text()
