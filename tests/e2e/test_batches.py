"""`apimart batch` as a process that is signalled midway: killed, or interrupted with
Ctrl-C once and twice; each rerun finishes the batch without paying twice. The rest of
batch is in `tests/flows/test_batches.py`."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.e2e.conftest import COMMAND
from tests.helpers.commands import run as apimart
from tests.helpers.records import (
    MANIFEST,
    SUBMIT,
    Gate,
    created,
    latest_records,
    latest_states,
    leftovers,
    write_jobs,
)
from tests.helpers.records import png_names as images
from tests.helpers.waiting import wait_until


def submitted_lines(folder: Path) -> int:
    manifest = folder / MANIFEST
    return manifest.read_text().count('"state": "submitted"') if manifest.exists() else 0


def in_flight(sandbox: Sandbox) -> int:
    """Submissions the server is still working on (no reply sent yet)."""
    return sum(r.status is None for r in sandbox.requests if r.path == SUBMIT)


def test_a_batch_killed_halfway_resumes_without_sending_anything_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    prompts = [f"bear {i}" for i in range(8)]
    jobs = write_jobs(tmp_path, *prompts)
    out = tmp_path / "out"
    argv = [*COMMAND, "batch", str(jobs), "-o", str(out), "--concurrency", "2", "--interval", "0.2"]
    with Sandbox(SandboxConfig(duration=0.6)) as sandbox:
        # The first submission hangs: the kill comes while it is in flight.
        gate = Gate(sandbox, shut=True, times=1)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        process = subprocess.Popen(argv, env=user, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: submitted_lines(out) >= 3, what="three submitted jobs")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        first = latest_states(out)
        assert "submitting" in first.values()  # the slow one
        assert len(first) < len(prompts) or "completed" not in set(first.values())
        gate.open()
        wait_until(lambda: in_flight(sandbox) == 0)  # the server ends the request cut off
        run = apimart("batch", str(jobs), "-o", str(out), "--interval", "0.2", env=user)
    assert run.returncode == 0, run.stderr
    assert "Resuming from" in run.stderr
    assert created(sandbox) == dict.fromkeys(prompts, 1)
    keys = Counter(r.headers["idempotency-key"] for r in sandbox.requests if r.path == SUBMIT)
    assert 2 in keys.values()  # the cut-off submission was resent with its key
    task_ids = {r.task_id for r in sandbox.submissions()}
    assert {name.rsplit("_", 1)[0] for name in images(out)} == task_ids
    assert len(images(out)) == len(prompts)
    assert leftovers(out) == []


def test_ctrl_c_records_what_was_sent_and_a_rerun_finishes(
    env: dict[str, str], tmp_path: Path
) -> None:
    prompts = [f"wolf {i}" for i in range(8)]
    jobs = write_jobs(tmp_path, *prompts)
    out = tmp_path / "out"
    argv = [*COMMAND, "batch", str(jobs), "-o", str(out), "--interval", "0.2"]
    # No task ends before the sandbox's clock is moved on: the batch cannot have finished
    # when the Ctrl-C comes, however slowly the machine runs it.
    with Sandbox(SandboxConfig(duration=3600, submit_rate=3)) as sandbox:
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        process = subprocess.Popen(
            argv, env=user, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        wait_until(lambda: submitted_lines(out) >= 2, what="two submitted jobs")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 130, stderr
        assert "Run the same command again" in stderr and "Traceback" not in stderr
        sandbox.advance(3600)  # the tasks sent end; those sent from now on, in a moment
        sandbox.configure(duration=0.6, submit_rate=None)  # the rerun need not be slowed
        run = apimart("batch", str(jobs), "-o", str(out), "--interval", "0.2", env=user)
    assert run.returncode == 0, run.stderr
    assert created(sandbox) == dict.fromkeys(prompts, 1)
    assert len(images(out)) == len(prompts) and leftovers(out) == []


def test_a_second_ctrl_c_quits_at_once_and_a_rerun_resends_with_the_same_keys(
    env: dict[str, str], tmp_path: Path
) -> None:
    prompts = [f"lynx {i}" for i in range(6)]
    jobs = write_jobs(tmp_path, *prompts)
    out = tmp_path / "out"
    argv = [*COMMAND, "batch", str(jobs), "-o", str(out), "--interval", "0.2"]
    with Sandbox(SandboxConfig(duration=0.6)) as sandbox:
        # Four submissions (the concurrency) hang until the gate opens, after the process
        # quit: both Ctrl-Cs come while they are in flight, and it ends before they do.
        gate = Gate(sandbox, shut=True, times=4)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        process = subprocess.Popen(
            argv, env=user, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        said: list[str] = []
        recording = threading.Event()  # the first Ctrl-C is being handled

        def read_stderr() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                said.append(line)
                if "recording the submissions on their way" in line:
                    recording.set()

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        wait_until(lambda: in_flight(sandbox) == 4)
        process.send_signal(signal.SIGINT)
        assert recording.wait(20), "".join(said)  # a condition, not a sleep that races
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        assert in_flight(sandbox) == 4, "".join(said)  # it quit before the hung requests ended
        reader.join(10)
        stderr = "".join(said)
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr and "Run the same command again" in stderr
        records = latest_records(out)
        sending = [r for r in records.values() if r["state"] == "submitting"]
        assert len(sending) == 4 and all(r["idempotency_key"] for r in sending)
        assert {r["state"] for r in records.values()} == {"submitting"}  # nothing "unknown"
        gate.open()
        wait_until(lambda: in_flight(sandbox) == 0)  # the server makes the four tasks
        assert len(sandbox.submissions()) == 4
        run = apimart("batch", str(jobs), "-o", str(out), "--interval", "0.2", env=user)
    assert run.returncode == 0, run.stderr
    assert "Resuming from" in run.stderr
    assert created(sandbox) == dict.fromkeys(prompts, 1)  # the four resent got their tasks
    keys = Counter(r.headers["idempotency-key"] for r in sandbox.requests if r.path == SUBMIT)
    assert sorted(keys.values()) == [1, 1, 2, 2, 2, 2]
    assert len(images(out)) == len(prompts) and leftovers(out) == []
