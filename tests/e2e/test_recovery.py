"""The history as a recovery tool, end to end: the real command against the sandbox."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.e2e.conftest import API_KEY, apimart, png_size, shell
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
