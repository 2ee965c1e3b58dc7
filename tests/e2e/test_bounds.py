"""`--timeout` holds where the tool waits on something other than the API: standard
input left open by the command feeding it, and an upload's reply dripping in.

A command here is a real process: the point is that it exits, with exit 124,
while its input is still open or its upload reply still coming.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox
from tests.e2e.conftest import API_KEY, COMMAND, apimart
from tests.e2e.test_faults import history_rows, submit_direct

# Far beyond any --timeout given below: a command still running then never ends.
HUNG = 60.0


def run_with_open_stdin(
    args: list[str], first_line: str, env: dict[str, str], cwd: Path
) -> tuple[int, str, str]:
    """Run the command with one line on its standard input, which then stays open; its
    exit code and output once it exits on its own (it must, before HUNG)."""
    process = subprocess.Popen(
        [*COMMAND, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    try:
        process.stdin.write(first_line + "\n")
        process.stdin.flush()
        try:
            code = process.wait(timeout=HUNG)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"`apimart {' '.join(args)}` did not end while its input stayed open")
        stdout, stderr = process.stdout.read(), process.stderr.read()
    finally:
        process.stdin.close()
        process.stdout.close()
        process.stderr.close()
    assert API_KEY not in stdout + stderr and "Traceback" not in stderr, stderr
    return code, stdout, stderr


@pytest.mark.parametrize(
    "args",
    [["status"], ["download", "-o", "out"], ["wait", "-o", "out"]],
    ids=["status", "download", "wait"],
)
def test_reading_ids_from_an_open_input_ends_at_the_timeout(
    args: list[str], sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    task_id = submit_direct(sandbox)
    code, _, stderr = run_with_open_stdin([*args, "--timeout", "3"], task_id, env, tmp_path)
    assert code == 124, stderr


@pytest.mark.parametrize(
    "args", [["generate", "-"], ["batch", "-", "-o", "out"]], ids=["generate", "batch"]
)
def test_a_prompt_or_jobs_from_an_open_input_are_never_sent_after_the_timeout(
    args: list[str], sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    code, stdout, stderr = run_with_open_stdin([*args, "--timeout", "2"], "a fox", env, tmp_path)
    assert code == 124, stderr
    assert "standard input" in stderr
    assert stdout == ""
    assert sandbox.submissions() == []


# -- an upload's reply dripping in ---------------------------------------------------------


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    from apimart_cli.sandbox import encode_png

    path = tmp_path / "photo.png"
    path.write_bytes(encode_png(4, 4, b"".join(b"\x00" + b"\x80" * 12 for _ in range(4))))
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["upload", "photo.png"],
        ["generate", "a fox", "-i", "photo.png", "--refs", "upload"],
        ["batch", "jobs.txt", "-o", "out", "--refs", "upload"],
    ],
    ids=["upload", "generate", "batch"],
)
def test_an_upload_reply_dripping_in_ends_at_the_timeout(
    command: list[str], sandbox: Sandbox, env: dict[str, str], photo: Path, tmp_path: Path
) -> None:
    (tmp_path / "jobs.txt").write_text(json.dumps({"prompt": "a fox", "images": ["photo.png"]}))
    # 1 MB announced, a byte a second: a reply that would take twelve days.
    sandbox.inject(Fault("drip", method="POST", path="/v1/uploads/images", times=100))
    run = apimart(*command, "--timeout", "3", env=env, cwd=tmp_path, timeout=HUNG)
    assert run.returncode == 124, run.stderr
    assert sandbox.submissions() == []  # nothing paid for without its reference


# -- task ids that could not be passed back ------------------------------------------------


@pytest.mark.parametrize("task_id", ["-rf", "--help", "-"])
def test_a_task_id_starting_with_a_dash_is_a_malformed_reply(
    task_id: str, sandbox: Sandbox, env: dict[str, str], isolated: Path
) -> None:
    """An id the tool printed must work as an argument again: `-rf` never would."""
    sandbox.inject(Fault("task_id", method="POST", path="/v1/images/generations", task_id=task_id))
    run = apimart("generate", "a fox", env=env)
    assert run.returncode == 5, run.stderr
    assert run.stdout == ""
    assert "sent a task id that cannot be one" in run.stderr
    assert "-rf" not in run.stderr and "--help" not in run.stderr  # never echoed
    [row] = history_rows(isolated)
    assert (row["state"], row["task_id"]) == ("unknown", None)
