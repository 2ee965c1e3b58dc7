"""Hostile conditions end to end: signals mid-request, replies that cannot be read,
ids that cannot be ids, the key echoed back, two runs at once, closed streams.

Every test runs the real command in a subprocess. A signal is sent once the
server has the request in hand (never after a sleep that races it), and every
test checks what was paid for against what the user was told and what was kept.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.e2e.conftest import API_KEY, COMMAND, apimart, finish, shell, start
from tests.helpers.records import SUBMIT, history_rows, posts, submit_direct, wait_completed
from tests.helpers.scripted import Scripted, json_reply, key_of, scripted_api
from tests.helpers.waiting import wait_until as until

MANIFEST = "batch-manifest.jsonl"


def keys(sandbox: Sandbox) -> list[str]:
    """The idempotency keys of the submissions that reached the sandbox."""
    return [r.headers.get("idempotency-key", "") for r in posts(sandbox)]


# -- a paid task is never lost ---------------------------------------------------------------


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


def test_an_unknown_outcome_reaches_the_user_when_the_history_is_locked(
    env: dict[str, str], isolated: Path
) -> None:
    api = Scripted(hold=True, submit=lambda path, headers: json_reply({"error": "boom"}, 500))
    with scripted_api(api):
        process = start("generate", "a fox", env={**env, "APIMART_BASE_URL": api.base_url})
        assert api.received.wait(20)
        with sqlite3.connect(isolated / "data" / "history.sqlite3", timeout=0) as db:
            db.execute("BEGIN EXCLUSIVE")  # another process holds the history...
            api.release.set()  # ...when the 500 comes back
            stdout, stderr = finish(process)
            db.rollback()
    [post] = api.posts()
    key = post.headers["idempotency-key"]
    assert process.returncode == 5, stderr
    assert key in stderr and "could not record" in stderr and stdout == ""
    [row] = history_rows(isolated)  # written before the request left
    assert (row["state"], row["idempotency_key"]) == ("submitting", key)


@pytest.mark.parametrize("command", [["status", "TASK"], ["balance"]])
def test_status_and_balance_replies_nested_too_deep_are_retried_not_a_crash(
    sandbox: Sandbox, env: dict[str, str], command: list[str]
) -> None:
    """Exit 5 once every try got one: tests/cli/test_exit_codes.py (without the backoff)."""
    task_id = submit_direct(sandbox)
    wait_completed(sandbox, task_id)
    path = "/v1/balance" if command == ["balance"] else f"/v1/tasks/{task_id}"
    sandbox.inject(Fault("nested", path=path))
    before = len(sandbox.requests)
    run = apimart(*[task_id if word == "TASK" else word for word in command], env=env)
    assert run.returncode == 0, run.stderr
    assert "nested too deeply" in run.stderr and "internal error" not in run.stderr
    assert [r.path.split("?")[0] for r in sandbox.requests[before:]] == [path] * 2


def test_generate_wait_into_a_file_exits_2_before_sending(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "out").write_text("not a folder")
    run = apimart("generate", "a fox", "--wait", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "out" in run.stderr
    assert posts(sandbox) == []


# -- one batch per folder ----------------------------------------------------------------------


def test_two_batches_into_one_folder_never_pay_twice(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "jobs.txt").write_text("a fox\nan owl\n")
    sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=2))
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


def test_the_manifest_is_private_and_never_written_through_a_link(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "jobs.txt").write_text("a fox\n")
    run = apimart("batch", "jobs.txt", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / MANIFEST).stat().st_mode & 0o777 == 0o600
    elsewhere = tmp_path / "precious.txt"
    elsewhere.write_text("keep me\n")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / MANIFEST).symlink_to(elsewhere)
    sent = len(posts(sandbox))
    run = apimart("batch", "jobs.txt", "-o", "linked", env=env, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "symbolic link" in run.stderr
    assert elsewhere.read_text() == "keep me\n"
    assert len(posts(sandbox)) == sent


def failing_with_the_key(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A task that failed, its reason echoing the caller's key."""
    task_id = path.removeprefix("/v1/tasks/").split("?")[0]
    reason = f"invalid credentials {key_of(headers)} for this model"
    data = {"id": task_id, "status": "failed", "error": {"message": reason}}
    return json_reply({"code": 200, "data": data})


