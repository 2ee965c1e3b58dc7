"""Hostile conditions end to end: signals mid-request, two runs at once, a terminal,
closed streams.

The command under test is a real process: a signal is sent once the server has the
request in hand (never after a sleep that races it), a second run meets the first
one's lock, a terminal is a real one. What runs before or after it (a submission, a
rerun, a look at the history) runs in this process. Every test checks what was paid
for against what the user was told and what was kept. Hostile replies, ids and
values that need no process of their own: tests/flows/test_hostile.py.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.e2e.conftest import API_KEY, COMMAND, finish, shell, start
from tests.helpers.commands import run as apimart
from tests.helpers.records import SUBMIT, history_rows, posts
from tests.helpers.scripted import Scripted, json_reply, key_of, scripted_api
from tests.helpers.waiting import wait_until as until


def keys(sandbox: Sandbox) -> list[str]:
    """The idempotency keys of the submissions that reached the sandbox."""
    return [r.headers.get("idempotency-key", "") for r in posts(sandbox)]


# -- a paid task is never lost -------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_submission_exits_with_the_key_recorded(
    sandbox: Sandbox, env: dict[str, str], isolated: Path, sig: signal.Signals
) -> None:
    sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=30))
    process = start("generate", "a fox", env=env)
    until(lambda: posts(sandbox))  # the request is at the server
    process.send_signal(sig)
    stdout, stderr = finish(process)
    assert process.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    [key] = keys(sandbox)
    assert key in stderr and stdout == ""
    [row] = history_rows(isolated)
    assert (row["state"], row["idempotency_key"], row["task_id"]) == ("unknown", key, None)
    listed = apimart("history", "--pending", env=env)
    assert key in listed.stdout and "apimart resend" in listed.stderr


def test_kill_9_mid_submission_leaves_the_key_in_the_history(
    sandbox: Sandbox, env: dict[str, str], isolated: Path
) -> None:
    sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=30))
    process = start("generate", "a fox", env=env)
    until(lambda: posts(sandbox))
    process.kill()
    process.wait()
    [key] = keys(sandbox)
    [row] = history_rows(isolated)
    assert (row["state"], row["idempotency_key"]) == ("submitting", key)
    waited = apimart("wait", "--pending", env=env)
    assert waited.returncode == 0 and key in waited.stderr and "apimart resend" in waited.stderr


@pytest.mark.parametrize("stage", ["polling", "downloading"])
def test_sigterm_while_waiting_exits_143_with_the_resume_command(
    env: dict[str, str], tmp_path: Path, stage: str
) -> None:
    with Sandbox(SandboxConfig(duration=60 if stage == "polling" else 0.1)) as sandbox:
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        [task_id] = apimart("generate", "a fox", env=user).lines
        sandbox.inject(Fault("slow", path="/f/", delay=20))
        process = start("wait", task_id, "-o", "out", env=user, cwd=tmp_path)
        if stage == "polling":
            until(lambda: any(r.path.startswith(f"/v1/tasks/{task_id}") for r in sandbox.requests))
        else:  # a download on its way
            until(lambda: any(r.origin == "image" for r in sandbox.requests))
        process.terminate()
        stdout, stderr = finish(process)
    assert process.returncode == 143, stderr
    assert f"Terminated; 1 task(s) unfinished: {task_id}" in stderr
    assert stdout == "" and f"Resume with: apimart wait -o out {task_id}" in stderr


def test_sigterm_mid_batch_then_a_rerun_pays_for_nothing_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "jobs.txt").write_text("a fox\nan owl\na bear\n")
    with Sandbox(SandboxConfig(duration=60)) as sandbox:
        sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=1))
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        argv = ["batch", "jobs.txt", "-o", "out", "--interval", "0.1"]
        process = start(*argv, env=user, cwd=tmp_path)
        until(lambda: posts(sandbox))
        process.terminate()
        _, stderr = finish(process)
        assert process.returncode == 143, stderr
        sandbox.configure(duration=0.1)  # tasks made from now on end at once
        sandbox.advance(60)  # and so do those made so far
        rerun = apimart(*argv, env=user, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    prompts = [r.json["prompt"] for r in sandbox.submissions()]
    assert sorted(set(prompts)) == ["a bear", "a fox", "an owl"]
    assert len(set(r.task_id for r in sandbox.submissions())) == 3  # one task each


# -- one batch per folder ------------------------------------------------------------------


def test_two_batches_into_one_folder_never_pay_twice(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "jobs.txt").write_text("a fox\nan owl\n")
    sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=1))
    first = start("batch", "jobs.txt", "-o", "out", "--concurrency", "1", env=env, cwd=tmp_path)
    until(lambda: posts(sandbox))  # the first run is sending
    second = apimart("batch", "jobs.txt", "-o", "out", env=env, cwd=tmp_path)
    assert second.returncode == 2, second.stderr
    assert "nothing was sent" in second.stderr and "out" in second.stderr
    finish(first)
    assert first.returncode == 0
    assert len(posts(sandbox)) == len(sandbox.submissions()) == 2  # each job sent and paid once
    again = apimart("batch", "jobs.txt", "-o", "out", env=env, cwd=tmp_path)  # the lock is gone
    assert again.returncode == 0 and len(sandbox.submissions()) == 2


# -- a terminal ----------------------------------------------------------------------------


def on_a_terminal(argv: list[str], env: dict[str, str], answer: Callable[[int], None]) -> str:
    """Run `argv` with a terminal for its standard streams; `answer(pid)` acts once it
    has written something. Everything it printed, and its exit code last."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, env=env, stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    seen, answered = b"", False
    while True:
        ready, _, _ = select.select([leader], [], [], 20)
        chunk = b""
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the process is gone
                chunk = b""
        if not chunk:
            break
        seen += chunk
        if not answered:
            answered = True
            answer(process.pid)
    process.wait(20)
    os.close(leader)
    return f"{seen.decode(errors='replace')}\nexit {process.returncode}"


