"""Hostile conditions, the command run in this process: replies that cannot be read,
ids and values that cannot be what they claim, the key echoed back, a history locked
by another writer, planted links and names that cannot name a file.

Every test checks what was paid for against what the user was told and what was
kept. Signals, two runs at once, terminals and closed streams need processes of
their own: tests/e2e/test_hostile.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from apimart_cli import history
from apimart_cli.sandbox import Fault, Sandbox
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart
from tests.helpers.records import history_rows, posts, submit_direct, wait_completed
from tests.helpers.scripted import Scripted, json_reply, key_of, scripted_api

MANIFEST = "batch-manifest.jsonl"


# -- a paid task is never lost -------------------------------------------------------------


def test_an_unknown_outcome_reaches_the_user_when_the_history_is_locked(
    env: dict[str, str], isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write waits for another writer's lock at its shortest: the same refusal, sooner.
    monkeypatch.setattr(history, "BUSY_TIMEOUT_SECONDS", history.MIN_BUSY_SECONDS)
    holders: list[sqlite3.Connection] = []

    def locked_then_500(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        db = sqlite3.connect(
            isolated / "data" / "history.sqlite3", timeout=0, check_same_thread=False
        )
        db.execute("BEGIN EXCLUSIVE")  # another writer holds the history...
        holders.append(db)
        return json_reply({"error": "boom"}, 500)  # ...when the 500 comes back

    api = Scripted(submit=locked_then_500)
    try:
        with scripted_api(api):
            run = apimart("generate", "a fox", env={**env, "APIMART_BASE_URL": api.base_url})
    finally:
        for db in holders:
            db.rollback()
            db.close()
    stdout, stderr = run.stdout, run.stderr
    [post] = api.posts()
    key = post.headers["idempotency-key"]
    assert run.returncode == 5, stderr
    assert key in stderr and "could not record" in stderr and stdout == ""
    [row] = history_rows(isolated)  # written before the request left
    assert (row["state"], row["idempotency_key"]) == ("submitting", key)


@pytest.mark.parametrize("command", [["status", "TASK"], ["balance"]])
def test_status_and_balance_replies_nested_too_deep_are_retried_not_a_crash(
    sandbox: Sandbox, env: dict[str, str], command: list[str]
) -> None:
    """Exit 5 once every try got one: tests/cli/test_exit_codes.py (without the backoff)."""
    task_id = submit_direct(sandbox)
    sandbox.advance(1)  # completed now, not in the sandbox's 0.6 s
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


# -- one batch per folder ------------------------------------------------------------------


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


# -- the key, echoed back ------------------------------------------------------------------


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


# -- names, streams and messages -----------------------------------------------------------


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


def test_a_sandbox_timeout_offers_no_resume_into_a_sandbox_that_is_gone(
    env: dict[str, str], tmp_path: Path
) -> None:
    # The timeout bounds the whole command: time enough to submit, not to finish the task.
    run = apimart("--sandbox", "generate", "a fox", "--wait", "--timeout", "2", env=env)
    assert run.returncode == 124, run.stderr
    assert "Resume with" not in run.stderr and "nothing to resume" in run.stderr


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
