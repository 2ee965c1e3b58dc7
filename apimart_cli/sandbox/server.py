"""HTTP plumbing: read a request, ask the sandbox for a `Reply`, put it on the wire.

A `Reply` says what to send and also how: all at once, throttled, one byte at a
time, cut short, with no length, or stalled mid-body. The sandbox decides; this
module only carries it out.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from apimart_cli.sandbox.clock import Clock


class Host(Protocol):
    """What serves the requests (`service.Sandbox`); this module only carries its replies."""

    clock: Clock

    def handle(
        self,
        origin: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        received: int | None = None,
    ) -> Reply: ...
    def log_request(self, origin: str, method: str, path: str, status: str, note: str) -> None: ...
    def pause(self, seconds: float | None) -> bool: ...


DOWNLOAD_CHUNK_BYTES = 64 * 1024
# An idle keep-alive connection is closed after this many seconds.
CONNECTION_TIMEOUT = 30.0
# A request body past this is read and dropped, not kept, and answered 413: more than any
# valid request (256 MB of references in all is 342 MB of base64).
MAX_KEPT_BODY_BYTES = 512 * 1024 * 1024
# Enough for 1,000 clients connecting at once; the default of 5 resets bursts.
LISTEN_BACKLOG = 1024


@dataclass
class Reply:
    """What to answer, and how to send it."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without a reply
    send: int | None = None  # send only this many bytes of the body, then close
    announce: int | None = None  # the Content-Length to announce, if not the body's
    sized: bool = True  # False: no Content-Length; the body ends when the connection closes
    rate: float | None = None  # bytes/second
    byte_interval: float | None = None  # send one byte, then wait this many seconds, and so on
    endless_headers: bool = False  # with byte_interval: drip a header that never ends
    stall: float | None = None  # after the body, hold the connection this long (0: forever)

    @property
    def closes(self) -> bool:
        """Whether the connection ends with this reply (its body is not whole or not framed)."""
        return (
            self.send is not None
            or not self.sized
            or self.stall is not None
            or (self.announce is not None and self.announce != len(self.body))
        )


class OriginServer(ThreadingHTTPServer):
    """One origin (the API or the image host), serving each connection in a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # stop() closes open connections itself rather than wait on them
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], host: Host, origin: str) -> None:
        super().__init__(address, _Handler)
        self.host, self.origin = host, origin
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 (not binding)
        return f"http://{shown}:{port}"

    def close_connections(self) -> None:
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):  # already closed by the client
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up (as tests do on purpose) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, asks the sandbox for the reply, writes it."""

    protocol_version = "HTTP/1.1"  # keep-alive; a reply without a length closes its connection
    server_version = "apimart-sandbox"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add about 40 ms to every small reply.
    disable_nagle_algorithm = True
    timeout = CONNECTION_TIMEOUT
    server: OriginServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr log; the sandbox logs its own line per request."""

    def _serve(self) -> None:
        started = time.monotonic()
        headers = {name.lower(): value for name, value in self.headers.items()}
        body, received = self._read_body()
        host, origin = self.server.host, self.server.origin
        reply = host.handle(origin, self.command, self.path, headers, body, received)
        if reply.drop:
            self.close_connection = True
        else:
            self._write(reply)
        status = "dropped" if reply.drop else str(reply.status)
        note = f"{(time.monotonic() - started) * 1000:.1f}ms"
        if origin == "image" and "authorization" in headers:
            note += " (an Authorization header was sent to the image host)"
        host.log_request(origin, self.command, self.path, status, note)

    def _read_body(self) -> tuple[bytes, int]:
        """The body (empty when too large to keep) and how many bytes it had."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return b"", 0
        if length <= MAX_KEPT_BODY_BYTES:
            return self.rfile.read(length), length
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, DOWNLOAD_CHUNK_BYTES))
            if not chunk:
                break
            left -= len(chunk)
        return b"", length - left

    def _read_chunked(self) -> tuple[bytes, int]:
        parts, received = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            part = self.rfile.read(size)
            received += len(part)
            if received <= MAX_KEPT_BODY_BYTES:
                parts.append(part)
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return (b"".join(parts) if received <= MAX_KEPT_BODY_BYTES else b""), received

    def _write(self, reply: Reply) -> None:
        if reply.endless_headers and reply.byte_interval is not None:
            self.wfile.write(f"HTTP/1.1 {reply.status} OK\r\nX-Padding: ".encode())
            self.wfile.flush()
            pause = self.server.host.pause
            try:  # a byte, then the interval, until the client or the sandbox hangs up
                while pause(reply.byte_interval):
                    self.wfile.write(b"a")
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        if reply.sized:
            length = len(reply.body) if reply.announce is None else reply.announce
            self.send_header("Content-Length", str(length))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.closes:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        body = reply.body if reply.send is None else reply.body[: reply.send]
        pause = self.server.host.pause
        if reply.byte_interval is not None:
            _send_dripping(self.wfile, body, reply.byte_interval, pause)
        else:
            now = self.server.host.clock.monotonic
            _send_throttled(self.wfile.write, body, reply.rate, pause, now)
        self.wfile.flush()
        if reply.stall is not None:
            pause(reply.stall or None)


def _send_dripping(wfile: Any, data: bytes, interval: float, pause: Callable[..., bool]) -> None:
    """One byte, then `interval` seconds, and so on, until the data ends or the sandbox stops."""
    for offset in range(len(data)):
        if offset and not pause(interval):
            return
        wfile.write(data[offset : offset + 1])
        wfile.flush()


def _send_throttled(
    write: Callable[[bytes], Any],
    data: bytes,
    rate: float | None,
    pause: Callable[..., bool],
    now: Callable[[], float],
) -> None:
    """Write data in chunks, pausing to hold `rate` bytes/second when one is set: each
    chunk goes out once its last byte is due, so the last one ends the transfer at
    len(data) / rate, never before."""
    if not rate:
        write(data)
        return
    chunk = max(1, min(DOWNLOAD_CHUNK_BYTES, int(rate / 10)))
    started = now()
    for offset in range(0, len(data), chunk):
        piece = data[offset : offset + chunk]
        ahead = (offset + len(piece)) / rate - (now() - started)
        if ahead > 0 and not pause(ahead):
            return
        write(piece)
