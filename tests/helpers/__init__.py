"""What many tests share, each in one place: `commands` (the command run in this process
against the sandbox, as the flows do, and the user's environment), `clocks` (a fake
clock), `images` (PNG bytes), `waiting` (waiting on conditions, and a guard against
hangs), `records` (the requests the sandbox saw, the rows the history kept, the sandbox
driven directly), `scripted` (an API for the replies the sandbox's faults cannot make),
`terminal` (a real terminal in tmux), `readme` (the README's command lines),
`viewers` (a fresh look for image viewers) and `polling_sim` (a simulation of waiting on
many tasks)."""

from importlib.util import find_spec

import pytest

# The tests of the MCP server, skipped without the mcp extra. Found, not imported: a
# worker that runs none of them does not pay mcp's half-second import at collection.
needs_mcp = pytest.mark.skipif(find_spec("mcp") is None, reason="the mcp extra is not installed")
