"""An unknown outcome is resent with its key and paid for once, against a sandbox that
holds idempotency keys strictly (409 while in flight, 422 for another body): through a
pipeline of commands, and across a batch killed and interrupted again and again. The
rest of resending is in `tests/flows/test_resend.py`."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.e2e.conftest import API_KEY, COMMAND, png_size, shell
from tests.helpers.commands import run as apimart
from tests.helpers.records import MANIFEST, SUBMIT, Gate, history_rows, latest_records
from tests.helpers.waiting import wait_until


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
    argv = ["batch", "jobs.txt", "-o", "out", "--concurrency", "3", "--interval", "0.1"]

    def sending() -> int:
        """How many submissions the manifest has recorded as about to be sent."""
        text = manifest.read_text() if manifest.exists() else ""
        return text.count('"state": "submitting"')

    def conflicts() -> int:
        return sum(1 for r in list(sandbox.requests) if r.path == SUBMIT and r.status == 409)

    # Each signal, and Ctrl-C and SIGTERM also twice (quitting with submissions on their
    # way), in a seeded order.
    cycles = [(signal.SIGKILL, False), (signal.SIGKILL, False)]
    cycles += [(sig, twice) for sig in (signal.SIGTERM, signal.SIGINT) for twice in (False, True)]
    rng.shuffle(cycles)
    config = SandboxConfig(duration=0.4, strict_idempotency=True, seed=7)
    with Sandbox(config) as sandbox:
        # Each submission in flight a moment; what a kill cuts off stays in flight (the
        # gate shut) until the next run has resent its key and met the 409.
        gate = Gate(sandbox, working=0.3)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        said: list[str] = []  # every run's standard error, for a failure's message

        def signalled(sig: signal.Signals, twice: bool) -> None:
            """A run of the batch, signalled once `wanted` submissions are on their way."""
            before, met, left = sending(), conflicts(), gate.held + gate.working
            process = subprocess.Popen(
                [*COMMAND, *argv],
                env=user,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            lines: list[str] = []

            def read() -> None:
                assert process.stderr is not None
                for line in process.stderr:
                    lines.append(line)

            reader = threading.Thread(target=read, daemon=True)
            reader.start()

            def ended() -> bool:
                return process.poll() is not None

            if gate.shut_now:
                # It meets a 409 once it resends a key cut off (`left` of them, all to be
                # held); or its own submissions all wait at the gate before that key's
                # job; or it ended.
                wait_until(lambda: conflicts() > met or gate.held >= left + 3 or ended())
                gate.open()
            wanted = before + rng.randint(1, 3)
            if sig == signal.SIGKILL or twice:  # one held in flight, for the next run to meet
                wait_until(lambda: (sending() >= wanted and gate.shut_on_one_working()) or ended())
            else:
                wait_until(lambda: (sending() >= wanted and in_flight(sandbox)) or ended())
            process.send_signal(sig)
            if twice:  # the second once the first is handled, waiting for the one held
                wait_until(lambda: "recording the submissions" in "".join(lines) or ended())
                process.send_signal(sig)
            process.wait(timeout=60)
            reader.join(10)
            stderr = "".join(lines)
            how = f"{sig.name} twice" if twice else sig.name
            said.append(f"-- {how}, exit {process.returncode}:\n{stderr}")
            assert "Traceback" not in stderr and API_KEY not in stderr, stderr

        for sig, twice in cycles:
            signalled(sig, twice)
        gate.open()
        # Runs to the end: a job left unknown (a 409) is sent again with its key next time.
        for _ in range(4):
            wait_until(lambda: not in_flight(sandbox))
            final = apimart(*argv, env=user, cwd=tmp_path, timeout=120)
            said.append(f"-- to the end, exit {final.returncode}:\n{final.stderr}")
            if final.returncode == 0:
                break
            assert final.returncode == 5, final.stderr
        assert final.returncode == 0, final.stderr
        answered_409 = conflicts()

    transcript = "\n".join(said)
    made = sandbox.submissions()
    assert Counter(r.json["prompt"] for r in made) == dict.fromkeys(prompts, 1), transcript
    task_ids = {r.task_id for r in made}
    rows = history_rows(isolated)
    assert {row["task_id"] for row in rows} == task_ids, transcript
    assert all(row["state"] == "completed" for row in rows)
    latest = latest_records(out)
    assert {r["task_id"] for r in latest.values()} == task_ids
    assert {r["state"] for r in latest.values()} == {"completed"}
    assert len(list(out.glob("*.png"))) == len(prompts)
    assert answered_409 > 0, "no run met a key still in flight: " + transcript
    print(f"{len(cycles)} signals, {answered_409} answered 409")
