"""The MCP server as an agent reads it, through the SDK's own client (in process),
against the sandbox: progress, failures, argument errors, descriptions, folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.helpers import needs_mcp

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

pytestmark = needs_mcp

KEY = "sk-mcp-test-0123456789"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=1.5, download_rate=2_000_000, noise=True)) as server:
        yield server


def calls(
    sandbox: Sandbox, *requests: tuple[str, dict[str, Any]], progress: list[Any]
) -> list[Any]:
    import anyio
    from mcp import Client

    server = serving(sandbox)

    async def main() -> list[Any]:
        async def heard(done: float, total: float | None, message: str | None) -> None:
            progress.append((done, total, message))

        async with Client(server) as client:
            return [
                await client.call_tool(name, arguments, progress_callback=heard)
                for name, arguments in requests
            ]

    return anyio.run(main)


def serving(sandbox: Sandbox) -> MCPServer:
    from apimart_cli.mcp_server import Tools, build_server

    return build_server(Tools(api_key=KEY, base_url=sandbox.base_url))


def test_progress_notifications_carry_a_real_fraction_as_the_work_moves(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    heard: list[Any] = []
    (result,) = calls(
        sandbox,
        ("generate", {"prompt": "a fox", "n": 2, "output_dir": str(tmp_path / "out")}),
        progress=heard,
    )
    assert not result.is_error, result.content
    fractions = [done / total for done, total, _ in heard if total]
    assert fractions == sorted(fractions)  # never backwards
    between = {round(f, 2) for f in fractions if 0 < f < 1}
    assert len(between) >= 3, heard  # not 0 for the whole wait, then a jump to 1
    assert fractions[-1] == 1.0


def test_a_status_call_whose_every_task_failed_is_an_error(sandbox: Sandbox) -> None:
    (result,) = calls(sandbox, ("status", {"task_ids": ["task_unknown_1"]}), progress=[])
    assert result.is_error
    error = result.structured_content["error"]
    assert error["task_ids"] == ["task_unknown_1"] and error["exit_code"] == 1
    assert result.structured_content["tasks"][0]["task_id"] == "task_unknown_1"


def test_bad_arguments_come_back_as_the_same_error_object(sandbox: Sandbox) -> None:
    (result,) = calls(sandbox, ("generate", {"prompt": "a fox", "n": "many"}), progress=[])
    assert result.is_error
    error = result.structured_content["error"]
    assert error["exit_code"] == 2 and error["retryable"] is False
    assert error["message"].startswith("Bad arguments to `generate`: n: ")
    assert "pydantic" not in error["message"] and "validation error" not in error["message"]
    assert not [r for r in sandbox.requests if r.method == "POST"]  # nothing sent


def test_hints_name_the_tools_arguments_not_flags_they_lack(sandbox: Sandbox) -> None:
    (result,) = calls(sandbox, ("generate", {"prompt": "a fox", "size": "16x9"}), progress=[])
    assert result.is_error
    error = result.structured_content["error"]
    assert "--" not in error["message"] + error.get("hint", ""), error
    from apimart_cli.mcp_server import for_agents

    assert for_agents("Use --param quality=high; --force-size sends it.") == (
        "Use `params` quality=high."
    )


def test_descriptions_have_no_docstring_indentation(sandbox: Sandbox) -> None:
    import anyio
    from mcp import Client

    server = serving(sandbox)

    async def main() -> Any:
        async with Client(server) as client:
            return await client.list_tools()

    for tool in anyio.run(main).tools:
        assert tool.description
        assert not any(line.startswith(" ") for line in tool.description.splitlines()), tool.name


def test_without_output_dir_images_go_to_the_pictures_folder(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pictures = tmp_path / "Pictures"
    monkeypatch.setattr("platformdirs.user_pictures_dir", lambda: str(pictures))
    (result,) = calls(sandbox, ("generate", {"prompt": "a fox"}), progress=[])
    assert not result.is_error, result.content
    [task] = result.structured_content["tasks"]
    assert [Path(f).parent for f in task["files"]] == [pictures / "apimart"]


def test_history_says_which_base_url_each_task_went_to(sandbox: Sandbox) -> None:
    _, history = calls(
        sandbox,
        ("generate", {"prompt": "a fox", "wait": False}),
        ("history", {"limit": 5}),
        progress=[],
    )
    [task] = history.structured_content["tasks"]
    assert task["base_url"] == sandbox.base_url and task["sandbox"] is True


@pytest.mark.parametrize(
    "missing",
    [
        "mcp",  # the extra not installed
        "mcp.server.mcpserver",  # an mcp too old to have it
        "starlette",  # a module the SDK needs, gone from a broken install
    ],
)
def test_without_the_sdk_or_what_it_needs_it_says_what_to_install(missing: str) -> None:
    import sys

    from typer.testing import CliRunner

    from apimart_cli.cli import app_for

    saved = dict(sys.modules)
    try:
        for name in list(sys.modules):
            if name == "apimart_cli.mcp_server" or name.split(".")[0] in ("mcp", "starlette"):
                del sys.modules[name]
        sys.modules[missing] = None  # type: ignore[assignment]  # `import` of it fails
        result = CliRunner().invoke(app_for(["mcp"]), ["mcp"], prog_name="apimart")
    finally:
        sys.modules.clear()
        sys.modules.update(saved)

    assert result.exit_code == 2, result.output
    assert "needs the mcp extra" in result.stderr and "internal error" not in result.stderr
    assert "mcp>=2.3,<3" in result.stderr
    assert "Traceback" not in result.output
