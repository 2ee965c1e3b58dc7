"""An unknown outcome is resent with its key and paid for once, against a sandbox that
holds idempotency keys strictly (409 while in flight, 422 for another body)."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig, encode_png
from tests.e2e.conftest import API_KEY, COMMAND, apimart, png_size, shell

SUBMIT = "/v1/images/generations"
MANIFEST = "batch-manifest.jsonl"


def until(condition: Callable[[], object], timeout: float = 30) -> None:
    """Wait for `condition` to hold (polled), or fail the test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.02)


def history_rows(home: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(home / "data" / "history.sqlite3") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM tasks ORDER BY id").fetchall()
    db.close()
    return rows


def in_flight(sandbox: Sandbox) -> bool:
    """Whether a submission is still being processed (its reply not yet made)."""
    return any(r.status is None and r.path == SUBMIT for r in list(sandbox.requests))


@pytest.mark.parametrize(
    "fault",
    [
        Fault("after_create", method="POST", path=SUBMIT, status=502),  # made; reply lost
        Fault("drop", method="POST", path=SUBMIT),  # never made: the connection closed
    ],
    ids=["reply-lost-after-the-task-was-made", "request-never-made-a-task"],
)
def test_generate_unknown_then_resend_into_wait_saves_the_image_paid_once(
    env: dict[str, str], isolated: Path, tmp_path: Path, fault: Fault
) -> None:
    with Sandbox(SandboxConfig(duration=0.3, strict_idempotency=True)) as sandbox:
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        sandbox.inject(fault)
        lost = apimart("generate", "a lighthouse at dawn", env=user)
        assert lost.returncode == 5, lost.stderr
        assert lost.stdout == ""
        [row] = history_rows(isolated)
        key = row["idempotency_key"]
        assert (row["state"], row["task_id"]) == ("unknown", None)
        assert f"apimart resend {key}" in lost.stderr

        run = shell(f"apimart resend | apimart wait -o '{tmp_path / 'out'}'", env=user)

    assert run.returncode == 0, run.stderr
    [saved] = run.lines
    assert png_size(Path(saved)) == (1024, 1024)
    [made] = sandbox.submissions()  # paid once
    assert Path(saved).name == f"{made.task_id}_0.png"
    keys = [r.headers["idempotency-key"] for r in sandbox.requests if r.path == SUBMIT]
    assert keys == [key, key]
    [row] = history_rows(isolated)
    assert (row["task_id"], row["state"], row["idempotency_key"]) == (
        made.task_id,
        "completed",
        key,
    )


def test_random_kills_of_a_batch_pay_once_per_job_and_the_history_holds_every_one(
    env: dict[str, str], isolated: Path, tmp_path: Path
) -> None:
    rng = random.Random(20261206)
    prompts = [f"a fox number {i}" for i in range(12)]
    (tmp_path / "jobs.txt").write_text("\n".join(prompts) + "\n")
    out = tmp_path / "out"
    manifest = out / MANIFEST
    argv = [*COMMAND, "batch", "jobs.txt", "-o", "out", "--concurrency", "3", "--interval", "0.1"]

    def sending() -> int:
        """How many submissions the manifest has recorded as about to be sent."""
        text = manifest.read_text() if manifest.exists() else ""
        return text.count('"state": "submitting"')

    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT] * 3
    rng.shuffle(signals)
    config = SandboxConfig(duration=0.4, strict_idempotency=True, seed=7)
    with Sandbox(config) as sandbox:
        # Every submission is a while in flight: kills land mid-request, and the next run
        # resends a key while the service still works on it (409).
        sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=1.5, times=10_000))
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        for sig in signals:
            before = sending()
            process = subprocess.Popen(
                argv,
                env=user,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            wanted = before + rng.randint(1, 3)  # killed once this many are on their way
            until(
                lambda: (sending() >= wanted and in_flight(sandbox)) or process.poll() is not None  # noqa: B023
            )
            process.send_signal(sig)
            if sig != signal.SIGKILL and rng.random() < 0.6:
                process.send_signal(sig)  # a second one: quit with submissions on their way
            _, stderr = process.communicate(timeout=60)
            assert "Traceback" not in stderr and API_KEY not in stderr, stderr
        conflicts = sum(1 for r in sandbox.requests if r.path == SUBMIT and r.status == 409)
        # Runs to the end: a job left unknown (a 409) is sent again with its key next time.
        for _ in range(4):
            until(lambda: not in_flight(sandbox))
            final = apimart(*argv[len(COMMAND) :], env=user, cwd=tmp_path, timeout=120)
            if final.returncode == 0:
                break
            assert final.returncode == 5, final.stderr
        assert final.returncode == 0, final.stderr

    made = sandbox.submissions()
    assert Counter(r.json["prompt"] for r in made) == dict.fromkeys(prompts, 1)
    task_ids = {r.task_id for r in made}
    rows = history_rows(isolated)
    assert {row["task_id"] for row in rows} == task_ids, "the history holds every task"
    assert all(row["state"] == "completed" for row in rows)
    latest = {}
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        latest[record["line"]] = record
    assert {r["task_id"] for r in latest.values()} == task_ids
    assert {r["state"] for r in latest.values()} == {"completed"}
    assert len(list(out.glob("*.png"))) == len(prompts)
    assert conflicts > 0, "no run resent a key still in flight: the 409 path went untried"
    print(f"{len(signals)} kills, {conflicts} answered 409")


def test_a_batch_job_whose_reference_changed_keeps_its_key_until_the_file_is_back(
    env: dict[str, str], tmp_path: Path
) -> None:
    photo = tmp_path / "fox.png"
    photo.write_bytes(encode_png(4, 4, (b"\x00" + bytes([200, 90, 20]) * 4) * 4))
    original = photo.read_bytes()
    (tmp_path / "jobs.txt").write_text(json.dumps({"prompt": "ink it", "images": ["fox.png"]}))
    argv = ["batch", "jobs.txt", "-o", "out", "--interval", "0.1"]
    with Sandbox(SandboxConfig(duration=0.3, strict_idempotency=True)) as sandbox:
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=500))
        lost = apimart(*argv, env=user, cwd=tmp_path)
        assert lost.returncode == 5, lost.stderr
        # The file is edited before the rerun.
        photo.write_bytes(encode_png(4, 4, (b"\x00" + bytes([20, 90, 200]) * 4) * 4))

        refused = apimart(*argv, env=user, cwd=tmp_path)

        assert refused.returncode == 2, refused.stderr
        assert "changed since idempotency key" in refused.stderr
        photo.write_bytes(original)
        again = apimart(*argv, env=user, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(again.lines) == 1
    [made] = sandbox.submissions()
    keys = [r.headers["idempotency-key"] for r in sandbox.requests if r.path == SUBMIT]
    assert len(keys) == 2 and len(set(keys)) == 1  # nothing sent while the file differed
    assert Path(tmp_path / again.lines[0]).name.startswith(str(made.task_id))
