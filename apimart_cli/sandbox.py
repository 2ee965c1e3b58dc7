"""A local stand-in for the APIMart image API, on loopback, standard library only.

Two origins run in daemon threads: the API (`base_url`) and the image host
(`image_base_url`, another port, like the real storage host). Tasks advance
submitted -> processing -> completed over `SandboxConfig.duration` seconds and
their images are real PNGs of the size the API's table gives. Tests inject
faults (`Sandbox.inject`, or `POST /__sandbox/faults` from another process)
and read back every request (`Sandbox.requests`, or `GET /__sandbox/requests`).

    with Sandbox(SandboxConfig(duration=0.5)) as sandbox:
        httpx.post(f"{sandbox.base_url}/v1/images/generations", ...)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import math
import random
import re
import secrets
import socket
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import urlsplit

from apimart_cli.constants import DEFAULT_MODEL, MAX_IMAGES_PER_TASK, MAX_REFERENCES
from apimart_cli.errors import UsageError
from apimart_cli.images import SNIFF_BYTES, image_dimensions
from apimart_cli.sizes import RESOLUTIONS, parse_size, pixels_for

# Task ids: "task_01K" and 23 Crockford base32 characters, like the service's.
TASK_ID_PREFIX = "task_01K"
TASK_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
TASK_ID_RANDOM_CHARS = 23
# The share of `duration` a task spends "submitted" before "processing".
SUBMITTED_SHARE = 0.1
# Made-up prices per image (credits are ten times the cost, as in api.md's example).
COST_PER_IMAGE = {"1k": 0.05, "2k": 0.08, "4k": 0.12}
CREDITS_PER_COST = 10
REMAIN_BALANCE = 10.5
DEFAULT_PIXELS = (1024, 1024)
# PNG: a low zlib level keeps a 4k image well under a second to make.
PNG_ZLIB_LEVEL = 1
IMAGE_CACHE_ENTRIES = 16  # a 4k noise image is 25 MB
DOWNLOAD_CHUNK_BYTES = 64 * 1024
# An idle keep-alive connection is closed after this many seconds.
CONNECTION_TIMEOUT = 30.0
# How often the serving loops look for a stop request.
SHUTDOWN_POLL_SECONDS = 0.01

FAULT_KINDS = frozenset(
    {
        "status",
        "malformed",
        "drop",
        "slow",
        "truncate",
        "after_create",
        "html",
        "content_type",
        "huge",
    }
)
# Requests kept for tests and the admin endpoint; the older half goes past this.
MAX_RECORDED_REQUESTS = 10_000
# "huge": a reply far larger than any real one (the client must cap what it reads).
HUGE_BODY_BYTES = 16 * 1024 * 1024
# A result URL whose last part tries to climb out of the user's output folder.
HOSTILE_URL_PREFIX = "..%2F..%2F"
SUBMIT_PATH = "/v1/images/generations"
TASK_PATH_PREFIX = "/v1/tasks/"
BALANCE_PATHS = ("/v1/balance", "/v1/user/balance")
ADMIN_PREFIX = "/__sandbox/"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "payment_required",
    404: "not_found_error",
    410: "not_found_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
MALFORMED_BODY = b'{"code": 200, "data": {"status": "submi'
HTML_PAGE = "<html><head><title>{0}</title></head><body><h1>{0}</h1><hr>nginx</body></html>"
_DATA_URI_RE = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_IMAGE_PATH_RE = re.compile(r"^/f/image/(?:\.\.%2F)*(task_[0-9A-Z]+)_(\d+)\.png$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class SandboxConfig:
    """How the sandbox behaves. Every field has a default that makes a quick, happy API."""

    duration: float = 3.0  # seconds from submit to a final status
    latency: float = 0.0  # seconds added before every API reply (not image downloads)
    download_rate: float | None = None  # bytes/second per image download; None = unlimited
    failure_rate: float = 0.0  # probability that a task ends "failed"
    fail_word: str = "sandbox:fail"  # a prompt containing this ends "failed"
    cancel_word: str = "sandbox:cancel"  # a prompt containing this ends "cancelled"
    hostile_word: str = "sandbox:hostile-url"  # ...gets result URLs named ..%2F..%2F<name>
    submit_rate: float | None = None  # submissions per second before 429; None = unlimited
    image_ttl: float = 86400.0  # seconds from completion until image URLs answer 410
    noise: bool = False  # incompressible images of random pixels, for download benchmarks
    seed: int = 0


@dataclass
class Fault:
    """A one-shot misbehaviour for the next `times` requests matching method and path prefix."""

    kind: str  # one of FAULT_KINDS
    method: str = "GET"
    path: str = "/"  # a prefix: "/v1/tasks/", "/v1/images/generations", "/f/" (image host)
    times: int = 1
    status: int = 500  # for "status" and "after_create"
    retry_after: str | None = None  # Retry-After for "status"
    html: bool = False  # "status" with a gateway's HTML page instead of JSON
    delay: float = 0.0  # for "slow"
    content_type: str = "text/html"  # for "content_type"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(sorted(FAULT_KINDS))}")
        if not isinstance(self.times, int) or not isinstance(self.status, int):
            raise ValueError("fault times and status must be integers")

    def matches(self, method: str, path: str) -> bool:
        return self.method.upper() == method and path.startswith(self.path)

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A fault from the admin endpoint's JSON; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:  # "kind" missing
            raise ValueError(str(exc)) from None


@dataclass
class RecordedRequest:
    """One request as the sandbox saw it, on either origin."""

    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names
    json: Any  # the parsed body, or None
    origin: str  # "api" or "image"
    status: int | None = None  # the reply's status; None while in flight or when dropped
    task_id: str | None = None  # set on a submission that created a task


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without a reply
    truncate: bool = False  # announce the whole body, send half, close
    rate: float | None = None  # bytes/second, for image downloads


@dataclass
class _Task:
    id: str
    prompt: str
    n: int
    pixels: tuple[int, int]
    outcome: str  # "completed", "failed" or "cancelled"
    error: str | None
    cost: float
    started: float  # time.monotonic()
    created: float  # time.time()


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Reply:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return _Reply(status, body, headers=headers or {})


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> _Reply:
    """The API's error body: `{"error": {"code", "message", "type"}}`."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json_reply(
        status, {"error": {"code": status, "message": message, "type": kind}}, headers
    )


