"""`apimart mcp`: the tool's commands for AI agents, over the Model Context Protocol."""

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.errors import UsageError


@handles_errors
def mcp(ctx: typer.Context) -> None:
    """Serve the commands to AI agents over MCP, on stdin and stdout.

    Needs the mcp extra: from a clone, pip install '.[mcp]' (or pipx install
    '.[mcp]'; into an existing pipx install, pipx inject apimart-cli 'mcp>=2.3,<3').
    Register it with an agent as the command `apimart` with the argument `mcp`:

    \b
        claude mcp add apimart -- apimart mcp
    """
    try:
        # Only here: the SDK (and pydantic under it) is an optional extra, and heavy.
        from apimart_cli.mcp_server import Tools, serve
    except ImportError as error:
        # Not only the SDK itself: any module it needs (starlette, ...) missing from a
        # broken install, or an SDK too old to have `mcp.server.mcpserver`.
        module = error.name
        if module is None or module.split(".")[0] == "apimart_cli":
            raise
        missing = "" if module == "mcp" else f" (or not whole: no module {module})"
        raise UsageError(
            f"`apimart mcp` needs the mcp extra, which is not installed{missing}.",
            "Install it from a clone: pip install '.[mcp]' (pipx: pipx install '.[mcp]', "
            "or pipx inject apimart-cli 'mcp>=2.3,<3').",
        ) from None
    app = state(ctx)
    # Its notes on standard error as any command's: --quiet and --verbose hold.
    debug = console.debug if app.verbose else None
    serve(
        Tools(
            api_key=app.api_key,
            base_url=app.base_url,
            info=console.info,
            warn=console.warn,
            debug=debug,
        )
    )
