"""The history as a recovery tool: the command against the sandbox, in this process. The
README's pipeline that feeds the pending tasks to `status` is in
`tests/e2e/test_recovery.py`."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart


@pytest.fixture
def echoing_sandbox() -> Sandbox:
    """A sandbox whose failure reason quotes the prompt's marker: here, the key itself."""
    with Sandbox(SandboxConfig(duration=0.3, fail_word=API_KEY)) as server:
        yield server  # type: ignore[misc]


def test_a_key_the_service_echoes_in_a_failure_reason_is_never_written(
    echoing_sandbox: Sandbox, env: dict[str, str], isolated: Path, tmp_path: Path
) -> None:
    env = {**env, "APIMART_BASE_URL": echoing_sandbox.base_url}

    run = apimart("generate", f"a fox {API_KEY}", "--wait", "-o", "out", env=env, cwd=tmp_path)

    assert run.returncode == 1, run.stderr
    assert "[API key]" in run.stderr  # the reason, shown with the key cut out
    listed = apimart("history", "--json", env=env)
    [row] = [json.loads(line) for line in listed.lines]  # `apimart` checks no key is printed
    assert row["state"] == "failed"
    assert "[API key]" in row["error"]
    data = isolated / "data"
    for path in data.iterdir():
        assert API_KEY.encode() not in path.read_bytes(), path
    assert (data / "history.sqlite3").stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(data / "history.sqlite3") as db:
        dumped = "\n".join(db.iterdump())
    db.close()
    assert API_KEY not in dumped


def test_sandbox_tasks_are_marked_and_forgotten(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    # One through --sandbox, one through a sandbox named by APIMART_BASE_URL: both loopback.
    apimart("--sandbox", "generate", "a lighthouse", "--wait", "-o", "out", env=env, cwd=tmp_path)
    assert apimart("generate", "an owl", env=env).returncode == 0

    listed = apimart("history", "--json", env=env)
    assert [json.loads(line)["sandbox"] for line in listed.lines] == [True, True]

    forgot = apimart("history", "--forget-sandbox", env=env)

    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stderr == "Forgot 2 sandbox tasks.\n"
    assert apimart("history", env=env).stdout == ""
