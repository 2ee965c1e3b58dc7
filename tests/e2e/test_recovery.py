"""The history as a recovery tool, end to end: the README's pipeline from the pending
tasks to `status`, through real pipes. The rest of it is in `tests/flows/test_recovery.py`."""

from __future__ import annotations

import json
from pathlib import Path

from apimart_cli.sandbox import Sandbox
from tests.e2e.conftest import png_size, shell
from tests.helpers.commands import run as apimart
from tests.helpers.records import wait_completed


def test_status_seeing_a_task_completed_does_not_hide_its_unsaved_images(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    # The README's own pipeline: look at what is pending, then resume it.
    task_id = apimart("generate", "a fox", "--size", "1:1", env=env).stdout.strip()
    wait_completed(sandbox, task_id)
    looked = shell("apimart history --pending | cut -f1 | apimart status", env=env)
    assert looked.returncode == 0, looked.stderr
    assert looked.stdout.split("\t")[:2] == [task_id, "completed"]

    # Completed, but its image was never saved and its URL still works: still pending.
    pending = apimart("history", "--pending", "--json", env=env)
    [listed] = [json.loads(line) for line in pending.lines]
    assert (listed["task_id"], listed["state"], listed["saved"]) == (task_id, "completed", False)

    run = apimart("wait", "--pending", "-o", "out", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    [saved] = run.lines
    assert Path(saved).name == f"{task_id}_0.png"
    assert png_size(tmp_path / saved)[0] > 0
    # Saved now: nothing is pending, and the history has the file's absolute path.
    assert apimart("history", "--pending", env=env).stdout == ""
    [row] = [json.loads(line) for line in apimart("history", "--json", env=env).lines]
    assert row["saved"] is True
    assert row["files"] == [str(tmp_path / "out" / f"{task_id}_0.png")]
