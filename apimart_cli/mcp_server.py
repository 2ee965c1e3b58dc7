"""The tool's commands for AI agents: a Model Context Protocol server on stdin/stdout.

Imported only by `apimart mcp` (it needs the optional `mcp` extra). Each tool
calls the library the commands call, so an agent gets the same promises a person
does: every submission in the history before its id is returned, no paid request
resent blindly, the limits checked before anything is sent, the deadlines, and
the API key in no reply. A failure is a tool result with `isError` set, carrying
the message and hint a person would see and the same error object `--json`
prints; it never ends the server.

The library is blocking, so each call runs on a worker thread; progress comes
back to the agent as the protocol's progress notifications, and a cancelled
call stops waiting at once (the work in flight ends at its own deadline).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field

from apimart_cli import __version__, console
from apimart_cli.errors import ApimartError

INSTRUCTIONS = """\
Generates images with APIMart's image models (gpt-image-2 by default) and saves
them to disk. `generate` submits a task, waits for it and returns the saved
files' paths; a task id is kept in the local history before it is returned, so
nothing paid for is lost: `history` with `pending` lists what is unfinished and
`wait` resumes it. An error result's `error` object says whether trying again
may help (`retryable`) and, for a submission whose outcome is unknown, its
`idempotency_key`: never resubmit such a prompt without checking `history`.
"""


class Tools:
    """What the tools do, apart from the protocol: plain functions of plain values.

    `api_key` and `base_url` are the server's own flags (`apimart --api-key ... mcp`);
    the environment and the config file supply the rest, as for any command.
    """

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None) -> None:
        self._api_key = api_key
        self._base_url = base_url

    def _settings(self, output_dir: str | None = None) -> Any:
        from apimart_cli.settings import resolve

        return resolve(api_key=self._api_key, base_url=self._base_url, output_dir=output_dir)

    def _client(self, settings: Any) -> Any:
        from apimart_cli.client import Client

        key = settings.require_key()
        console.hide(key)
        return Client(settings.base_url, key)

    def balance(self) -> dict[str, Any]:
        with self._client(self._settings()) as client:
            return dict(client.balance())

    def history(self, limit: int, pending: bool) -> dict[str, Any]:
        from apimart_cli.history import History

        with History.open() as history:
            records = history.list(pending_only=pending, limit=limit)
        return {
            "tasks": [
                {
                    "task_id": record.task_id,
                    "state": record.state,
                    "prompt": record.prompt,
                    "created_at": record.created_at,
                    "cost": record.cost,
                    "files": list(record.files),
                    "error": record.error,
                    "idempotency_key": record.idempotency_key,
                }
                for record in records
            ]
        }


def _result(data: dict[str, Any]) -> CallToolResult:
    """A tool's reply: the object as structured content, and as JSON text for older clients."""
    text = console.redact(json.dumps(data, ensure_ascii=False, indent=2))
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=json.loads(text)
    )


def _failure(error: ApimartError) -> CallToolResult:
    """An error as a person sees it (message, then hint) and as `--json` prints it."""
    lines = [f"Error: {error.message}", *([error.hint] if error.hint else [])]
    text = console.redact("\n".join(lines))
    data = json.loads(console.redact(json.dumps({"error": error.as_data()}, ensure_ascii=False)))
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=data, is_error=True
    )


async def _call(function: Callable[[], dict[str, Any]]) -> CallToolResult:
    """Run `function` on a worker thread; its result or its error, as the agent reads them."""
    try:
        return _result(await anyio.to_thread.run_sync(function, abandon_on_cancel=True))
    except ApimartError as error:
        return _failure(error)
    except Exception as error:  # a bug: one line for the agent, never a crash of the server
        return _failure(ApimartError(f"Internal error ({type(error).__name__}). Please report it."))


READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True)


def build_server(tools: Tools) -> MCPServer:
    server = MCPServer("apimart", version=__version__, instructions=INSTRUCTIONS)

    @server.tool(annotations=READ_ONLY)
    async def balance() -> CallToolResult:
        """The API key's remaining and used balance, as the service reports it."""
        return await _call(tools.balance)

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def history(
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many tasks.")] = 20,
        pending: Annotated[bool, Field(description="Only the unfinished tasks.")] = False,
    ) -> CallToolResult:
        """Tasks submitted from this machine, newest first: id, state, prompt, cost, files.

        A task with no id and an idempotency key is a submission whose outcome is
        unknown: check before submitting that prompt again.
        """
        return await _call(functools.partial(tools.history, limit, pending))

    return server


def serve(*, api_key: str | None = None, base_url: str | None = None) -> None:
    """Serve until the client closes standard input."""
    build_server(Tools(api_key=api_key, base_url=base_url)).run("stdio")