def test_a_key_echoed_in_a_failure_reason_is_written_nowhere(
    env: dict[str, str], isolated: Path, tmp_path: Path
) -> None:
    (tmp_path / "jobs.txt").write_text("a fox\n")
    api = Scripted(task=failing_with_the_key)
    with scripted_api(api):
        user = {**env, "APIMART_BASE_URL": api.base_url}
        run = apimart("batch", "jobs.txt", "-o", "out", "--json", env=user, cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    manifest = tmp_path / "out" / MANIFEST
    assert "invalid credentials" in manifest.read_text()
    assert API_KEY not in manifest.read_text()
    assert manifest.stat().st_mode & 0o777 == 0o600


def test_a_key_with_a_backslash_is_hidden_in_json_output(env: dict[str, str]) -> None:
    key = 'sk-back\\slash"quote-0123456789'
    api = Scripted(task=failing_with_the_key)
    with scripted_api(api):
        user = {**env, "APIMART_BASE_URL": api.base_url, "APIMART_API_KEY": key}
        run = apimart("wait", "task_01abc", "--json", env=user)
    assert run.returncode == 1, run.stderr
    assert "invalid credentials" in run.stdout
    for form in (key, json.dumps(key)[1:-1], repr(key)[1:-1]):
        assert form not in run.stdout + run.stderr


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


# -- names, streams and messages ------------------------------------------------------------


@pytest.mark.parametrize("template", ["{slug:>300}", "{slug!r}", "{index:{line}}", "{slug}\t"])
def test_a_name_template_that_cannot_name_a_file_is_refused_before_sending(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path, template: str
) -> None:
    (tmp_path / "jobs.txt").write_text("a fox\n")
    run = apimart("batch", "jobs.txt", "-o", "out", "--name", template, env=env, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "--name" in run.stderr and len(run.stderr) < 1000
    assert posts(sandbox) == []


def test_a_jobs_line_nested_too_deep_exits_2_naming_the_line(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    nested = '{"prompt": "a fox", "size": ' + "[" * 100_000 + "]" * 100_000 + "}"
    (tmp_path / "jobs.txt").write_text(f"an owl\n{nested}\n")
    run = apimart("batch", "jobs.txt", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 2, run.stderr
    assert "line 2" in run.stderr and "internal error" not in run.stderr
    assert posts(sandbox) == []


def test_a_50_mb_bad_task_id_is_not_echoed_whole(sandbox: Sandbox, env: dict[str, str]) -> None:
    run = apimart("status", env=env, input="x/" * 25_000_000 + "\n")
    assert run.returncode == 2
    assert "Invalid task id" in run.stderr and len(run.stderr) < 1000
    assert sandbox.requests == []


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


def test_a_sandbox_timeout_offers_no_resume_into_a_sandbox_that_is_gone(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The timeout bounds the whole command: time enough to submit, not to finish the task.
    run = apimart("--sandbox", "generate", "a fox", "--wait", "--timeout", "2", env=env)
    assert run.returncode == 124, run.stderr
    assert "Resume with" not in run.stderr and "nothing to resume" in run.stderr


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


def test_a_hostile_failure_reason_cannot_drive_the_terminal_or_flood_it(
    env: dict[str, str],
) -> None:
    def failing(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        reason = "\x1b]0;pwned\x07\x1b[2J\rline\nbreak " + "x" * 100_000
        data = {"id": "../other", "status": "failed", "error": {"message": reason}}
        return json_reply({"code": 200, "data": data})

    api = Scripted(task=failing)
    with scripted_api(api):
        user = {**env, "APIMART_BASE_URL": api.base_url}
        waited = apimart("wait", "task_01abc", env=user)
        status = apimart("status", "task_01abc", env=user)
    assert waited.returncode == 1 and status.returncode == 0
    for run in (waited, status):
        assert "\x1b" not in run.stdout + run.stderr and "\r" not in run.stdout + run.stderr
        assert len(run.stdout + run.stderr) < 2000 and "../other" not in run.stdout + run.stderr
    assert status.lines == [f"task_01abc\tfailed\t\t{status.lines[0].split(chr(9))[3]}"]


def test_nested_or_huge_values_anywhere_are_clear_errors_not_crashes(
    sandbox: Sandbox, env: dict[str, str], isolated: Path, tmp_path: Path
) -> None:
    nested = "[" * 50_000 + "]" * 50_000
    param = apimart("generate", "a fox", "--param", f"style={nested}", env=env)
    assert param.returncode == 2 and "nested too deeply" in param.stderr, param.stderr
    (tmp_path / "jobs.txt").write_text(json.dumps({"prompt": "a fox", "size": "x" * 5_000_000}))
    jobs = apimart("batch", "jobs.txt", "-o", "out", env=env, cwd=tmp_path)
    assert jobs.returncode == 2 and "line 1" in jobs.stderr and len(jobs.stderr) < 2000
    assert posts(sandbox) == []
    isolated.mkdir(parents=True, exist_ok=True)
    (isolated / "config.toml").write_text(f"output_dir = {nested}\n")
    config = apimart("config", "list", env=env)
    assert config.returncode == 2 and "config.toml" in config.stderr, config.stderr
