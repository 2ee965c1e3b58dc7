"""An unknown outcome is resent with its key and paid for once, against a sandbox that
holds idempotency keys strictly (409 while in flight, 422 for another body)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig, encode_png
from tests.e2e.conftest import API_KEY, COMMAND, apimart, png_size, shell
from tests.helpers.records import history_rows
from tests.helpers.waiting import wait_until

SUBMIT = "/v1/images/generations"
MANIFEST = "batch-manifest.jsonl"


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


HELD = 99.0  # the delay of the "slow" fault that `Gate` turns into its own wait
WORKING = 0.8  # seconds a submission is in flight at the sandbox, gate open


class Gate:
    """The sandbox's submissions, each in flight WORKING seconds; while the gate is shut,
    they stay in flight until it opens (so that a run after a kill meets them there)."""

    def __init__(self, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self.held = 0  # submissions waiting at the shut gate
        real = sandbox.pause

        def pause(seconds: float | None) -> bool:
            if seconds != HELD:
                return real(seconds)
            with self._lock:
                self.held += 1
            self._open.wait(60)
            with self._lock:
                self.held -= 1
            return real(WORKING)

        monkeypatch.setattr(sandbox, "pause", pause)
        sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=HELD, times=10_000))

    @property
    def shut_now(self) -> bool:
        return not self._open.is_set()

    def shut(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()


def test_random_kills_of_a_batch_pay_once_per_job_and_the_history_holds_every_one(
    env: dict[str, str], isolated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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

    signals = [signal.SIGKILL, signal.SIGTERM, signal.SIGINT] * 3
    rng.shuffle(signals)
    config = SandboxConfig(duration=0.4, strict_idempotency=True, seed=7)
    with Sandbox(config) as sandbox:
        gate = Gate(sandbox, monkeypatch)
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        said: list[str] = []  # every run's standard error, for a failure's message
        for sig in signals:
            before, met = sending(), conflicts()
            process = subprocess.Popen(
                [*COMMAND, *argv],
                env=user,
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            # After a kill with submissions left in flight, this run resends their keys
            # while the service still works on them: the gate opens once it has met a 409.
            if gate.shut_now:  # (a loaded machine may be slow to get there: then it opens)
                wait_until(
                    lambda: conflicts() > met or gate.held >= 3 or process.poll() is not None,  # noqa: B023
                    must=False,
                )
                gate.open()
            wanted = before + rng.randint(1, 3)  # signalled once this many are on their way
            wait_until(
                lambda: (sending() >= wanted and in_flight(sandbox)) or process.poll() is not None  # noqa: B023
            )
            twice = sig != signal.SIGKILL and rng.random() < 0.6
            if sig == signal.SIGKILL or twice:
                gate.shut()  # what is in flight stays there for the next run to meet
            process.send_signal(sig)
            if twice:
                # A second one quits with submissions on their way; sent again until it
                # lands (two at once may arrive as one, which waits for the shut gate).
                while True:
                    process.send_signal(sig)
                    try:
                        process.wait(timeout=2)
                        break
                    except subprocess.TimeoutExpired:
                        continue
            _, stderr = process.communicate(timeout=60)
            said.append(f"-- {sig.name}, exit {process.returncode}:\n{stderr}")
            assert "Traceback" not in stderr and API_KEY not in stderr, stderr
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
    latest = {}
    for line in manifest.read_text().splitlines():
        record = json.loads(line)
        latest[record["line"]] = record
    assert {r["task_id"] for r in latest.values()} == task_ids
    assert {r["state"] for r in latest.values()} == {"completed"}
    assert len(list(out.glob("*.png"))) == len(prompts)
    assert answered_409 > 0, "no run met a key still in flight: " + transcript
    print(f"{len(signals)} signals, {answered_409} answered 409")


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
