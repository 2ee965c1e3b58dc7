"""Flows: the command run in this process against the sandbox on 127.0.0.1, over real
HTTP, with the user's environment (`tests/helpers/commands.py`). Where a promise needs
a process of its own (signals, pipes, terminals, the installed script), it is in
`tests/e2e/` instead."""

from tests.helpers.commands import env as env
from tests.helpers.commands import sandbox as sandbox
