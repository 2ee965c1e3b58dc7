"""`apimart batch` run in this process against the sandbox: jobs, names, outcomes,
reruns and deadlines. Its signals (a kill, Ctrl-C) are in `tests/e2e/test_batches.py`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig, encode_png
from tests.helpers.commands import run as apimart
from tests.helpers.images import png_size
from tests.helpers.records import (
    MANIFEST,
    SUBMIT,
    created,
    latest_states,
    leftovers,
    posts,
    write_jobs,
)
from tests.helpers.records import png_names as images


def prompts(sandbox: Sandbox) -> list[str]:
    """The prompt of every submission that reached the server, accepted or not."""
    return [r.json["prompt"] for r in posts(sandbox)]


def test_mixed_lines_are_all_generated_and_recorded(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "ref.png").write_bytes(encode_png(1, 1, b"\x00\x10\x20\x30"))
    jobs = write_jobs(
        tmp_path / "jobs",
        "# three jobs",
        "a red fox",
        "",
        {"prompt": "a lighthouse", "size": "16:9", "n": 2},
        {"prompt": "an owl like this", "images": ["ref.png"], "size": "1:1"},
    )
    run = apimart("batch", str(jobs), "-o", "out", "--interval", "0.2", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(run.lines) == 4 and all(line.startswith("out/task_") for line in run.lines)
    sizes = sorted(png_size(tmp_path / line) for line in run.lines)
    assert sizes == [(1024, 1024), (1024, 1024), (1536, 864), (1536, 864)]
    assert created(sandbox) == {"a red fox": 1, "a lighthouse": 1, "an owl like this": 1}
    [with_reference] = [r.json for r in sandbox.submissions() if "image_urls" in r.json]
    assert with_reference["image_urls"][0].startswith("data:image/png;base64,")
    assert latest_states(tmp_path / "out") == {2: "completed", 4: "completed", 5: "completed"}
    assert "\x1b" not in run.stderr and "line 4: submitted task_" in run.stderr
    assert run.stderr.rstrip().splitlines()[-1].startswith("Batch: 3 job(s): 3 done;")


def test_jobs_from_standard_input(sandbox: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    run = apimart("batch", "-o", "out", env=env, cwd=tmp_path, input="a fox\nan owl\n")
    assert run.returncode == 0, run.stderr
    assert len(run.lines) == 2
    assert created(sandbox) == {"a fox": 1, "an owl": 1}


def test_a_bad_line_sends_nothing(sandbox: Sandbox, env: dict[str, str], tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path, "a fox", {"prompt": "an owl", "n": "2"}, "{broken", "a bear")
    run = apimart("batch", str(jobs), "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stdout == ""
    assert "line 2:" in run.stderr and "line 3:" in run.stderr and "line 1:" not in run.stderr
    assert sandbox.requests == []
    assert not (tmp_path / "out").exists()


def test_a_name_template_that_leaves_the_folder_sends_nothing(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path, "a fox")
    for template in ("../{slug}", "{nope}"):
        run = apimart("batch", str(jobs), "--name", template, env=env, cwd=tmp_path)
        assert run.returncode == 2, run.stderr
    assert sandbox.requests == []


def test_a_failed_job_fails_the_batch_after_the_others_finish_and_is_resent(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path, "a fox", "a broken one sandbox:fail", "an owl")
    run = apimart("batch", str(jobs), "-o", "out", "--interval", "0.2", env=env, cwd=tmp_path)
    assert run.returncode == 1
    assert len(run.lines) == 2 and len(images(tmp_path / "out")) == 2
    assert "line 2:" in run.stderr and "failed" in run.stderr
    again = apimart("batch", str(jobs), "-o", "out", "--interval", "0.2", env=env, cwd=tmp_path)
    assert again.returncode == 1
    assert sorted(again.lines) == sorted(run.lines)  # the done jobs' files, not made again
    assert Counter(prompts(sandbox)) == {"a fox": 1, "an owl": 1, "a broken one sandbox:fail": 2}


def test_a_429_storm_slows_down_and_loses_nothing(env: dict[str, str], tmp_path: Path) -> None:
    prompts = [f"fox number {i}" for i in range(10)]
    jobs = write_jobs(tmp_path, *prompts)
    with Sandbox(SandboxConfig(duration=0.5, submit_rate=5)) as sandbox:
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        run = apimart("batch", str(jobs), "-o", "out", "--interval", "0.2", env=user, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert any(r.status == 429 for r in sandbox.requests)
    assert "Rate limited" in run.stderr
    assert created(sandbox) == dict.fromkeys(prompts, 1)
    assert len(run.lines) == 10 == len(images(tmp_path / "out"))


def test_a_burst_of_429s_without_delay_is_ridden_out(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    sandbox.inject(
        Fault("status", method="POST", path=SUBMIT, status=429, retry_after="0", times=5)
    )
    prompts = [f"owl {i}" for i in range(6)]
    jobs = write_jobs(tmp_path, *prompts)
    run = apimart("batch", str(jobs), "-o", "out", "--interval", "0.2", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert created(sandbox) == dict.fromkeys(prompts, 1)
    assert len(images(tmp_path / "out")) == 6


def test_json_output_is_one_object_per_job(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path, "a fox", {"prompt": "an owl", "n": 2}, "sandbox:fail")
    run = apimart("batch", str(jobs), "-o", "out", "--json", env=env, cwd=tmp_path)
    assert run.returncode == 1
    results = sorted((json.loads(line) for line in run.lines), key=lambda r: r["line"])
    assert [set(r) for r in results] == [{"line", "task_id", "status", "files", "error"}] * 3
    assert [(r["line"], r["status"], len(r["files"])) for r in results] == [
        (1, "completed", 1),
        (2, "completed", 2),
        (3, "failed", 0),
    ]
    assert results[0]["error"] is None and "failed" in results[2]["error"]
    assert all((tmp_path / f).is_file() for r in results for f in r["files"])


def test_named_files_with_metadata_and_a_rerun_that_sends_nothing(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path, "A red fox!", {"prompt": "an owl", "n": 2})
    args = ["batch", str(jobs), "-o", "out", "--name", "{line}-{slug}-{index}", "--metadata"]
    run = apimart(*args, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    names = ["1-a-red-fox-0.png", "2-an-owl-0.png", "2-an-owl-1.png"]
    assert sorted(run.lines) == [f"out/{name}" for name in names]
    assert images(tmp_path / "out") == names
    meta = json.loads((tmp_path / "out" / "2-an-owl-1.json").read_text())
    assert meta["prompt"] == "an owl" and meta["index"] == 1 and meta["fields"] == {"n": 2}
    assert meta["task_id"].startswith("task_") and meta["file"] == "2-an-owl-1.png"
    assert leftovers(tmp_path / "out") == []
    again = apimart(*args, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(again.lines) == sorted(run.lines)
    assert len(posts(sandbox)) == 2
    assert "only apply" not in again.stderr  # the same options: nothing to say
    # A rerun with a new --name (and, before, without --metadata) says what it cannot change.
    other = apimart(
        "batch", str(jobs), "-o", "out", "--name", "{index}-{slug}", env=env, cwd=tmp_path
    )
    assert other.returncode == 0, other.stderr
    assert (
        "Note: --name only applies to images not saved yet; the jobs done before keep the "
        "files they were saved with." in other.stderr
    )
    assert sorted(other.lines) == sorted(run.lines)


def test_an_unknown_outcome_keeps_its_key_and_a_rerun_gets_its_task_without_paying_twice(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=500))
    jobs = write_jobs(tmp_path, "a fox", "an owl", "a bear")
    run = apimart("batch", str(jobs), "-o", "out", "--concurrency", "1", env=env, cwd=tmp_path)
    assert run.returncode == 5
    assert len(run.lines) == 2
    assert latest_states(tmp_path / "out")[1] == "unknown"
    assert "apimart resend" in run.stderr and "run the same command again" in run.stderr
    again = apimart("batch", str(jobs), "-o", "out", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert latest_states(tmp_path / "out")[1] == "completed"
    assert created(sandbox) == {"a fox": 1, "an owl": 1, "a bear": 1}
    keys = [r.headers["idempotency-key"] for r in sandbox.requests if r.path == SUBMIT]
    assert len(keys) == 4 and len(set(keys)) == 3  # line 1 sent again with its own key


def test_a_job_whose_key_resend_answered_is_not_sent_again_by_a_rerun(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=500))
    jobs = write_jobs(tmp_path, "a fox")
    run = apimart("batch", str(jobs), "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 5
    resent = apimart("resend", env=env, cwd=tmp_path)
    assert resent.returncode == 0, resent.stderr
    [task_id] = resent.lines

    again = apimart("batch", str(jobs), "-o", "out", "--interval", "0.1", env=env, cwd=tmp_path)

    assert again.returncode == 0, again.stderr
    assert [Path(line).name for line in again.lines] == [f"{task_id}_0.png"]
    # The key had its answer: sent again, a service that no longer held it would make a
    # second task.
    assert len(posts(sandbox)) == 2 and created(sandbox) == {"a fox": 1}


def test_a_missing_file_of_a_completed_job_is_downloaded_again(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path, "a fox", {"prompt": "an owl", "n": 2})
    run = apimart("batch", str(jobs), "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    removed = tmp_path / sorted(run.lines)[-1]
    removed.unlink()
    again = apimart("batch", str(jobs), "-o", "out", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(again.lines) == sorted(run.lines) and removed.is_file()
    assert "1 done, 1 to wait for" in again.stderr and "kept the existing" not in again.stderr
    assert len(posts(sandbox)) == 2


@pytest.mark.parametrize(
    "fault",
    [  # each held for an hour: the batch ending at all shows it was not held
        Fault("slow", method="POST", path=SUBMIT, delay=3600),  # a submission on its way
        Fault("slow", method="GET", path="/f/", delay=3600),  # a download on its way
    ],
    ids=["submission", "download"],
)
def test_a_timeout_ends_the_batch_at_its_deadline_whatever_is_in_flight(
    env: dict[str, str], tmp_path: Path, fault: Fault
) -> None:
    # Tasks that end at once: however loaded the machine, the job that is not held ends
    # well before the deadline, and only the held one is left unfinished.
    with Sandbox(SandboxConfig(duration=0)) as sandbox:
        sandbox.inject(fault)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        jobs = write_jobs(tmp_path, "a fox", "an owl")
        args = ["batch", str(jobs), "-o", "out", "--interval", "0.2"]
        run = apimart(*args, "--timeout", "3", env=user, cwd=tmp_path)
        assert run.returncode == 124, run.stderr
        held = [r for r in sandbox.requests if r.path.startswith(fault.path)]
        assert held[0].status is None, run.stderr  # still unanswered when the batch ended
        assert "Timed out after 3 s with 1 job(s) unfinished" in run.stderr
        assert "unknown" not in latest_states(tmp_path / "out").values()
        again = apimart(*args, env=user, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert created(sandbox) == {"a fox": 1, "an owl": 1}
        assert len(images(tmp_path / "out")) == 2 and leftovers(tmp_path / "out") == []


def test_adding_a_comment_to_the_jobs_file_resends_nothing(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path, "a fox", "a fox", "an owl")
    args = ["batch", str(jobs), "-o", "out", "--name", "{line}-{slug}-{index}"]
    run = apimart(*args, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    jobs.write_text("# the same jobs, moved down\n\n" + jobs.read_text())
    again = apimart(*args, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "Resuming from" in again.stderr and "3 done" in again.stderr
    assert sorted(again.lines) == sorted(run.lines)
    assert created(sandbox) == {"a fox": 2, "an owl": 1}  # two identical lines: two jobs
    records = [json.loads(line) for line in (tmp_path / "out" / MANIFEST).read_text().splitlines()]
    latest = {(r["digest"], r["occurrence"]): r for r in records}
    assert sorted((r["line"], r["state"]) for r in latest.values()) == [
        (3, "completed"),  # where the jobs are now
        (4, "completed"),
        (5, "completed"),
    ]
