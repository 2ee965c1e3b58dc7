"""Flows: the command run in this process against the sandbox on 127.0.0.1, over real
HTTP, with the user's environment (`tests/helpers/commands.py`). Where a promise needs
a process of its own (signals, pipes, terminals, the installed script), it is in
`tests/e2e/` instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.helpers.commands import user_environment


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.6)) as server:
        yield server


@pytest.fixture
def env(sandbox: Sandbox, isolated: Path) -> dict[str, str]:
    """The environment of a user pointed at the sandbox, with their own config and history."""
    return user_environment(sandbox.base_url, isolated)
