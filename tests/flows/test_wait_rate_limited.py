"""Waiting holds up when the service rate limits its status requests: the command against
the sandbox, in this process."""

from __future__ import annotations

from pathlib import Path

from apimart_cli.sandbox import Fault, Sandbox
from tests.helpers.commands import run as apimart
from tests.helpers.images import png_size
from tests.helpers.records import TASKS, submit_direct


def test_polls_rate_limited_past_their_retries_never_fail_the_wait(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    """Nine 429s in a row outlast one request's six tries: the task is polled again later."""
    task_id = submit_direct(sandbox)
    sandbox.inject(Fault("status", path=TASKS, status=429, retry_after="0", times=9))
    run = apimart("wait", task_id, "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    [path] = run.lines
    assert png_size(tmp_path / path) == (1024, 1024)
    refused = [r for r in sandbox.requests if r.path.startswith(TASKS) and r.status == 429]
    assert len(refused) == 9