def test_the_status_table_on_a_terminal_hides_the_key_in_every_column(
    env: dict[str, str],
) -> None:
    def echoing(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        key = key_of(headers)
        data = {"id": "task_01abc", "status": key, "progress": 5, "error": {"message": key}}
        return json_reply({"code": 200, "data": data})

    api = Scripted(task=echoing)
    with scripted_api(api):
        user = {**env, "APIMART_BASE_URL": api.base_url, "COLUMNS": "200"}
        seen = on_a_terminal([*COMMAND, "status", "task_01abc"], user, lambda pid: None)
    assert "task_01abc" in seen and "[API key]" in seen
    assert API_KEY not in seen


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_at_the_key_prompt_exits_like_any_interruption(
    env: dict[str, str], isolated: Path, sig: signal.Signals, code: int
) -> None:
    seen = on_a_terminal([*COMMAND, "config", "set", "api_key"], env, lambda pid: os.kill(pid, sig))
    assert seen.endswith(f"exit {code}"), seen
    assert "Aborted!" not in seen
    assert not (isolated / "config.toml").exists()


# -- closed streams ------------------------------------------------------------------------


def test_quiet_sandbox_says_nothing_and_a_closed_stdout_is_no_crash(
    env: dict[str, str], tmp_path: Path
) -> None:
    quiet = apimart("-q", "--sandbox", "generate", "a fox", "--wait", env=env, cwd=tmp_path)
    assert quiet.returncode == 0 and "sandbox" not in quiet.stderr.lower()
    closed = shell("apimart --sandbox generate 'a fox' >&-", env=env, cwd=tmp_path)
    assert closed.returncode == 141, closed.stderr
    assert "internal error" not in closed.stderr
    no_stderr = shell("apimart --sandbox generate 'a fox' 2>&-", env=env, cwd=tmp_path)
    assert no_stderr.returncode == 0 and no_stderr.stdout.startswith("task_")