def html_reply(status: int, content_type: str = "text/html") -> _Reply:
    title = f"{status} {_phrase(status)}"
    return _Reply(status, HTML_PAGE.format(title).encode(), content_type=content_type)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _fault_message(status: int) -> str:
    return f"{_phrase(status)} (sandbox fault)"


# --- PNG images ---------------------------------------------------------------------------


def encode_png(width: int, height: int, scanlines: bytes, level: int = PNG_ZLIB_LEVEL) -> bytes:
    """A PNG (8-bit RGB) from raw scanlines, each a filter byte then width * 3 bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanlines, level))
        + chunk(b"IEND", b"")
    )


def gradient_png(width: int, height: int, prompt: str, index: int) -> bytes:
    """A left-to-right gradient in two colours drawn from the prompt, shifted by index."""
    digest = hashlib.sha256(prompt.encode()).digest()
    start = [(value + 24 * index) % 256 for value in digest[0:3]]
    end = list(digest[3:6])
    span = max(width - 1, 1)
    row = bytearray()
    for x in range(width):
        row.extend(a + (b - a) * x // span for a, b in zip(start, end, strict=True))
    return encode_png(width, height, (b"\x00" + bytes(row)) * height)


def noise_png(width: int, height: int, rng: random.Random) -> bytes:
    """Random pixels, stored uncompressed: as large as an image of this size gets."""
    rows = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))
    return encode_png(width, height, rows, level=0)


@functools.lru_cache(maxsize=IMAGE_CACHE_ENTRIES)
def cached_image(width: int, height: int, prompt: str, index: int, noise_seed: str | None) -> bytes:
    """A task's image, made once: a gradient, or random pixels seeded by `noise_seed`."""
    if noise_seed is not None:
        return noise_png(width, height, random.Random(noise_seed))
    return gradient_png(width, height, prompt, index)


# --- Rules --------------------------------------------------------------------------------


