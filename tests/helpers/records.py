"""What a run left behind: the requests the sandbox saw and the rows the history kept;
and the sandbox driven directly, not through apimart."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from apimart_cli.sandbox import RecordedRequest, Sandbox
from tests.helpers.waiting import wait_until

SUBMIT = "/v1/images/generations"
TASKS = "/v1/tasks/"

# One client for every request a test makes to the sandbox itself: a new one each time
# (`httpx.get`) would load the certificate bundle again, about 30 ms of CPU a request.
# No proxy from the environment comes between it and 127.0.0.1.
direct = httpx.Client(trust_env=False, timeout=60)


def final_images(folder: Path) -> list[Path]:
    """The files in `folder` under a final name (not hidden, as a part being written is)."""
    return sorted(p for p in folder.glob("*") if not p.name.startswith("."))


def leftovers(folder: Path) -> list[Path]:
    """The parts of downloads left unfinished in `folder`."""
    return sorted(folder.glob(".*.part")) if folder.exists() else []


def posts(sandbox: Sandbox) -> list[RecordedRequest]:
    """Every POST to the generation endpoint that reached the sandbox, accepted or not."""
    return [r for r in sandbox.requests if r.method == "POST" and r.path == SUBMIT]


def history_rows(home: Path) -> list[sqlite3.Row]:
    """Every row of the history in `home`, oldest first."""
    db = sqlite3.connect(home / "data" / "history.sqlite3")
    try:
        db.row_factory = sqlite3.Row
        return db.execute("SELECT * FROM tasks ORDER BY id").fetchall()
    finally:
        db.close()


def submit_direct(sandbox: Sandbox, prompt: str = "a fox", **fields: object) -> str:
    """A task made in the sandbox without apimart; its id."""
    reply = direct.post(
        f"{sandbox.base_url}{SUBMIT}",
        json={"model": "gpt-image-2", "prompt": prompt, **fields},
        headers={"Authorization": "Bearer x"},
    )
    return str(reply.json()["data"][0]["task_id"])


def task_data(sandbox: Sandbox, task_id: str) -> dict[str, Any]:
    """The sandbox's reply about a task (asked directly, not through apimart)."""
    reply = direct.get(f"{sandbox.base_url}{TASKS}{task_id}", headers={"Authorization": "Bearer x"})
    data: dict[str, Any] = reply.json()["data"]
    return data


def wait_completed(sandbox: Sandbox, task_id: str) -> dict[str, Any]:
    """Once the sandbox says the task is completed: its reply."""
    wait_until(
        lambda: task_data(sandbox, task_id)["status"] == "completed",
        what=f"{task_id} completing",
    )
    return task_data(sandbox, task_id)


def image_of(sandbox: Sandbox, task_id: str) -> bytes:
    """The bytes of a completed task's first image, fetched directly from the sandbox."""
    data = wait_completed(sandbox, task_id)
    return direct.get(data["result"]["images"][0]["url"][0]).content


def everything_in(folder: Path) -> list[str]:
    """The name of every file in `folder`, hidden ones too, sorted."""
    return sorted(path.name for path in folder.iterdir())


def error_of(stderr: str, returncode: int) -> dict[str, Any]:
    """A `--json` run's error object: the last line of standard error, and the only JSON
    on it; its exit code must be the run's."""
    import json

    lines = stderr.splitlines()
    assert [line for line in lines if line.startswith("{")] == [lines[-1]], stderr
    error = json.loads(lines[-1])["error"]
    assert error["exit_code"] == returncode, stderr
    assert error["message"] and isinstance(error["retryable"], bool)
    return dict(error)
