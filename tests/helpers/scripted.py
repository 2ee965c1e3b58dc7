"""A small API on 127.0.0.1 that answers what a test scripts: for what the sandbox's
faults cannot do, such as a task whose fields the test writes (a failure reason that
echoes the caller's key or drives the terminal), or a submission held open until the
test has done something (locked the history) and then let go.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, bytes] | tuple[int, bytes, dict[str, str]]  # with headers of its own
# A reply from the request's path and headers (lower-case names).
Script = Callable[[str, dict[str, str]], Reply]


def json_reply(value: Any, status: int = 200) -> Reply:
    return status, json.dumps(value).encode()


def key_of(headers: dict[str, str]) -> str:
    return headers.get("authorization", "").removeprefix("Bearer ")


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Scripted:
    """The scripted API. `hold` (if set) keeps each POST open until `release` is set."""

    submit: Script = lambda path, headers: json_reply(
        {"code": 200, "data": [{"status": "submitted", "task_id": "task_01SCRIPTED"}]}
    )
    task: Script = lambda path, headers: json_reply({"code": 200, "data": {}})
    balance: Script = lambda path, headers: json_reply({"success": True})  # and any other GET
    hold: bool = False
    received: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    seen: list[Seen] = field(default_factory=list)
    base_url: str = ""

    def posts(self) -> list[Seen]:
        return [request for request in self.seen if request.method == "POST"]

    def reply(self, method: str, path: str, headers: dict[str, str]) -> Reply:
        self.seen.append(Seen(method, path, headers))
        if method == "POST":
            self.received.set()
            if self.hold:
                self.release.wait(30)
            return self.submit(path, headers)
        if path.startswith("/v1/tasks/"):
            return self.task(path, headers)
        return self.balance(path, headers)


@contextmanager
def scripted_api(api: Scripted) -> Iterator[Scripted]:
    """Serve `api` on a free port of 127.0.0.1 for the `with` block."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, body, *more = api.reply(self.command, self.path, headers)
            self.send_response(status)
            for name, value in (more[0] if more else {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.release.set()
        server.shutdown()
        server.server_close()
