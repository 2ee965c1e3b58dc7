"""`--timeout` and the size bounds hold where the tool waits on its own standard
streams: an input left open by the command feeding it, an input faster than the
reader, a standard output on a full device.

A command here is a real process: the point is that it exits (exit 124 at the
deadline, exit 2 at the size bound) while its input is still open or still coming,
and what a write to a real, full descriptor does. What the service sends (an upload
dripping in, hostile ids and URLs) is in tests/flows/test_bounds.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.e2e.conftest import API_KEY, COMMAND, shell
from tests.helpers.commands import user_environment
from tests.helpers.records import submit_direct

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
    code, _, stderr = run_with_open_stdin([*args, "--timeout", "1"], task_id, env, tmp_path)
    assert code == 124, stderr


@pytest.mark.parametrize(
    "args", [["generate", "-"], ["batch", "-", "-o", "out"]], ids=["generate", "batch"]
)
def test_a_prompt_or_jobs_from_an_open_input_are_never_sent_after_the_timeout(
    args: list[str], sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    code, stdout, stderr = run_with_open_stdin([*args, "--timeout", "1"], "a fox", env, tmp_path)
    assert code == 124, stderr
    assert "standard input" in stderr
    assert stdout == ""
    assert sandbox.submissions() == []


# -- standard output on a full device --------------------------------------------------------


def into_a_full_disk(
    args: list[str], env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """`apimart ARGS` with its standard output on /dev/full, which refuses every write."""
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [*COMMAND, *args],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
            timeout=HUNG,
        )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args", [["generate", "a fox"], ["generate", "a fox", "--wait", "-o", "out"]]
)
def test_a_full_standard_output_after_paying_names_what_it_was_to_carry(
    args: list[str], sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    result = into_a_full_disk(args, env, tmp_path)
    [task] = sandbox.submissions()
    assert result.returncode == 1, result.stderr
    assert "Internal error" not in result.stderr and "internal error" not in result.stderr
    assert "Could not write to standard output: No space left on device" in result.stderr
    carried = result.stderr.split("What it was to carry:")[1]
    assert str(task.task_id) in carried
    assert "Traceback" not in result.stderr and API_KEY not in result.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_standard_output_of_a_command_that_pays_for_nothing_says_run_it_again(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = into_a_full_disk(["sizes"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Could not write to standard output: No space left on device" in result.stderr
    assert "Free some space, then run the command again." in result.stderr
    assert "history" not in result.stderr  # no task was paid for


@pytest.mark.parametrize("encoding", ["utf-8:strict", "ascii"])
def test_a_path_the_output_encoding_cannot_carry_is_written_never_an_internal_error(
    encoding: str, env: dict[str, str], tmp_path: Path
) -> None:
    """A folder named with bytes that are not UTF-8 (`-o $'\\xff'`), on a standard output
    that refuses what it cannot encode (a UTF-8 locale's default; PYTHONIOENCODING)."""
    folder = b"out\xff\xc3\xa9"  # not UTF-8, then an "é"
    result = subprocess.run(
        [*COMMAND, "--sandbox", "generate", "a fox", "--wait", "-o", folder],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        env={**env, "PYTHONIOENCODING": encoding},
        cwd=tmp_path,
        timeout=HUNG,
    )
    assert result.returncode == 0, result.stderr
    [path] = result.stdout.splitlines()
    [saved] = (tmp_path / folder.decode(errors="surrogateescape")).iterdir()
    if encoding == "ascii":  # what ASCII cannot carry, as its escape
        assert path == b"out\\udcff\\xe9/" + saved.name.encode()
    else:  # the very bytes the shell gave
        assert path == folder + b"/" + saved.name.encode()
    assert b"internal error" not in result.stderr.lower()


@pytest.mark.parametrize(
    ("pipeline", "code", "message"),
    [
        ("yes task_01abc | apimart status --timeout 1", 124, "still open"),
        ("yes | apimart generate --timeout 60", 2, "larger than 64 MiB"),
        # Jobs of 6 kB each: the bound is on the bytes, which 11,000 such lines reach
        # at a small part of the CPU that 11 million short ones take.
        (f"yes '{'a fox ' * 1000}' | apimart batch - -o out --timeout 60", 2, "larger than 64 MiB"),
    ],
    ids=["status", "generate", "batch"],
)
def test_an_endless_fast_input_ends_at_the_deadline_or_its_limit(
    pipeline: str, code: int, message: str, sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    """A writer faster than the reader neither holds the command past its deadline nor
    fills the memory: what is read waits for the reader, and is bounded."""
    run = shell(f"{pipeline}; echo rc=${{PIPESTATUS[1]}} >&2", env=env, cwd=tmp_path, timeout=HUNG)
    assert f"rc={code}" in run.stderr, run.stderr[-2000:]
    assert message in run.stderr
    assert sandbox.submissions() == []


def test_a_wait_under_a_low_limit_on_open_files_saves_every_image(tmp_path: Path) -> None:
    # Under `ulimit -n 70`, 100 tasks ending together had up to 64 polls in flight, a
    # socket each, beside the downloads' files: 15 of them failed with "Too many open
    # files" (77 under 50). The polls in flight now leave room for the rest.
    with Sandbox(SandboxConfig(duration=1.0)) as sandbox:
        ids = [submit_direct(sandbox, f"fox {i}", size="64x64") for i in range(100)]
        sandbox.configure(latency=0.25)  # each status request takes a while: many at once
        env = user_environment(sandbox.base_url, tmp_path / "home")
        run = shell(
            f"ulimit -n 70 && apimart -q wait -o {tmp_path / 'out'} {' '.join(ids)}", env=env
        )
    assert run.returncode == 0, run.stderr
    assert len(list((tmp_path / "out").glob("*.png"))) == 100
