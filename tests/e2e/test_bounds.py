"""`--timeout` holds where the tool waits on something other than the API: standard
input left open by the command feeding it, and an upload's reply dripping in.

A command here is a real process: the point is that it exits, with exit 124,
while its input is still open or its upload reply still coming.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox
from tests.e2e.conftest import API_KEY, COMMAND, apimart, shell
from tests.helpers.records import history_rows, submit_direct
from tests.helpers.scripted import Script, Scripted, json_reply, scripted_api

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


# -- hostile result URLs ---------------------------------------------------------------------


@contextmanager
def redirect_loop() -> Iterator[str]:
    """An image host whose every answer is a redirect to itself."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/loop.png"
    finally:
        server.shutdown()
        server.server_close()


def completed_with(url: str, expires_at: int = 4_102_444_800) -> Script:
    data = {"id": "task_1", "status": "completed", "progress": 100}
    data["result"] = {"images": [{"url": [url], "expires_at": expires_at}]}
    return lambda path, headers: json_reply({"code": 200, "data": data})


@pytest.mark.parametrize(
    ("url", "expires_at", "code", "message"),
    [
        ("http://[::1", None, 5, "cannot be fetched (Invalid IPv6 URL)"),
        ("https://" + "a" * 300 + ".test/x.png", None, 5, "longer than a host name can be"),
        ("https://cdn.test/x.png", -(10**18), 1, "out of any calendar's range"),
        ("https://cdn.test/\x1b]0;owned\x07.png", None, 5, "spaces or control characters"),
        ("https://cdn.test/x.png?sig=" + API_KEY, None, 5, "holds the API key"),
        ("loop", None, 5, "redirected"),
    ],
    ids=["bracket", "long-label", "expired-1e18", "escape", "key", "redirect-loop"],
)
def test_a_hostile_result_url_fails_its_image_clearly(
    url: str, expires_at: int | None, code: int, message: str, env: dict[str, str], tmp_path: Path
) -> None:
    with redirect_loop() as loop:
        api = Scripted(
            task=completed_with(loop if url == "loop" else url, expires_at or 4_102_444_800)
        )
        with scripted_api(api):
            user = {**env, "APIMART_BASE_URL": api.base_url}
            run = apimart("download", "task_1", "-o", "out", env=user, cwd=tmp_path, timeout=HUNG)
    assert run.returncode == code, run.stderr
    assert message in run.stderr
    assert "Internal error" not in run.stderr and "\x1b" not in run.stderr
    assert run.stdout == ""
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


# -- standard output on a full device --------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "args", [["generate", "a fox"], ["generate", "a fox", "--wait", "-o", "out"]]
)
def test_a_full_standard_output_after_paying_names_what_it_was_to_carry(
    args: list[str], sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [*COMMAND, *args],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=HUNG,
        )
    [task] = sandbox.submissions()
    assert result.returncode == 1, result.stderr
    assert "Internal error" not in result.stderr and "internal error" not in result.stderr
    assert "Could not write to standard output: No space left on device" in result.stderr
    carried = result.stderr.split("What it was to carry:")[1]
    assert str(task.task_id) in carried
    assert "Traceback" not in result.stderr and API_KEY not in result.stderr


@pytest.mark.parametrize(
    ("pipeline", "code", "message"),
    [
        ("yes task_01abc | apimart status --timeout 2", 124, "still open"),
        ("yes | apimart generate --timeout 60", 2, "larger than 64 MiB"),
        ("yes 'a fox' | apimart batch - -o out --timeout 60", 2, "larger than 64 MiB"),
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