class _TokenBucket:
    """Allows `rate` submissions per second on average, in bursts of up to `rate`."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """Take a token: 0 if one was there, else the seconds until one will be."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def validate_submission(body: Any) -> str | None:
    """What is wrong with a submission's JSON body, in the API's words, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if body.get("model") != DEFAULT_MODEL:
        return f"model must be {DEFAULT_MODEL!r}"
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required and must be a non-empty string"
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES_PER_TASK:
        return f"n must be an integer from 1 to {MAX_IMAGES_PER_TASK}"
    if "size" in body and not _valid_size(body["size"]):
        return f"invalid size {body['size']!r}: use auto, a ratio such as 16:9, or WxH"
    if body.get("resolution", "1k") not in RESOLUTIONS:
        return f"resolution must be one of {', '.join(RESOLUTIONS)}"
    if not isinstance(body.get("official_fallback", False), bool):
        return "official_fallback must be a boolean"
    return _image_urls_problem(body.get("image_urls", []))


def _valid_size(size: Any) -> bool:
    if not isinstance(size, str):
        return False
    try:
        return parse_size(size).value == size  # exact spelling: "auto", "16:9", "1536x864"
    except UsageError:
        return False


def _image_urls_problem(urls: Any) -> str | None:
    if not isinstance(urls, list):
        return "image_urls must be a list of strings"
    if len(urls) > MAX_REFERENCES:
        return f"image_urls exceeds max {MAX_REFERENCES}"
    for i, url in enumerate(urls):
        is_url = isinstance(url, str) and (
            url.startswith(("http://", "https://")) or _DATA_URI_RE.match(url)
        )
        if not is_url:
            return f"image_urls[{i}] must be an http(s) URL or a data:image/...;base64, URI"
    return None


def output_pixels(body: dict[str, Any]) -> tuple[int, int]:
    """The pixels a valid submission's images get."""
    references = body.get("image_urls") or []
    if "size" not in body and references:
        return _data_uri_dimensions(references[0]) or DEFAULT_PIXELS
    return pixels_for(body.get("size"), body.get("resolution")) or DEFAULT_PIXELS


