"""`--json` errors through the command against the sandbox: each exit code's error
object, but those of a signal (130, 143), which need a process of their own and are
in `tests/e2e/test_json_errors.py`.

Each run's standard error ends with one JSON object, `{"error": {...}}`, after the
plain message; the object's exit code is the run's, and it names the tasks to
resume or look at, or the idempotency key of a submission whose outcome is unknown.
"""

from __future__ import annotations

import json
from pathlib import Path

from apimart_cli.sandbox import Fault, Sandbox
from tests.helpers.commands import run as apimart
from tests.helpers.records import SUBMIT, error_of


def test_1_a_failed_task_names_it(env: dict[str, str], tmp_path: Path) -> None:
    run = apimart("generate", "sandbox:fail a fox", "--wait", "--json", env=env, cwd=tmp_path)

    assert run.returncode == 1, run.stderr
    error = error_of(run.stderr, 1)
    (task_id,) = error["task_ids"]
    assert task_id in run.stderr.splitlines()[0], "the id went to stderr first, as --wait does"
    assert error["retryable"] is False


def test_1_status_of_an_unknown_task(env: dict[str, str]) -> None:
    run = apimart("status", "task_nope", "--json", env=env)

    assert run.returncode == 1, run.stderr
    assert error_of(run.stderr, 1)["task_ids"] == ["task_nope"]


def test_1_a_batch_with_a_failed_job(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "jobs.txt").write_text("a fox\nsandbox:fail an owl\n")

    run = apimart("batch", "jobs.txt", "-o", "out", "--json", env=env, cwd=tmp_path)

    assert run.returncode == 1, run.stderr
    jobs = [json.loads(line) for line in run.stdout.splitlines()]
    [failed] = [job["task_id"] for job in jobs if job["status"] == "failed"]
    assert error_of(run.stderr, 1)["task_ids"] == [failed]  # the job done is not named


def test_2_bad_input(env: dict[str, str]) -> None:
    run = apimart("generate", "a fox", "-s", "7:5", "--json", env=env)

    assert run.returncode == 2
    assert "7:5" in error_of(run.stderr, 2)["message"]


def test_3_no_key(env: dict[str, str]) -> None:
    env = {key: value for key, value in env.items() if key != "APIMART_API_KEY"}

    run = apimart("balance", "--json", env=env)

    assert run.returncode == 3
    error_of(run.stderr, 3)


def test_4_balance_too_low(env: dict[str, str], sandbox: Sandbox) -> None:
    sandbox.inject(Fault("status", method="POST", path=SUBMIT, status=402))

    run = apimart("generate", "a fox", "--json", env=env)

    assert run.returncode == 4, run.stderr
    assert error_of(run.stderr, 4)["retryable"] is False


def test_5_an_unknown_outcome_names_its_key(env: dict[str, str], sandbox: Sandbox) -> None:
    sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=500))

    run = apimart("generate", "a fox", "--json", env=env)

    assert run.returncode == 5, run.stderr
    error = error_of(run.stderr, 5)
    (request,) = [r for r in sandbox.requests if r.method == "POST" and r.path == SUBMIT]
    assert error["idempotency_key"] == request.headers["idempotency-key"]
    assert error["retryable"] is False, "resending could pay twice"


def test_124_names_the_unfinished_tasks_and_how_to_resume(
    env: dict[str, str], sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(duration=600)

    run = apimart("generate", "a fox", "--wait", "--timeout", "2", "--json", env=env, cwd=tmp_path)

    assert run.returncode == 124, run.stderr
    error = error_of(run.stderr, 124)
    (task_id,) = error["task_ids"]
    assert error["retryable"] is True
    assert "apimart" in error["hint"] and "wait" in error["hint"] and task_id in error["hint"]
