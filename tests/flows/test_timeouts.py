"""`--timeout` bounds the whole command: a slow image host or a dripping API cannot hold it.

Each command ends at its deadline with exit 124, keeps what it downloaded, says
how to resume, and the resume then completes the image byte for byte. The command
runs in this process against the sandbox: a run held past its deadline by what it
waits for is stopped by the runner's guard, and fails the test.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.helpers.commands import Run
from tests.helpers.commands import run as apimart
from tests.helpers.records import direct, leftovers, submit_direct, wait_completed

SIZE = "640x640"  # a noise image of about 1.2 MB: minutes at the slow rate
SLOW_RATE = 20_000  # bytes a second: above the stall threshold, far below the image
GRACE = 10.0  # "at once": the command may take this long past its timeout on a loaded machine
# before the runner takes it for a hang; the slow image would take a minute and a dripping
# reply never ends, so this still tells.


@pytest.fixture
def slow_host() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.1, noise=True, download_rate=SLOW_RATE)) as server:
        yield server


def image_bytes(sandbox: Sandbox, task_id: str) -> bytes:
    data = wait_completed(sandbox, task_id)
    return direct.get(data["result"]["images"][0]["url"][0]).content  # type: ignore[index]


def final_images(folder: Path) -> list[Path]:
    """The images under their final names (not part files, not a batch's manifest)."""
    return sorted(p for p in folder.iterdir() if p.suffix == ".png" and not p.name.startswith("."))


def timed(*args: str, timeout: float, env: dict[str, str], cwd: Path) -> Run:
    """`apimart ARGS... --timeout TIMEOUT`, which must be over at most GRACE after it."""
    return apimart(*args, "--timeout", f"{timeout:g}", env=env, cwd=cwd, timeout=timeout + GRACE)


def resume_command(run: Run) -> list[str]:
    match = re.search(r"^Resume with: apimart (.*)$", run.stderr, re.MULTILINE)
    assert match, run.stderr
    return match.group(1).split()


def assert_ended_at_its_timeout(run: Run) -> None:
    """Exit 124 (that it ended within GRACE of its timeout, `timed` guards)."""
    assert run.returncode == 124, run.stderr
    assert "Traceback" not in run.stderr


def assert_resumed_byte_for_byte(
    sandbox: Sandbox, task_id: str, out: Path, env: dict[str, str], cwd: Path, args: list[str]
) -> None:
    """The part file kept, then the resume (`args`) completes it with a Range request."""
    part = out / f".{task_id}_0.part"
    assert part.exists() and part.stat().st_size > 0  # what arrived is kept for the resume
    assert final_images(out) == []
    sandbox.config.download_rate = None  # the link gets better
    again = apimart(*args, env=env, cwd=cwd)
    assert again.returncode == 0, again.stderr
    [image] = final_images(out)
    expected = image_bytes(sandbox, task_id)
    assert hashlib.sha256(image.read_bytes()).digest() == hashlib.sha256(expected).digest()
    assert leftovers(out) == []
    assert any("range" in r.headers for r in sandbox.requests if r.origin == "image")


def assert_wait_resumes(
    sandbox: Sandbox, run: Run, task_id: str, env: dict[str, str], cwd: Path
) -> None:
    """The command printed is `apimart wait -o out ID`, and it completes the image."""
    resume = resume_command(run)
    assert resume == ["wait", "-o", "out", task_id]
    assert_resumed_byte_for_byte(sandbox, task_id, cwd / "out", env, cwd, resume)


def slow_env(env: dict[str, str], sandbox: Sandbox) -> dict[str, str]:
    # Without the provenance chunk, so that the saved image is the host's, byte for byte.
    return {**env, "APIMART_BASE_URL": sandbox.base_url, "APIMART_METADATA": "0"}


# -- a slow image host: wait, generate --wait, download, batch ---------------------------


@pytest.mark.parametrize("command", ["wait", "download"])
def test_wait_and_download_end_at_their_timeout_on_a_slow_image_host_and_resume(
    slow_host: Sandbox, env: dict[str, str], tmp_path: Path, command: str
) -> None:
    user = slow_env(env, slow_host)
    task_id = submit_direct(slow_host, size=SIZE)
    wait_completed(slow_host, task_id)
    run = timed(command, task_id, "-o", "out", timeout=2, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    assert f"1 task(s) unfinished: {task_id}" in run.stderr
    assert_wait_resumes(slow_host, run, task_id, user, tmp_path)


def test_generate_wait_ends_at_its_timeout_on_a_slow_image_host_and_resumes(
    slow_host: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    user = slow_env(env, slow_host)
    args = ["generate", "a fox", "-s", SIZE, "--wait", "-o", "out"]
    run = timed(*args, timeout=3, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    [task_id] = [str(r.task_id) for r in slow_host.submissions()]
    assert_wait_resumes(slow_host, run, task_id, user, tmp_path)


def test_batch_ends_at_its_timeout_on_a_slow_image_host_and_resumes(
    slow_host: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    user = slow_env(env, slow_host)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(json.dumps({"prompt": "a fox", "size": SIZE}) + "\n")
    args = ["batch", str(jobs), "-o", "out", "--interval", "0.2"]
    run = timed(*args, timeout=3, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    assert "Timed out after 3 s with 1 job(s) unfinished" in run.stderr
    [task_id] = [str(r.task_id) for r in slow_host.submissions()]
    # A batch resumes by running the same command again.
    assert_resumed_byte_for_byte(slow_host, task_id, tmp_path / "out", user, tmp_path, args)
    assert len(slow_host.submissions()) == 1  # the rerun sent nothing again


# -- a dripping API: status, balance, generate, download ---------------------------------


def drip(sandbox: Sandbox, method: str, path: str) -> None:
    """Every matching request, until `sandbox.heal()`: a large body announced, then a
    byte every half second."""
    sandbox.inject(Fault("drip", method=method, path=path, times=1_000_000, interval=0.5))


def drip_env(env: dict[str, str], sandbox: Sandbox) -> dict[str, str]:
    return {**env, "APIMART_BASE_URL": sandbox.base_url, "APIMART_METADATA": "0"}


def requests_to(sandbox: Sandbox, method: str, path: str) -> int:
    return sum(r.method == method and r.path.startswith(path) for r in sandbox.requests)


def test_status_ends_at_its_timeout_against_a_dripping_api(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    task_id = submit_direct(sandbox)
    drip(sandbox, "GET", "/v1/tasks/")
    user = drip_env(env, sandbox)
    run = timed("status", task_id, timeout=1, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    assert f"Ask again with: apimart status {task_id}" in run.stderr
    sandbox.heal()
    again = apimart("status", task_id, env=user, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(task_id)


def test_balance_ends_at_its_timeout_against_a_dripping_api(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    drip(sandbox, "GET", "/v1/balance")
    user = drip_env(env, sandbox)
    run = timed("balance", timeout=1, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    sandbox.heal()
    again = apimart("balance", env=user, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.lines[0].startswith("remaining\t")


def test_generate_ends_at_its_timeout_against_a_dripping_api(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    drip(sandbox, "POST", "/v1/images/generations")
    user = drip_env(env, sandbox)
    run = timed("generate", "a fox", timeout=2, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    assert run.stdout == ""
    # It was sent, so its outcome is unknown: not resent.
    assert requests_to(sandbox, "POST", "/v1/images/generations") == 1
    assert "the task may have been created" in run.stderr and "Idempotency key" in run.stderr


def test_generate_wait_and_download_end_at_their_timeout_against_a_dripping_api_and_resume(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    user = drip_env(env, sandbox)
    drip(sandbox, "GET", "/v1/tasks/")  # the submission goes through; every poll drips
    run = timed("generate", "a fox", "--wait", "-o", "out", timeout=2, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    [task_id] = [str(r.task_id) for r in sandbox.submissions()]
    resume = resume_command(run)
    assert resume == ["wait", "-o", "out", task_id]

    run = timed("download", task_id, "-o", "out", timeout=1, env=user, cwd=tmp_path)
    assert_ended_at_its_timeout(run)
    assert resume_command(run) == resume

    sandbox.heal()
    again = apimart(*resume, env=user, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    [image] = final_images(tmp_path / "out")
    assert image.read_bytes() == image_bytes(sandbox, task_id)