def _data_uri_dimensions(url: str) -> tuple[int, int] | None:
    match = _DATA_URI_RE.match(url)
    if not match:
        return None
    # Enough base64 for SNIFF_BYTES of image, cut to a multiple of four characters.
    encoded = url[match.end() : match.end() + SNIFF_BYTES * 4 // 3 // 4 * 4]
    try:
        return image_dimensions(base64.b64decode(encoded))
    except (binascii.Error, ValueError):
        return None


def new_task_id() -> str:
    return TASK_ID_PREFIX + "".join(
        secrets.choice(TASK_ID_ALPHABET) for _ in range(TASK_ID_RANDOM_CHARS)
    )


def _has_bearer(headers: dict[str, str]) -> bool:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


# --- The sandbox --------------------------------------------------------------------------


class Sandbox:
    """The API and image host on loopback. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log: TextIO | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        self.host, self.port, self.log = host, port, log
        self.base_url = ""
        self.image_base_url = ""
        self.requests: list[RecordedRequest] = []
        self._tasks: dict[str, _Task] = {}
        self._idempotency: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._rng = random.Random(self.config.seed)
        rate = self.config.submit_rate
        self._bucket = _TokenBucket(rate) if rate else None
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._servers: list[_OriginServer] = []
        self._stopped = threading.Event()

    # Lifecycle

    def start(self) -> Sandbox:
        """Serve both origins in daemon threads; returns self."""
        if self._servers:
            raise RuntimeError("sandbox already started")
        api = _OriginServer((self.host, self.port), self, "api")
        image = _OriginServer((self.host, 0), self, "image")
        self._servers = [api, image]
        self._stopped.clear()
        self.base_url, self.image_base_url = api.url, image.url
        for server in self._servers:
            name = f"sandbox-{server.origin}"
            serve = server.serve_forever
            threading.Thread(
                target=serve, args=(SHUTDOWN_POLL_SECONDS,), name=name, daemon=True
            ).start()
        return self

    def stop(self) -> None:
        """Stop both servers and close their sockets, open keep-alive connections included."""
        with self._lock:  # stop() may race with itself (serve_forever and another thread)
            servers, self._servers = self._servers, []
        # Each shutdown() waits for its loop's next poll, so wait for both at once.
        stoppers = [threading.Thread(target=server.shutdown) for server in servers]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in servers:
            server.close_connections()
            server.server_close()
        self._stopped.set()

    def serve_forever(self) -> None:
        """Start if needed and block until Ctrl-C (or stop() from another thread), then stop."""
        if not self._servers:
            self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # For tests

    def inject(self, fault: Fault) -> None:
        """Make the next `fault.times` matching requests misbehave."""
        with self._lock:
            self._faults.append(fault)

    def submissions(self) -> list[RecordedRequest]:
        """The POSTs to /v1/images/generations that created tasks."""
        with self._lock:
            return [request for request in self.requests if request.task_id is not None]

    # Handling a request (called from the servers' threads)

    def log_request(self, origin: str, method: str, path: str, status: str, note: str) -> None:
        """One line per request: origin, method, path, status, then a note. Never a header."""
        if self.log is None:
            return
        with self._log_lock:
            self.log.write(f"{origin:5} {method} {path} {status} {note}\n")
            self.log.flush()

    def handle(
        self, origin: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> _Reply:
        """The reply to one request, faults included."""
        if path.startswith(ADMIN_PREFIX) and origin == "api":
            return self._admin(method, path, body)
        record = RecordedRequest(method, path, headers, _parse_json(body), origin)
        with self._lock:
            self.requests.append(record)
            if len(self.requests) > MAX_RECORDED_REQUESTS:  # a long-running sandbox
                del self.requests[: MAX_RECORDED_REQUESTS // 2]
            fault = self._take_fault(method, path)
        reply = self._faulted(fault, record)
        if reply is None:
            reply = self._route(record)
            if fault and fault.kind == "after_create":
                reply = error_reply(fault.status, _fault_message(fault.status))
        record.status = None if reply.drop else reply.status
        return reply

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _faulted(self, fault: Fault | None, record: RecordedRequest) -> _Reply | None:
        """The reply a fault makes instead of the normal one, or None to go on normally."""
        if fault is None or fault.kind == "after_create":
            return None
        if fault.kind == "drop":
            return _Reply(0, drop=True)
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return None
        if fault.kind == "truncate":
            reply = self._route(record)
            reply.truncate = True
            return reply
        if fault.kind == "malformed":
            return _Reply(200, MALFORMED_BODY)
        if fault.kind == "html":
            return html_reply(200)
        if fault.kind == "content_type":
            return html_reply(200, fault.content_type)
        if fault.kind == "huge":
            return _Reply(200, b'{"code": 200, "pad": "' + b"x" * HUGE_BODY_BYTES + b'"}')
        if fault.html:
            reply = html_reply(fault.status)
        else:
            reply = error_reply(fault.status, _fault_message(fault.status))
        if fault.retry_after:
            reply.headers["Retry-After"] = fault.retry_after
        return reply

    def _route(self, record: RecordedRequest) -> _Reply:
        """The normal reply: an endpoint of the API or the image host."""
        if record.origin == "image":
            return self._image(record)
        time.sleep(self.config.latency)
        path = urlsplit(record.path).path
        endpoint = _api_endpoint(record.method, path)
        if endpoint is None:
            return error_reply(404, f"no such endpoint: {record.method} {path}")
        if not _has_bearer(record.headers):
            return error_reply(401, "missing or invalid API key (Authorization: Bearer <key>)")
        if endpoint == "submit":
            return self._submit(record)
        if endpoint == "task":
            return self._task(path.removeprefix(TASK_PATH_PREFIX))
        return self._balance()

    # The API

    def _submit(self, record: RecordedRequest) -> _Reply:
        """Create a task: a repeated Idempotency-Key first, then the rate limit, then the body."""
        key = record.headers.get("idempotency-key")
        with self._lock:  # all of it, so that two racing repeats of a key make one task
            if key and key in self._idempotency:
                return _submitted(self._idempotency[key])
            wait = self._bucket.take() if self._bucket else 0.0
            if wait:
                headers = {"Retry-After": str(max(1, math.ceil(wait)))}
                message = f"rate limit exceeded: {self.config.submit_rate} submissions per second"
                return error_reply(429, message, headers)
            problem = validate_submission(record.json)
            if problem:
                return error_reply(400, problem)
            task = self._new_task(record.json)
            self._tasks[task.id] = task
            if key:
                self._idempotency[key] = task.id
        record.task_id = task.id
        return _submitted(task.id)

    def _new_task(self, body: dict[str, Any]) -> _Task:
        prompt, n = body["prompt"], body.get("n", 1)
        outcome, error = "completed", None
        failed_by_chance = self._rng.random() < self.config.failure_rate
        if self.config.cancel_word in prompt:
            outcome, error = "cancelled", "The task was cancelled."
        elif self.config.fail_word in prompt:
            outcome, error = "failed", f"The sandbox failed this task ({self.config.fail_word})."
        elif failed_by_chance:
            outcome, error = "failed", "The sandbox failed this task at random (failure_rate)."
        cost = round(COST_PER_IMAGE[body.get("resolution", "1k")] * n, 5)
        pixels = output_pixels(body)
        now, wall = time.monotonic(), time.time()
        return _Task(new_task_id(), prompt, n, pixels, outcome, error, cost, now, wall)

    def _task(self, task_id: str) -> _Reply:
        with self._lock:
            task = self._tasks.get(task_id)
        if task is None:
            return error_reply(404, "task not found")
        return json_reply(200, {"code": 200, "data": self._task_view(task)})

    def _task_view(self, task: _Task) -> dict[str, Any]:
        duration = self.config.duration
        elapsed = time.monotonic() - task.started
        view: dict[str, Any] = {
            "id": task.id,
            "status": "submitted",
            "progress": 0,
            "created": int(task.created),
            "estimated_time": math.ceil(duration),
            "cost": task.cost,
        }
        if elapsed < duration * SUBMITTED_SHARE:
            return view
        if elapsed < duration:
            view.update(status="processing", progress=min(99, int(100 * elapsed / duration)))
            return view
        view["status"] = task.outcome
        if task.outcome != "completed":
            view["error"] = {"code": task.outcome, "message": task.error}
            return view
        completed = task.created + duration
        expires_at = int(completed + self.config.image_ttl)
        climb = HOSTILE_URL_PREFIX if self.config.hostile_word in task.prompt else ""
        images = [
            {
                "url": [f"{self.image_base_url}/f/image/{climb}{task.id}_{i}.png"],
                "expires_at": expires_at,
            }
            for i in range(task.n)
        ]
        view.update(
            progress=100,
            completed=int(completed),
            actual_time=math.ceil(duration),
            credits_cost=round(task.cost * CREDITS_PER_COST, 5),
            result={"images": images},
        )
        return view

    def _balance(self) -> _Reply:
        now = time.monotonic()
        with self._lock:
            used = sum(
                task.cost
                for task in self._tasks.values()
                if task.outcome == "completed" and now - task.started >= self.config.duration
            )
        balance = {
            "success": True,
            "remain_balance": REMAIN_BALANCE,
            "used_balance": round(float(used), 5),
            "unlimited_quota": False,
        }
        return json_reply(200, balance)

    # The image host

    def _image(self, record: RecordedRequest) -> _Reply:
        """An image of a completed task: 410 once expired, a range of it when asked."""
        found = self._find_image(urlsplit(record.path).path) if record.method == "GET" else None
        if found is None:
            return error_reply(404, "image not found")
        task, index = found
        if time.monotonic() - task.started >= self.config.duration + self.config.image_ttl:
            return error_reply(410, "image expired")
        noise_seed = f"{self.config.seed}:{task.id}:{index}" if self.config.noise else None
        data = cached_image(*task.pixels, task.prompt, index, noise_seed)
        reply = _range_reply(data, record.headers.get("range"))
        reply.rate = self.config.download_rate
        return reply

    def _find_image(self, path: str) -> tuple[_Task, int] | None:
        """The task and index an image path names, if that image exists by now."""
        match = _IMAGE_PATH_RE.match(path)
        if not match:
            return None
        with self._lock:
            task = self._tasks.get(match.group(1))
        index = int(match.group(2))
        if task is None or task.outcome != "completed" or index >= task.n:
            return None
        if time.monotonic() - task.started < self.config.duration:
            return None  # not completed yet
        return task, index

    # Admin endpoints, for tests that run the sandbox in another process

    def _admin(self, method: str, path: str, body: bytes) -> _Reply:
        if (method, path) == ("POST", "/__sandbox/faults"):
            try:
                fault = Fault.from_json(_parse_json(body))
            except ValueError as exc:
                return error_reply(400, str(exc))
            self.inject(fault)
            return json_reply(200, {"ok": True, "fault": asdict(fault)})
        if (method, path) == ("GET", "/__sandbox/requests"):
            with self._lock:
                recorded = [_without_credentials(asdict(request)) for request in self.requests]
            return json_reply(200, {"requests": recorded})
        return error_reply(404, f"no such endpoint: {method} {path}")


def _without_credentials(request: dict[str, Any]) -> dict[str, Any]:
    """A recorded request as the admin endpoint shows it: whether a key came, not which.

    Anyone on the machine can ask; a real key pointed at the sandbox must not leak.
    """
    headers = dict(request["headers"])
    if "authorization" in headers:
        headers["authorization"] = "Bearer [hidden]"
    return {**request, "headers": headers}


def _api_endpoint(method: str, path: str) -> str | None:
    """Which API endpoint a request is for: "submit", "task", "balance", or None."""
    if (method, path) == ("POST", SUBMIT_PATH):
        return "submit"
    if method == "GET" and path.startswith(TASK_PATH_PREFIX):
        return "task"
    if method == "GET" and path in BALANCE_PATHS:
        return "balance"
    return None


def _submitted(task_id: str) -> _Reply:
    return json_reply(200, {"code": 200, "data": [{"status": "submitted", "task_id": task_id}]})


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def _range_reply(data: bytes, range_header: str | None) -> _Reply:
    """200 with the image, or 206 for a single `bytes=N-` (or `N-M`) range."""
    match = _RANGE_RE.match(range_header.strip()) if range_header else None
    if not match:
        return _Reply(200, data, content_type="image/png", headers={"Accept-Ranges": "bytes"})
    start, total = int(match.group(1)), len(data)
    end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
    if start >= total or end < start:
        reply = error_reply(416, "range not satisfiable")
        reply.headers["Content-Range"] = f"bytes */{total}"
        return reply
    headers = {"Content-Range": f"bytes {start}-{end}/{total}", "Accept-Ranges": "bytes"}
    return _Reply(206, data[start : end + 1], content_type="image/png", headers=headers)


# --- HTTP plumbing ------------------------------------------------------------------------


class _OriginServer(ThreadingHTTPServer):
    """One origin (the API or the image host), serving each connection in a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # stop() closes open connections itself rather than wait on them
    request_queue_size = 128  # the default backlog of 5 resets bursts of new connections

    def __init__(self, address: tuple[str, int], sandbox: Sandbox, origin: str) -> None:
        super().__init__(address, _Handler)
        self.sandbox, self.origin = sandbox, origin
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

    protocol_version = "HTTP/1.1"  # keep-alive; every reply carries Content-Length
    server_version = "apimart-sandbox"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the
    # client's delayed ACK add about 40 ms to every small reply.
    disable_nagle_algorithm = True
    timeout = CONNECTION_TIMEOUT
    server: _OriginServer

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
        body = self._read_body()
        sandbox, origin = self.server.sandbox, self.server.origin
        reply = sandbox.handle(origin, self.command, self.path, headers, body)
        if reply.drop:
            self.close_connection = True
        else:
            self._write(reply)
        status = "dropped" if reply.drop else str(reply.status)
        note = f"{(time.monotonic() - started) * 1000:.1f}ms"
        if origin == "image" and "authorization" in headers:
            note += " (an Authorization header was sent to the image host)"
        sandbox.log_request(origin, self.command, self.path, status, note)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF after each chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
        return b"".join(parts)

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        body = reply.body[: len(reply.body) // 2] if reply.truncate else reply.body
        _send_throttled(self.wfile.write, body, reply.rate)
        self.wfile.flush()
        if reply.truncate:
            self.close_connection = True


def _send_throttled(write: Callable[[bytes], Any], data: bytes, rate: float | None) -> None:
    """Write data in chunks, sleeping to hold `rate` bytes/second when one is set."""
    if not rate:
        write(data)
        return
    chunk = max(1024, min(DOWNLOAD_CHUNK_BYTES, int(rate / 10)))
    started = time.monotonic()
    for offset in range(0, len(data), chunk):
        write(data[offset : offset + chunk])
        ahead = (offset + chunk) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)
