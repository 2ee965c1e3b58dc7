"""Bounds on what the service sends: an upload's reply dripping in ends at `--timeout`
(exit 124, nothing paid for), a task id that could not be passed back is a malformed
reply, and a hostile result URL fails its image clearly. The command runs in this
process; where its own standard streams matter (an input left open, a full standard
output, a pipeline), it is in tests/e2e/test_bounds.py.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart
from tests.helpers.records import history_rows
from tests.helpers.scripted import Script, Scripted, json_reply, scripted_api

# Far beyond any --timeout given below: a command still running then never ends.
HUNG = 60.0


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
    run = apimart(*command, "--timeout", "1", env=env, cwd=tmp_path, timeout=HUNG)
    assert run.returncode == 124, run.stderr
    assert [r.path for r in sandbox.requests if r.method == "POST"] == ["/v1/uploads/images"]
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


# The Authorization header the service got, echoed back base64-encoded.
BEARER_BASE64 = base64.b64encode(f"Bearer {API_KEY}".encode()).decode()


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
        ("https://cdn.test/x.png?auth=" + BEARER_BASE64, None, 5, "holds the API key"),
        ("loop", None, 5, "redirected"),
    ],
    ids=["bracket", "long-label", "expired-1e18", "escape", "key", "key-base64", "redirect-loop"],
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
