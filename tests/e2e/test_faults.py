"""Faults tried end to end, where a real process matters: several commands at once, a
command killed or interrupted midway, a standard input left open. The other faults are
tried in this process, in `tests/flows/test_faults.py`.

Every test checks the exit code, that no half-written file sits under a final name,
and that the key never appears in the output and no traceback does.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from apimart_cli import provenance
from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.e2e.conftest import API_KEY, COMMAND
from tests.helpers.commands import run as apimart
from tests.helpers.records import (
    TASKS,
    direct,
    final_images,
    history_rows,
    leftovers,
    submit_direct,
    wait_completed,
)
from tests.helpers.waiting import wait_until

# A fault that never ends on its own within a run: a command that exits at all was not
# held by it.
ENDLESS = 3600.0


def test_eight_generate_processes_at_once_are_all_recorded(
    sandbox: Sandbox, env: dict[str, str], isolated: Path, tmp_path: Path
) -> None:
    processes = [
        subprocess.Popen(
            [*COMMAND, "generate", f"prompt {i}"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=60) for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, [err for _, err in outputs]
    printed = {out.strip() for out, _ in outputs}
    recorded = {row["task_id"] for row in history_rows(isolated)}
    assert len(printed) == 8 and printed == recorded


@pytest.mark.parametrize("metadata", [False, True])
def test_download_killed_midway_resumes_byte_identical(
    env: dict[str, str], tmp_path: Path, metadata: bool
) -> None:
    """Killed and run again, the image is the host's, byte for byte (with the provenance
    chunk after its IHDR where it is stamped: put in by the first run, the rest resumed)."""
    flags = [] if metadata else ["--no-metadata"]
    with Sandbox(SandboxConfig(duration=0.1, noise=True, download_rate=400_000)) as sandbox:
        task_id = submit_direct(sandbox, size="640x640")  # about 1.2 MB: 3 s at this rate
        data = wait_completed(sandbox, task_id)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        out = tmp_path / "out"
        process = subprocess.Popen(
            [*COMMAND, "download", task_id, "-o", str(out), *flags],
            env=user,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        part = out / f".{task_id}_0.part"
        wait_until(lambda: part.exists() and part.stat().st_size > 100_000, what="a part file")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert part.exists() and final_images(out) == []
        sandbox.configure(download_rate=None)  # the resume need not crawl, nor this copy
        expected = direct.get(data["result"]["images"][0]["url"][0]).content  # type: ignore[index]
        run = apimart("download", task_id, "-o", str(out), *flags, env=user)
    assert run.returncode == 0, run.stderr
    [path] = run.lines
    saved = Path(path).read_bytes()
    if metadata:
        assert provenance.read_file(Path(path)) is not None
        end = provenance.IHDR_END
        chunk = 12 + int.from_bytes(saved[end : end + 4], "big")
        saved = saved[:end] + saved[end + chunk :]
    assert hashlib.sha256(saved).digest() == hashlib.sha256(expected).digest()
    assert leftovers(out) == []
    assert any("range" in r.headers for r in sandbox.requests if r.origin == "image")


def test_ctrl_c_exits_130_with_the_resume_command(env: dict[str, str], tmp_path: Path) -> None:
    with Sandbox(SandboxConfig(duration=60)) as sandbox:
        task_id = submit_direct(sandbox)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        process = subprocess.Popen(
            [*COMMAND, "wait", task_id],
            env=user,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        wait_until(lambda: any(r.path.startswith(TASKS) for r in sandbox.requests))
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 130
    assert stdout == ""
    assert f"apimart wait {task_id}" in stderr
    assert "Traceback" not in stderr and API_KEY not in stderr


def test_ctrl_c_during_a_download_names_the_task_to_resume(
    env: dict[str, str], tmp_path: Path
) -> None:
    with Sandbox(SandboxConfig(duration=0.1)) as sandbox:
        task_id = submit_direct(sandbox)
        wait_completed(sandbox, task_id)
        sandbox.inject(Fault("slow", path="/f/", delay=ENDLESS))
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        process = subprocess.Popen(
            [*COMMAND, "wait", task_id, "-o", "out"],
            env=user,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        wait_until(lambda: any(r.origin == "image" for r in sandbox.requests), what="a download")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
        [download] = [r for r in sandbox.requests if r.origin == "image"]
        assert download.status is None  # the image had not come when it stopped
    assert process.returncode == 130
    assert stdout == ""
    assert f"Resume with: apimart wait -o out {task_id}" in stderr
    assert final_images(tmp_path / "out") == []


def test_stdin_still_open_at_the_deadline_is_reported(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    task_id = submit_direct(sandbox)
    wait_completed(sandbox, task_id)
    process = subprocess.Popen(
        [*COMMAND, "wait", "--timeout", "2", "-o", "out"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdin and process.stdout and process.stderr
    process.stdin.write(f"{task_id}\n")
    process.stdin.flush()  # and the pipe stays open, as a producer that has more to say
    try:
        process.wait(timeout=30)
        stdout, stderr = process.stdout.read(), process.stderr.read()
    finally:
        process.stdin.close()
    assert process.returncode == 124, stderr
    assert stdout.splitlines() == [f"out/{task_id}_0.png"]
    assert "Timed out after 2 s" in stderr
    assert API_KEY not in stdout + stderr
