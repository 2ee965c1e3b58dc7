"""Faults tried through the command, in this process, against a sandbox that misbehaves
on demand. Those that need processes of their own (several at once, a kill, Ctrl-C, a
standard input left open) are in `tests/e2e/test_faults.py`.

Every test checks the exit code, that no half-written file sits under a final
name, that a submission the server could have accepted was not sent twice, and
(in `apimart()`) that the key never appears in the output and no traceback does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart
from tests.helpers.images import png_size
from tests.helpers.records import (
    SUBMIT,
    TASKS,
    direct,
    final_images,
    history_rows,
    leftovers,
    posts,
    submit_direct,
    wait_completed,
)

# -- submissions: resent only where the server cannot have accepted them ---------------


@pytest.mark.parametrize("status", [429, 503])
def test_submit_refused_for_load_is_resent_with_the_same_key(
    sandbox: Sandbox, env: dict[str, str], status: int
) -> None:
    sandbox.inject(
        Fault("status", method="POST", path=SUBMIT, status=status, retry_after="0", times=2)
    )
    run = apimart("generate", "a fox", env=env)
    assert run.returncode == 0, run.stderr
    assert len(run.lines) == 1 and run.lines[0].startswith("task_")
    attempts = posts(sandbox)
    assert len(attempts) == 3
    assert len({r.headers["idempotency-key"] for r in attempts}) == 1
    assert len(sandbox.submissions()) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", method="POST", path=SUBMIT, status=500),
        Fault("status", method="POST", path=SUBMIT, status=502, html=True),
        Fault("after_create", method="POST", path=SUBMIT, status=500),
        Fault("drop", method="POST", path=SUBMIT),
        Fault("malformed", method="POST", path=SUBMIT),
        # Replies that cannot be understood: too deep to parse, or an id that cannot be one.
        Fault("nested", method="POST", path=SUBMIT),
        Fault("task_id", method="POST", path=SUBMIT, task_id="task_1\ntask_2"),
        Fault("task_id", method="POST", path=SUBMIT, task_id="../../etc/passwd"),
        Fault("task_id", method="POST", path=SUBMIT, task_id="x" * 5000),
        Fault("task_id", method="POST", path=SUBMIT, task_id="{key}"),
    ],
    ids=[
        *["500", "502-html", "500-after-creating", "dropped", "malformed"],
        *["nested-json", "id-newline", "id-climbing", "id-huge", "id-the-key"],
    ],
)
def test_submit_with_unknown_outcome_is_not_resent_and_is_recorded(
    sandbox: Sandbox, env: dict[str, str], isolated: Path, fault: Fault
) -> None:
    sandbox.inject(fault)
    run = apimart("generate", "a fox", env=env)
    assert run.returncode == 5, run.stderr
    assert run.stdout == "" and len(run.stderr) < 1000
    [post] = posts(sandbox)  # never resent
    [row] = history_rows(isolated)
    assert (row["state"], row["task_id"]) == ("unknown", None)
    assert row["idempotency_key"] == post.headers["idempotency-key"]
    assert row["idempotency_key"] in run.stderr
    assert API_KEY not in json.dumps(dict(row))
    listed = apimart("history", "--pending", env=env)
    assert row["idempotency_key"] in listed.stdout


# -- polling: transient failures are retried, lasting ones exit 5 ---------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", path=TASKS, status=429, retry_after="0", times=2),
        Fault("status", path=TASKS, status=502, html=True, retry_after="0", times=2),
        Fault("status", path=TASKS, status=503, retry_after="0", times=3),
        Fault("malformed", path=TASKS, times=1),
        Fault("html", path=TASKS, times=1),
        Fault("drop", path=TASKS, times=1),
        Fault("slow", path=TASKS, delay=1.0, times=1),
    ],
    ids=["429", "502-html", "503", "malformed", "html-200", "dropped", "slow"],
)
def test_wait_rides_out_transient_faults(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path, fault: Fault
) -> None:
    task_id = submit_direct(sandbox)
    sandbox.inject(fault)
    run = apimart("wait", task_id, "-o", "out", "--interval", "0.2", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    [path] = run.lines
    assert png_size(tmp_path / path) == (1024, 1024)
    assert leftovers(tmp_path / "out") == []


def test_wait_gives_up_after_six_tries_with_exit_5(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    task_id = submit_direct(sandbox)
    sandbox.inject(Fault("status", path=TASKS, status=500, retry_after="0", times=6))
    run = apimart("wait", task_id, "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 5
    assert run.stdout == ""
    polls = [r for r in sandbox.requests if r.path.startswith(TASKS)]
    assert len(polls) == 6
    assert final_images(tmp_path / "out") == []


@pytest.mark.parametrize(("status", "code"), [(401, 3), (402, 4), (400, 1)])
def test_refusals_map_to_their_exit_codes(
    sandbox: Sandbox, env: dict[str, str], status: int, code: int
) -> None:
    sandbox.inject(Fault("status", method="POST", path=SUBMIT, status=status))
    run = apimart("generate", "a fox", env=env)
    assert run.returncode == code, run.stderr
    assert len(posts(sandbox)) == 1
    assert run.stdout == ""


# -- downloads: never a half-written file under a final name -----------------------------


def test_truncated_download_is_resumed_and_complete(env: dict[str, str], tmp_path: Path) -> None:
    with Sandbox(SandboxConfig(duration=0.1, noise=True)) as sandbox:
        task_id = submit_direct(sandbox, size="640x640")  # 1.2 MB: the first half is written
        data = wait_completed(sandbox, task_id)
        expected = direct.get(data["result"]["images"][0]["url"][0]).content  # type: ignore[index]
        sandbox.inject(Fault("truncate", path="/f/", times=1))
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        # --no-metadata: the file must be byte for byte what the host sent
        run = apimart("download", task_id, "-o", "out", "--no-metadata", env=user, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    [path] = run.lines
    assert (tmp_path / path).read_bytes() == expected
    assert leftovers(tmp_path / "out") == []
    ranged = [r for r in sandbox.requests if r.origin == "image" and "range" in r.headers]
    assert ranged, "the second try should resume with a Range request"


@pytest.mark.parametrize(
    "fault",
    [Fault("content_type", path="/f/", content_type="text/html"), Fault("html", path="/f/")],
    ids=["wrong-content-type", "html-page"],
)
def test_image_host_answering_html_is_refused(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path, fault: Fault
) -> None:
    task_id = submit_direct(sandbox)
    wait_completed(sandbox, task_id)
    sandbox.inject(fault)
    run = apimart("download", task_id, "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 5
    assert run.stdout == ""
    assert "not an image" in run.stderr
    assert final_images(tmp_path / "out") == [] and leftovers(tmp_path / "out") == []


def test_expired_results_exit_1_naming_the_time(env: dict[str, str], tmp_path: Path) -> None:
    # Expired as it completes: expires_at, in whole seconds, is then already past.
    with Sandbox(SandboxConfig(duration=0.1, image_ttl=0)) as sandbox:
        task_id = submit_direct(sandbox)
        wait_completed(sandbox, task_id)
        run = apimart(
            "download",
            task_id,
            "-o",
            "out",
            env={**env, "APIMART_BASE_URL": sandbox.base_url},
            cwd=tmp_path,
        )
    assert run.returncode == 1
    assert "expired at" in run.stderr and "UTC" in run.stderr
    assert final_images(tmp_path / "out") == []


def test_existing_file_is_kept_without_force(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    task_id = submit_direct(sandbox)
    wait_completed(sandbox, task_id)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{task_id}_0.png").write_bytes(b"mine")
    run = apimart("download", task_id, "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 0
    assert run.lines == [f"out/{task_id}_0.png"]
    assert (out / f"{task_id}_0.png").read_bytes() == b"mine"
    assert "--force" in run.stderr
    forced = apimart("download", task_id, "-o", "out", "--force", env=env, cwd=tmp_path)
    assert forced.returncode == 0
    assert png_size(out / f"{task_id}_0.png") == (1024, 1024)


# -- tasks that end badly, time running out, Ctrl-C -------------------------------------


def test_failed_and_cancelled_tasks_exit_1_after_the_others(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    good = submit_direct(sandbox, "a fox")
    failed = submit_direct(sandbox, "a fox sandbox:fail")
    cancelled = submit_direct(sandbox, "a fox sandbox:cancel")
    run = apimart(
        "wait", good, failed, cancelled, "-o", "out", "--interval", "0.2", env=env, cwd=tmp_path
    )
    assert run.returncode == 1
    assert run.lines == [f"out/{good}_0.png"]
    assert f"{failed}: failed" in run.stderr and "sandbox failed this task" in run.stderr
    assert f"{cancelled}: cancelled" in run.stderr


def test_wait_timeout_exits_124_with_the_resume_command(
    env: dict[str, str], tmp_path: Path
) -> None:
    with Sandbox(SandboxConfig(duration=60)) as sandbox:
        task_id = submit_direct(sandbox)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        run = apimart("wait", task_id, "--timeout", "0.5", "-o", "out", env=user, cwd=tmp_path)
    assert run.returncode == 124
    assert task_id in run.stderr
    assert f"apimart wait -o out {task_id}" in run.stderr


# -- hostile or broken input: refused cleanly, nothing sent ------------------------------


@pytest.mark.parametrize("task_id", ["../etc/passwd", "task 1", "a/b", "..", "%2e%2e"])
def test_bad_task_ids_are_refused_before_sending(
    sandbox: Sandbox, env: dict[str, str], task_id: str
) -> None:
    for command in ("status", "wait", "download"):
        run = apimart(command, task_id, env=env)
        assert run.returncode == 2, (command, run.stderr)
        assert repr(task_id) in run.stderr
    assert sandbox.requests == []


def test_corrupt_config_is_a_clear_error(
    sandbox: Sandbox, env: dict[str, str], isolated: Path
) -> None:
    isolated.mkdir(parents=True, exist_ok=True)
    (isolated / "config.toml").write_text('api_key = "sk-x"\nbase_url = \n')
    no_env_key = {k: v for k, v in env.items() if k != "APIMART_API_KEY"}
    run = apimart("generate", "a fox", env=no_env_key)
    assert run.returncode == 2
    assert "config.toml" in run.stderr and "line 2" in run.stderr
    assert sandbox.requests == []


def test_corrupt_history_stops_a_paid_submission_before_sending(
    sandbox: Sandbox, env: dict[str, str], isolated: Path
) -> None:
    (isolated / "data").mkdir(parents=True)
    (isolated / "data" / "history.sqlite3").write_bytes(b"this is not a database" * 100)
    run = apimart("generate", "a fox", env=env)
    assert run.returncode == 2
    assert "history.sqlite3" in run.stderr
    assert posts(sandbox) == []


def test_missing_key_exits_3_and_sends_nothing(sandbox: Sandbox, env: dict[str, str]) -> None:
    no_key = {k: v for k, v in env.items() if k != "APIMART_API_KEY"}
    run = apimart("generate", "a fox", env=no_key)
    assert run.returncode == 3
    assert "apimart config set api_key" in run.stderr
    assert sandbox.requests == []


def test_plain_http_to_a_remote_host_is_refused(sandbox: Sandbox, env: dict[str, str]) -> None:
    run = apimart("generate", "a fox", env={**env, "APIMART_BASE_URL": "http://api.example.com"})
    assert run.returncode == 2
    assert "http://api.example.com" in run.stderr


def test_a_result_url_that_climbs_out_of_the_folder_is_saved_inside_it(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    run = apimart(
        "generate", "a fox sandbox:hostile-url", "--wait", "-o", "out", env=env, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    [path] = run.lines
    image_paths = [r.path for r in sandbox.requests if r.origin == "image"]
    assert image_paths and all("..%2F" in p for p in image_paths)
    saved = tmp_path / path
    assert saved.parent == tmp_path / "out" and png_size(saved) == (1024, 1024)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out"]  # home: settings


def test_a_reply_far_larger_than_any_real_one_is_cut_off(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    task_id = submit_direct(sandbox)
    sandbox.inject(Fault("huge", path=TASKS, times=1))
    run = apimart("status", task_id, env=env)
    assert run.returncode == 0, run.stderr
    assert "larger than" in run.stderr  # the first reply, cut off and retried
    assert run.stdout.startswith(task_id)  # exit 5 when every reply is: test_client.py


def test_an_unwritable_history_stops_a_paid_submission_before_sending(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    run = apimart("generate", "a fox", env={**env, "APIMART_DATA_DIR": str(blocker / "data")})
    assert run.returncode == 2
    assert "history" in run.stderr
    assert posts(sandbox) == []


def test_wait_pending_resumes_what_the_history_says_is_unfinished(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    first = apimart("generate", "a fox", env=env)
    second = apimart("generate", "an owl", env=env)
    assert first.returncode == second.returncode == 0
    ids = {first.stdout.strip(), second.stdout.strip()}
    listed = apimart("history", "--pending", "--json", env=env)
    assert {json.loads(line)["task_id"] for line in listed.lines} == ids
    run = apimart("wait", "--pending", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert {Path(line).name.rsplit("_", 1)[0] for line in run.lines} == ids
    assert apimart("history", "--pending", env=env).stdout == ""


# The faults below never end on their own within a run: a command that exits at all was
# not held by them (the runner's own timeout guards against a hang, it is no bound).
ENDLESS = 3600.0


def test_a_retry_after_longer_than_the_time_left_is_a_timeout_not_a_failure(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    task_id = submit_direct(sandbox)
    sandbox.inject(Fault("status", path=TASKS, status=503, retry_after=str(int(ENDLESS))))
    run = apimart("wait", task_id, "--timeout", "2", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 124, run.stderr
    assert f"apimart wait -o out {task_id}" in run.stderr
    polls = [r for r in sandbox.requests if r.path.startswith(TASKS + task_id)]
    assert [r.status for r in polls] == [503]  # not polled again after the pause it was told


def test_timeout_is_not_held_up_by_a_request_in_flight(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    task_id = submit_direct(sandbox)
    sandbox.inject(Fault("slow", path=TASKS, delay=ENDLESS))
    run = apimart("wait", task_id, "--timeout", "2", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 124, run.stderr
    assert task_id in run.stderr
    [poll] = [r for r in sandbox.requests if r.path.startswith(TASKS + task_id)]
    assert poll.status is None  # still unanswered when the command had ended
