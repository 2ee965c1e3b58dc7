"""What a run left behind: the requests the sandbox saw and the rows the history kept;
and the sandbox driven directly, not through apimart."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from apimart_cli.client import certificate_context
from apimart_cli.sandbox import Fault, RecordedRequest, Sandbox
from tests.helpers.waiting import wait_until

SUBMIT = "/v1/images/generations"
TASKS = "/v1/tasks/"


def plain_client(**options: Any) -> httpx.Client:
    """An httpx client for a test to talk to a sandbox itself, as any HTTP client would.
    It shares the process's TLS context (`certificate_context`): a client that made
    its own would load the certificate bundle again, 20-40 ms of CPU each."""
    return httpx.Client(verify=certificate_context(), **options)


# One client for every request a test makes to the sandbox itself. No proxy from the
# environment comes between it and 127.0.0.1.
direct = plain_client(trust_env=False, timeout=60)


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
    lines = stderr.splitlines()
    assert [line for line in lines if line.startswith("{")] == [lines[-1]], stderr
    error = json.loads(lines[-1])["error"]
    assert error["exit_code"] == returncode, stderr
    assert error["message"] and isinstance(error["retryable"], bool)
    return dict(error)


# A batch's jobs file and what the batch left: its manifest, its images, its tasks.

MANIFEST = "batch-manifest.jsonl"


def write_jobs(folder: Path, *lines: str | dict[str, Any]) -> Path:
    """`folder/jobs.txt` with `lines`, each a line as it is or a job as JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "jobs.txt"
    text = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(text) + "\n")
    return path


def created(sandbox: Sandbox) -> Counter[str]:
    """How many tasks the server made for each prompt (a resent key makes none)."""
    return Counter(r.json["prompt"] for r in sandbox.submissions())


def png_names(folder: Path) -> list[str]:
    """The names of the PNG files in `folder`, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")


def latest_records(folder: Path) -> dict[int, dict[str, Any]]:
    """The last record of each job line in the batch manifest in `folder`."""
    records = {}
    for line in (folder / MANIFEST).read_text().splitlines():
        record = json.loads(line)
        records[record["line"]] = record
    return records


def latest_states(folder: Path) -> dict[int, str]:
    """The state each job line was last recorded in."""
    return {line: record["state"] for line, record in latest_records(folder).items()}


class Gate:
    """The sandbox's next `times` submissions held in flight for as long as a test wants:
    each stays `working` seconds, then for as long as the gate is shut. A request cut off
    by a kill stays in flight there, so that a run after it meets its key (409, strictly
    held); and a test knows that what it waits for cannot have ended meanwhile."""

    HELD = 99.0  # the delay of the "slow" fault that the gate turns into its own wait

    def __init__(
        self, sandbox: Sandbox, *, working: float = 0.0, shut: bool = False, times: int = 10**6
    ) -> None:
        self._open = threading.Event()
        if not shut:
            self._open.set()
        self._lock = threading.Lock()
        self.working = 0  # submissions in their `working` seconds
        self.held = 0  # submissions waiting at the shut gate
        real = sandbox.pause

        def pause(seconds: float | None) -> bool:
            if seconds != self.HELD:
                return real(seconds)
            with self._lock:
                self.working += 1
            going = real(working)
            with self._lock:
                self.working -= 1
                if self._open.is_set() or not going:
                    return going
                self.held += 1
            while not self._open.wait(0.05) and real(0):  # until open, or the sandbox stops
                pass
            with self._lock:
                self.held -= 1
            return real(0)

        sandbox.pause = pause  # type: ignore[method-assign]
        sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=self.HELD, times=times))

    @property
    def shut_now(self) -> bool:
        return not self._open.is_set()

    def shut_on_one_working(self) -> bool:
        """Shut, if a submission is in its working seconds (it then stays in flight)."""
        with self._lock:
            if self.working:
                self._open.clear()
            return self.working > 0

    def open(self) -> None:
        self._open.set()
