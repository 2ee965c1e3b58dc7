"""A loopback HTTP server that answers chosen requests a byte at a time.

It announces a large body, then sends one byte every `interval` seconds, as a
broken proxy or a hostile server might: httpx's per-read timeout never fires,
so only a limit on the whole request (or the command's deadline) ends it. With
`headers=True` it drips its headers instead, and never ends them.
Requests it is not told to drip are forwarded to `upstream` (a sandbox), or
answered at once with `body`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
}


@dataclass
class _Rule:
    method: str
    prefix: str
    times: int | None  # None: every matching request
    headers: bool = False  # drip the headers, not the body


class DripServer:
    def __init__(
        self,
        upstream: str | None = None,
        *,
        interval: float = 1.0,
        body: bytes = b"{}",
        content_type: str = "application/json",
    ) -> None:
        self.upstream = upstream
        self.interval = interval
        self.body = body
        self.content_type = content_type
        self.dripped = 0  # requests answered by dripping
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def drip(
        self, method: str, prefix: str, times: int | None = None, *, headers: bool = False
    ) -> None:
        """Drip the next `times` requests (all, if None) whose path starts with `prefix`:
        their body, or with `headers`, their headers."""
        with self._lock:
            self._rules.append(_Rule(method.upper(), prefix, times, headers))

    def stop_dripping(self) -> None:
        with self._lock:
            self._rules.clear()

    def __enter__(self) -> DripServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()  # every dripping reply ends
        self._server.shutdown()
        self._server.server_close()

    def _take(self, method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in self._rules:
                if rule.method == method and path.startswith(rule.prefix):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times <= 0:
                            self._rules.remove(rule)
                    self.dripped += 1
                    return rule
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def _answer(self, method: str) -> None:
                length = int(self.headers.get("content-length") or 0)
                content = self.rfile.read(length) if length else b""
                rule = server._take(method, self.path)
                if rule is not None and rule.headers:
                    self._drip_headers()
                elif rule is not None:
                    self._drip()
                elif server.upstream is not None:
                    self._forward(method, content)
                else:
                    self._send(200, {"Content-Type": server.content_type}, server.body)

            def _drip(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", server.content_type)
                self.send_header("Content-Length", "1000000")
                self.end_headers()
                try:
                    while not server._closing.wait(server.interval):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:  # the client gave up, as it should
                    pass
                self.close_connection = True

            def _drip_headers(self) -> None:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
                self.wfile.flush()
                try:
                    while not server._closing.wait(server.interval):
                        self.wfile.write(b"a")  # a header that never ends
                        self.wfile.flush()
                except OSError:
                    pass
                self.close_connection = True

            def _forward(self, method: str, content: bytes) -> None:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                reply = httpx.request(
                    method, f"{server.upstream}{self.path}", headers=headers, content=content
                )
                kept = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP_HEADERS}
                self._send(reply.status_code, kept, reply.content)

            def _send(self, status: int, headers: dict[str, str], content: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        return Handler
