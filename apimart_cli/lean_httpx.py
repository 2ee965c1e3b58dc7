"""httpx without its command-line client: the one place the tool keeps it out.

`import httpx` (0.28) also imports `httpx._main`, httpx's own command-line
client, which loads rich's console and progress, pygments and click: some 40 ms
of a one-line command's start-up, for code the tool never runs. httpx already
copes with that module missing (its `httpx.main` then only says how to install
it), so `client.py` marks it missing while httpx is imported (`keep_out_cli`)
and lifts the mark right after (`allow_cli`), so that a later explicit
`import httpx._main` still works. Where httpx is imported already, or no longer
imports its client, both do nothing harmful.
"""

from __future__ import annotations

import sys

_CLI = "httpx._main"


def keep_out_cli() -> None:
    """Before the first `import httpx`: make it skip its command-line client."""
    if "httpx" not in sys.modules:
        sys.modules.setdefault(_CLI, None)  # type: ignore[arg-type]


def allow_cli() -> None:
    """After it: lift the mark, so that importing the client on purpose still works."""
    if _CLI in sys.modules and sys.modules[_CLI] is None:
        del sys.modules[_CLI]
