"""`--json` errors of a signal, end to end: the real command stopped by SIGINT or
SIGTERM names the unfinished tasks in its error object (130, 143). The other exit
codes' error objects are in `tests/flows/test_json_errors.py`."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox
from tests.e2e.conftest import finish, start
from tests.helpers.commands import run as apimart
from tests.helpers.records import error_of
from tests.helpers.waiting import wait_until as until


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_130_and_143_name_the_unfinished_tasks(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    sandbox.configure(duration=600)
    [task_id] = apimart("generate", "a fox", env=env).lines
    process = start("wait", task_id, "--json", env=env, cwd=tmp_path)
    until(lambda: any(r.path.startswith(f"/v1/tasks/{task_id}") for r in sandbox.requests))

    process.send_signal(sig)
    _, stderr = finish(process)

    assert process.returncode == code, stderr
    error = error_of(stderr, code)
    assert error["task_ids"] == [task_id] and error["retryable"] is True
