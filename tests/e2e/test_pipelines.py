"""The README's pipelines, run for real against the sandbox: what takes processes of
their own (a shell pipeline, a terminal, a reader that goes away, the sandbox command
as a server). The one-command flows beside them are in `tests/flows/test_pipelines.py`."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig, SystemClock
from tests.e2e.conftest import API_KEY, COMMAND, png_size, shell
from tests.helpers.commands import run as apimart_here
from tests.helpers.waiting import wait_until


def test_generate_piped_into_wait_saves_images(env: dict[str, str], tmp_path: Path) -> None:
    run = shell(
        'apimart generate "a red fox" -s 16:9 -r 2k -n 2 | apimart wait -o out',
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    paths = sorted(Path(tmp_path, line) for line in run.lines)
    assert [p.name.rsplit("_", 1)[1] for p in paths] == ["0.png", "1.png"]
    assert all(png_size(p) == (2048, 1152) for p in paths)
    assert not list((tmp_path / "out").glob(".*.part"))


def test_generate_json_parsed_and_fanned_out_with_xargs(
    env: dict[str, str], tmp_path: Path
) -> None:
    script = (
        "printf '%s\\n' fox owl bear | xargs -I{} apimart generate 'a {} in the snow' --json"
        " | python3 -c 'import json,sys; [print(json.loads(l)[\"task_id\"]) for l in sys.stdin]'"
        " | xargs apimart status"
    )
    run = shell(script, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = [line.split("\t") for line in run.lines]
    assert len(rows) == 3
    assert all(
        row[0].startswith("task_") and row[1] in {"submitted", "processing", "completed"}
        for row in rows
    )


def test_sandbox_command_as_its_own_process(env: dict[str, str], tmp_path: Path) -> None:
    """The server is the process here; the command that uses it may run in this one."""
    server = subprocess.Popen(
        [*COMMAND, "sandbox", "--port", "0", "--duration", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        base_url = server.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        user = {**env, "APIMART_BASE_URL": base_url, "APIMART_API_KEY": "anything"}
        run = apimart_here(
            "generate", "an owl", "--wait", "-o", "out", "--json", env=user, cwd=tmp_path
        )
        assert run.returncode == 0, run.stderr
        [line] = run.lines
        data = json.loads(line)
        assert data["status"] == "completed"
        assert png_size(tmp_path / data["files"][0]) == (1024, 1024)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_paths_stay_on_stdout_while_bars_draw_on_a_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    """stderr a terminal (progress bars), stdout a file: the paths must land in the file."""
    import os
    import pty

    leader, follower = pty.openpty()
    with (tmp_path / "paths.txt").open("w") as paths:
        result = subprocess.run(
            [*COMMAND, "generate", "a fox", "--wait", "-o", "out"],
            stdout=paths,
            stderr=follower,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
            timeout=60,
        )
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    os.close(leader)
    assert result.returncode == 0, screen.decode(errors="replace")
    [path] = (tmp_path / "paths.txt").read_text().splitlines()
    assert png_size(tmp_path / path) == (1024, 1024)
    assert API_KEY.encode() not in screen


class _HeldUntil:
    """The sandbox's time, real, except that a slow reply is held until `released()`
    holds (or the hang guard passes), however long its fault says."""

    def __init__(self, released: Callable[[], bool]) -> None:
        self._real, self._released = SystemClock(), released

    def monotonic(self) -> float:
        return self._real.monotonic()

    def time(self) -> float:
        return self._real.time()

    def advance(self, seconds: float) -> None:
        self._real.advance(seconds)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            wait_until(self._released, what="the reader going away", must=False)


def test_a_reader_that_goes_away_early_ends_in_141_with_every_image_saved(
    env: dict[str, str], tmp_path: Path
) -> None:
    gone = tmp_path / "reader-gone"
    with Sandbox(SandboxConfig(duration=0.6), clock=_HeldUntil(gone.exists)) as sandbox:
        # Two of the three images are held until the reader has gone, so the paths they
        # print meet a pipe with no reader, however loaded the machine.
        sandbox.inject(Fault("slow", path="/f/", times=2, delay=1.0))
        run = shell(
            'apimart generate "a fox" -n 3 --wait -o out'
            ' | (read -r first; echo "$first"; exec 0<&-; : > reader-gone)',
            env={**env, "APIMART_BASE_URL": sandbox.base_url},
            cwd=tmp_path,
        )
    assert run.returncode == 141, run.stderr  # pipefail: apimart's own status
    assert len(run.lines) == 1
    assert len(list((tmp_path / "out").glob("*.png"))) == 3
    assert "Error" not in run.stderr
