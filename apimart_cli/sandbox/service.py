"""The sandbox itself: both origins, their endpoints, the faults, and the admin endpoints."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import secrets
import threading
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

from apimart_cli.constants import IMAGE_OPERATION, MAX_REFERENCE_BYTES, VIDEO_OPERATION
from apimart_cli.images import EXTENSIONS, sniff_mime
from apimart_cli.sandbox.clock import Clock, SystemClock
from apimart_cli.sandbox.config import SandboxConfig
from apimart_cli.sandbox.faults import Fault
from apimart_cli.sandbox.images import cached_image, garbage_after_signature, gzip_encoded
from apimart_cli.sandbox.rules import (
    TokenBucket,
    docs_reply,
    models_reply,
    schema_reply,
    validate_submission,
)
from apimart_cli.sandbox.server import OriginServer, Reply
from apimart_cli.sandbox.state import Task, Upload, new_task, new_task_id, task_view
from apimart_cli.sandbox.videos import cached_video

# How often the serving loops look for a stop request.
SHUTDOWN_POLL_SECONDS = 0.01
# Requests kept for tests and the admin endpoint; the older half goes past this.
MAX_RECORDED_REQUESTS = 10_000
# "huge": a reply far larger than any real one (the client must cap what it reads).
HUGE_BODY_BYTES = 16 * 1024 * 1024
REMAIN_BALANCE = 10.5
# An uploaded file's URL answers for this long (the vendor's page: "valid for 72 hours").
UPLOAD_TTL = 72 * 3600.0
# Room for the multipart framing around a file of the largest allowed size.
MULTIPART_SLACK_BYTES = 64 * 1024
RECORDED_STRING_CHARS = 1024 * 1024
SUBMIT_PATH = "/v1/images/generations"
VIDEO_SUBMIT_PATH = "/v1/videos/generations"
TASK_PATH_PREFIX = "/v1/tasks/"
BALANCE_PATHS = ("/v1/balance", "/v1/user/balance")
UPLOAD_PATH = "/v1/uploads/images"
MODELS_PATH = "/v1/models"
SCHEMA_PATH = "/v1/model-schema"
DOCS_PATH = "/v1/model-docs"
ADMIN_PREFIX = "/__sandbox/"
RESPONSE_VERSION_HEADER = "x-apimart-response-version"
# The reply version the sandbox speaks when the request names none (the vendor client's).
RESPONSE_VERSION = "2026-07-27"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "payment_required",
    404: "not_found_error",
    410: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}
MALFORMED_BODY = b'{"code": 200, "data": {"status": "submi'
HTML_PAGE = "<html><head><title>{0}</title></head><body><h1>{0}</h1><hr>nginx</body></html>"
_IMAGE_PATH_RE = re.compile(r"^/f/image/(?:\.\.%2F)*(task_[0-9A-Z]+)_(\d+)\.(?:png|mp4)$")
_UPLOAD_PATH_RE = re.compile(r"^/f/upload/([0-9a-f]+)/[^/]+$")
_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
_UNSAFE_NAME_RE = re.compile(r"[^A-Za-z0-9._-]+")


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
    bytes: int = 0  # the size of the request's body
    # `json` keeps every string in full up to RECORDED_STRING_CHARS; a longer one (a data
    # URI reference) keeps its start and says its length, so that a benchmark sending
    # gigabytes of references does not keep them all in memory.


def json_reply(status: int, payload: Any, headers: dict[str, str] | None = None) -> Reply:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return Reply(status, body, headers=headers or {})


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    """The API's error body: `{"error": {"code", "message", "type"}}`."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return json_reply(
        status, {"error": {"code": status, "message": message, "type": kind}}, headers
    )


def html_reply(status: int, content_type: str = "text/html") -> Reply:
    title = f"{status} {_phrase(status)}"
    return Reply(status, HTML_PAGE.format(title).encode(), content_type=content_type)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _fault_message(status: int) -> str:
    return f"{_phrase(status)} (sandbox fault)"


def _bearer(headers: dict[str, str]) -> str:
    """The bearer key a request carries, or "" (never stored, only echoed where asked)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class Sandbox:
    """The API and image host on loopback. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log: TextIO | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config or SandboxConfig()
        self.clock: Clock = clock or SystemClock()
        self.host, self.port, self.log = host, port, log
        self.base_url = ""
        self.image_base_url = ""
        self.requests: list[RecordedRequest] = []
        self.uploads: list[Upload] = []
        self.peak_in_flight = 0  # the most API and image requests ever served at once
        self._in_flight = 0
        self._tasks: dict[str, Task] = {}
        self._idempotency: dict[str, str] = {}
        self._request_ids: dict[str, str] = {}  # each task's first reply's, which replays repeat
        # strict_idempotency: the keys whose first request is in flight, and the digest of
        # the body each key is held with (while in flight, and once it made a task).
        self._keys_in_flight: set[str] = set()
        self._key_bodies: dict[str, str] = {}
        self._faults: list[Fault] = []
        self._rng = random.Random(self.config.seed)
        self._buckets = {"submit": self._new_bucket(self.config.submit_rate)}
        self._buckets["task"] = self._new_bucket(self.config.poll_rate)
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._servers: list[OriginServer] = []
        self._stopped = threading.Event()
        self._closing = threading.Event()

    # Lifecycle

    def start(self) -> Sandbox:
        """Serve both origins in daemon threads; returns self."""
        if self._servers:
            raise RuntimeError("sandbox already started")
        api = OriginServer((self.host, self.port), self, "api")
        image = OriginServer((self.host, 0), self, "image")
        self._servers = [api, image]
        self._stopped.clear()
        self._closing.clear()
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
        self._closing.set()  # wakes replies that drip, stall or wait
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

    def heal(self) -> None:
        """Forget every fault not yet spent: the requests from now on are answered normally."""
        with self._lock:
            self._faults.clear()

    def submissions(self) -> list[RecordedRequest]:
        """The POSTs to /v1/images/generations (or videos) that created tasks."""
        with self._lock:
            return [request for request in self.requests if request.task_id is not None]

    def advance(self, seconds: float) -> None:
        """Move the sandbox's time forward: tasks progress, limits refill, images expire."""
        self.clock.advance(seconds)

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change switches while running (`configure(estimate_factor=0.5)`); ValueError if bad."""
        return self._configure(changes)

    def _configure(self, changes: Any) -> SandboxConfig:
        with self._lock:
            config = self.config.updated(changes)
            if config.submit_rate != self.config.submit_rate:
                self._buckets["submit"] = self._new_bucket(config.submit_rate)
            if config.poll_rate != self.config.poll_rate:
                self._buckets["task"] = self._new_bucket(config.poll_rate)
            self.config = config
        return config

    def pause(self, seconds: float | None) -> bool:
        """Wait `seconds` by the clock (None: until stopped); False once the sandbox is stopping."""
        if seconds is None:
            self._closing.wait()
        elif isinstance(self.clock, SystemClock):
            self._closing.wait(seconds)
        else:
            self.clock.sleep(seconds)
        return not self._closing.is_set()

    def _new_bucket(self, rate: float | None) -> TokenBucket | None:
        return TokenBucket(rate, self.clock.monotonic()) if rate else None

    def _rate_limited(self, endpoint: str) -> Reply | None:
        """A 429 with Retry-After when the endpoint's rate is spent (call with the lock held)."""
        bucket = self._buckets.get(endpoint)
        wait = bucket.take(self.clock.monotonic()) if bucket else 0.0
        if bucket is None or not wait:
            return None
        headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        what = "submissions" if endpoint == "submit" else "status requests"
        return error_reply(429, f"rate limit exceeded: {bucket.rate} {what} per second", headers)

    # Handling a request (called from the servers' threads)

    def log_request(self, origin: str, method: str, path: str, status: str, note: str) -> None:
        """One line per request: origin, method, path, status, then a note. Never a header."""
        if self.log is None:
            return
        with self._log_lock:
            self.log.write(f"{origin:5} {method} {path} {status} {note}\n")
            self.log.flush()

    def handle(
        self,
        origin: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        received: int | None = None,
    ) -> Reply:
        """The reply to one request, faults included."""
        if path.startswith(ADMIN_PREFIX) and origin == "api":
            return self._admin(method, path, body)
        received = len(body) if received is None else received
        parsed = _parse_json(body) if not path.startswith(UPLOAD_PATH) else None
        record = RecordedRequest(method, path, headers, parsed, origin, bytes=received)
        with self._lock:
            self.requests.append(record)
            if len(self.requests) > MAX_RECORDED_REQUESTS:  # a long-running sandbox
                del self.requests[: MAX_RECORDED_REQUESTS // 2]
            key, conflict = self._claim_key(record, body)
            fault = None if conflict else self._take_fault(method, path)
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            reply = conflict or self._faulted(fault, record)
            if reply is None:
                reply = self._route(record, body, received)
                if fault is not None:
                    reply = self._shaped(fault, record, reply)
        finally:
            with self._lock:
                self._in_flight -= 1
                if key is not None:  # the key's first request is over: made a task, or not
                    self._keys_in_flight.discard(key)
                    if key not in self._idempotency:
                        self._key_bodies.pop(key, None)
        if origin == "api":
            version = headers.get(RESPONSE_VERSION_HEADER) or RESPONSE_VERSION
            reply.headers.setdefault("X-APIMart-Response-Version", version)
        record.status = None if reply.drop else reply.status
        record.json = _shortened(record.json)
        return reply

    def _claim_key(self, record: RecordedRequest, body: bytes) -> tuple[str | None, Reply | None]:
        """Under `strict_idempotency`, a submission's key: claimed for its first request
        (the key returned, to release), or the 409 or 422 its key's state calls for.
        A key that made a task, with the same body, goes on to be replayed. Lock held."""
        key = record.headers.get("idempotency-key")
        is_submit = record.method == "POST" and urlsplit(record.path).path == SUBMIT_PATH
        if not (self.config.strict_idempotency and is_submit and key):
            return None, None
        digest = hashlib.sha256(body).hexdigest()
        if key in self._keys_in_flight:
            message = "a request with this Idempotency-Key is still being processed; retry later"
            return None, error_reply(409, message)
        held = self._key_bodies.get(key)
        if held is not None and held != digest:
            return None, error_reply(422, "this Idempotency-Key was used with another body")
        if key in self._idempotency:
            return None, None  # replayed by _submit
        self._keys_in_flight.add(key)
        self._key_bodies[key] = digest
        return key, None

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _faulted(self, fault: Fault | None, record: RecordedRequest) -> Reply | None:
        """The reply a fault makes instead of the normal one, or None to go on normally."""
        if fault is None:
            return None
        kind = fault.kind
        if kind == "drop":
            return Reply(0, drop=True)
        if kind == "slow":
            self.pause(fault.delay)
            return None
        if kind == "swap":
            self._change_image(urlsplit(record.path).path)
            return None
        if kind == "malformed":
            return Reply(200, MALFORMED_BODY)
        if kind == "html":
            return html_reply(200)
        if kind == "content_type":
            return html_reply(200, fault.content_type)
        if kind == "huge":
            return Reply(200, b'{"code": 200, "pad": "' + b"x" * HUGE_BODY_BYTES + b'"}')
        if kind == "nested":
            return Reply(
                200, b'{"code": 200, "data": ' + b"[" * fault.depth + b"]" * fault.depth + b"}"
            )
        if kind == "error_in_200":
            return json_reply(200, _error_in_200(fault))
        if kind == "model_error":
            model = record.json.get("model") if isinstance(record.json, dict) else None
            error = {
                "code": fault.error_code,
                "message": f"model {model or 'unknown'} is not available (sandbox fault)",
                "type": "new_api_error",
            }
            return json_reply(fault.status, {"error": error})
        if kind == "echo_key":
            message = f"Request refused for API key {_bearer(record.headers)} (sandbox fault)"
            return error_reply(fault.status, message)
        if kind == "status":
            reply = (
                html_reply(fault.status)
                if fault.html
                else error_reply(fault.status, _fault_message(fault.status))
            )
            if fault.retry_after:
                reply.headers["Retry-After"] = fault.retry_after
            return reply
        return None  # a fault that shapes the normal reply: see _shaped

    def _shaped(self, fault: Fault, record: RecordedRequest, reply: Reply) -> Reply:
        """The normal reply, changed by a fault that acts on it."""
        kind, size = fault.kind, len(reply.body)
        if kind == "after_create":
            return error_reply(fault.status, _fault_message(fault.status))
        if kind == "truncate":
            reply.send = int(size * fault.cut)
        elif kind == "short":
            reply.body = reply.body[: int(size * fault.cut)]  # its length announced as whole
        elif kind == "unsized":
            reply.sized, reply.send = False, int(size * fault.cut)
        elif kind == "stall":
            reply.send, reply.stall = int(size * fault.cut), fault.delay
        elif kind in ("drip", "drip_headers"):
            reply.body += b" " * max(0, fault.size - size)
            reply.byte_interval = fault.interval
            reply.endless_headers = kind == "drip_headers"
        elif kind == "throttle":
            reply.rate = fault.rate
        elif kind == "gzip":
            reply.body = gzip_encoded(reply.body)
            reply.headers["Content-Encoding"] = "gzip"
            reply.headers.pop("Content-Range", None)
        elif kind == "garbage":
            reply.body = garbage_after_signature(size, record.path)
            reply.content_type = "image/png"
        elif kind == "task_id":
            return _with_task_id(reply, fault.task_id, record)
        return reply

    def _route(self, record: RecordedRequest, body: bytes, received: int) -> Reply:
        """The normal reply: an endpoint of the API or the image host."""
        if record.origin == "image":
            return self._image(record)
        self.pause(self.config.latency)
        url = urlsplit(record.path)
        endpoint = _api_endpoint(record.method, url.path)
        if endpoint is None:
            return error_reply(404, f"no such endpoint: {record.method} {url.path}")
        if not _bearer(record.headers):
            return error_reply(401, "missing or invalid API key (Authorization: Bearer <key>)")
        if record.bytes > len(body):  # too large to have been kept (see server.py)
            return error_reply(413, f"request body too large: {record.bytes} bytes")
        if endpoint == "submit":
            return self._submit(record)
        if endpoint == "task":
            return self._task(url.path.removeprefix(TASK_PATH_PREFIX), record.headers)
        if endpoint == "upload":
            return self._upload(record, body, received)
        if endpoint == "models":
            return json_reply(200, models_reply())
        if endpoint == "schema":
            return _schema(url.query)
        if endpoint == "docs":
            return self._docs(url.query)
        return self._balance()

    # The API

    def _submit(self, record: RecordedRequest) -> Reply:
        """Create a task: a repeated Idempotency-Key first, then the rate limit, then the body."""
        key = record.headers.get("idempotency-key")
        object_shape = RESPONSE_VERSION_HEADER in record.headers
        with self._lock:  # all of it, so that two racing repeats of a key make one task
            if key and key in self._idempotency:
                return self._replayed(key, object_shape)
            limited = self._rate_limited("submit")
            if limited:
                return limited
            videos = urlsplit(record.path).path == VIDEO_SUBMIT_PATH
            operation = VIDEO_OPERATION if videos else IMAGE_OPERATION
            problem = validate_submission(record.json, self.config.refuse_base64, operation)
            if problem:
                return error_reply(400, problem)
            task = new_task(
                record.json, self.config, self._rng, self.clock.monotonic(), self.clock.time()
            )
            if self.config.sync_results:
                task.duration = 0.0  # finished as it is answered
            self._tasks[task.id] = task
            if key:
                self._idempotency[key] = task.id
            self._request_ids[task.id] = _request_id()
        record.task_id = task.id
        if self.config.sync_results:
            return self._result(task)
        return _submitted(task.id, self._request_ids[task.id], object_shape)

    def _replayed(self, key: str, object_shape: bool) -> Reply:
        """The reply to a key seen before: the original task (or result), said to be a replay."""
        task_id = self._idempotency[key]
        task = self._tasks.get(task_id)
        if self.config.sync_results and task is not None:
            reply = self._result(task)
        else:
            reply = _submitted(task_id, self._request_ids.get(task_id, ""), object_shape)
        reply.headers["Idempotency-Replayed"] = "true"
        return reply

    def _result(self, task: Task) -> Reply:
        """`sync_results`: the finished result in the submit reply, with no task id."""
        now = task.started + task.duration  # as it will be when done
        view = task_view(task, now, self.config, self.image_base_url, "")
        data = {"object": "generation.result", **view}
        data.pop("id", None)
        request_id = self._request_ids.get(task.id, "")
        return json_reply(200, {"code": 200, "request_id": request_id, "data": data})

    def _docs(self, query: str) -> Reply:
        model = parse_qs(query).get("model", [""])[0]
        if not model:
            return error_reply(400, "model is required: /v1/model-docs?model=ID")
        docs = docs_reply(model, self.base_url, self.clock.time())
        if docs is None:
            return error_reply(404, f"unknown model {model!r} (see GET /v1/models)")
        return json_reply(200, docs)

    def _task(self, task_id: str, headers: dict[str, str]) -> Reply:
        with self._lock:
            limited = self._rate_limited("task")
            if limited:
                return limited
            task = self._tasks.get(task_id)
        if task is None:
            return error_reply(404, "task not found")
        view = task_view(
            task, self.clock.monotonic(), self.config, self.image_base_url, _bearer(headers)
        )
        return json_reply(200, {"code": 200, "data": view})

    def _balance(self) -> Reply:
        now = self.clock.monotonic()
        with self._lock:
            used = sum(
                task.cost
                for task in self._tasks.values()
                if task.outcome == "completed" and task.done(now)
            )
        balance = {
            "success": True,
            "remain_balance": REMAIN_BALANCE,
            "used_balance": round(float(used), 5),
            "unlimited_quota": False,
        }
        return json_reply(200, balance)

    def _upload(self, record: RecordedRequest, body: bytes, received: int) -> Reply:
        """`POST /v1/uploads/images`: one multipart field `file`, an image of at most 20 MiB."""
        limit = MAX_REFERENCE_BYTES
        if received > limit + MULTIPART_SLACK_BYTES:
            return error_reply(413, f"file too large: at most {limit} bytes")
        part = _multipart_file(record.headers.get("content-type", ""), body)
        if part is None:
            return error_reply(400, "missing file field: send multipart/form-data with 'file'")
        filename, data = part
        if len(data) > limit:
            return error_reply(413, f"file too large: at most {limit} bytes")
        content_type = sniff_mime(data[:16])
        if content_type is None:
            return error_reply(400, "unsupported format: JPEG, PNG, WebP or GIF only")
        token = secrets.token_hex(8)
        name = _UNSAFE_NAME_RE.sub("_", filename.rsplit("/", 1)[-1]).strip("._")
        name = name or f"upload{EXTENSIONS[content_type]}"
        upload = Upload(
            token,
            name,
            content_type,
            data,
            int(self.clock.time()),
            f"{self.image_base_url}/f/upload/{token}/{name}",
        )
        with self._lock:
            self.uploads.append(upload)
        return json_reply(200, upload.reply())

    # The image host

    def _image(self, record: RecordedRequest) -> Reply:
        """An image of a completed task or an upload: 410 once expired, a range when asked."""
        path = urlsplit(record.path).path
        if record.method == "GET" and path.startswith("/f/upload/"):
            return self._uploaded(path, record.headers)
        found = self._find_image(path) if record.method == "GET" else None
        if found is None:
            return error_reply(404, "image not found")
        task, index = found
        if self.clock.monotonic() - task.started >= task.duration + self.config.image_ttl:
            return error_reply(410, "image expired")
        version = task.versions.get(index, 0)
        if task.video_seconds is not None:
            seed = f"{self.config.seed}:{task.id}:{task.prompt}"
            data = cached_video(
                *task.pixels, task.video_seconds, seed, self.config.video_bytes, version
            )
            content_type = "video/mp4"
        else:
            noise_seed = f"{self.config.seed}:{task.id}:{index}" if self.config.noise else None
            data = cached_image(*task.pixels, task.prompt, index, noise_seed, version)
            content_type = "image/png"
        reply = _range_reply(data, record.headers, content_type, *task.image_validators(index))
        reply.rate = self.config.download_rate
        return reply

    def _find_image(self, path: str) -> tuple[Task, int] | None:
        """The task and index an image path names, if that image exists by now."""
        match = _IMAGE_PATH_RE.match(path)
        if not match:
            return None
        with self._lock:
            task = self._tasks.get(match.group(1))
        index = int(match.group(2))
        if task is None or not task.has_image(index, self.clock.monotonic()):
            return None
        return task, index

    def _change_image(self, path: str) -> None:
        """The "swap" fault: the image at `path` becomes another picture, for good."""
        found = self._find_image(path)
        if found:
            task, index = found
            with self._lock:
                task.versions[index] = task.versions.get(index, 0) + 1

    def _uploaded(self, path: str, headers: dict[str, str]) -> Reply:
        match = _UPLOAD_PATH_RE.match(path)
        with self._lock:
            upload = next((u for u in self.uploads if match and u.token == match.group(1)), None)
        if upload is None:
            return error_reply(404, "file not found")
        if self.clock.time() - upload.created_at >= UPLOAD_TTL:
            return error_reply(410, "file expired")
        etag = f'"{upload.token}"'
        return _range_reply(upload.data, headers, upload.content_type, etag, None)

    # Admin endpoints, for tests that run the sandbox in another process

    def _admin(self, method: str, path: str, body: bytes) -> Reply:
        try:
            return self._admin_reply(method, path, _parse_json(body))
        except ValueError as exc:
            return error_reply(400, str(exc))

    def _admin_reply(self, method: str, path: str, data: Any) -> Reply:
        endpoint = (method, path)
        if endpoint == ("POST", "/__sandbox/faults"):
            fault = Fault.from_json(data)
            self.inject(fault)
            return json_reply(200, {"ok": True, "fault": asdict(fault)})
        if endpoint == ("GET", "/__sandbox/requests"):
            with self._lock:
                recorded = [_without_credentials(asdict(request)) for request in self.requests]
            return json_reply(200, {"requests": recorded})
        if endpoint == ("GET", "/__sandbox/uploads"):
            with self._lock:
                uploads = [upload.reply() for upload in self.uploads]
            return json_reply(200, {"uploads": uploads})
        if endpoint in (("GET", "/__sandbox/config"), ("POST", "/__sandbox/config")):
            config = self._configure(data) if method == "POST" else self.config
            return json_reply(200, {"config": asdict(config)})
        if endpoint == ("POST", "/__sandbox/clock"):
            seconds = data.get("advance") if isinstance(data, dict) else None
            if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
                raise ValueError('send {"advance": SECONDS}, a number of at least 0')
            self.advance(seconds)
            return json_reply(200, {"monotonic": self.clock.monotonic(), "time": self.clock.time()})
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
    """Which API endpoint a request is for, or None."""
    if method == "POST":
        return {SUBMIT_PATH: "submit", VIDEO_SUBMIT_PATH: "submit", UPLOAD_PATH: "upload"}.get(path)
    if method != "GET":
        return None
    if path.startswith(TASK_PATH_PREFIX):
        return "task"
    if path in BALANCE_PATHS:
        return "balance"
    return {MODELS_PATH: "models", SCHEMA_PATH: "schema", DOCS_PATH: "docs"}.get(path)


def _schema(query: str) -> Reply:
    model = parse_qs(query).get("model", [""])[0]
    if not model:
        return error_reply(400, "model is required: /v1/model-schema?model=ID")
    schema = schema_reply(model)
    if schema is None:
        return error_reply(404, f"unknown model {model!r} (see GET /v1/models)")
    return json_reply(200, schema)


def _submitted(task_id: str, request_id: str, object_shape: bool = False) -> Reply:
    """The submission reply: the documented list, or the object the version header asks
    for; with a `request_id`, as the service's envelope carries one."""
    data: Any = [{"status": "submitted", "task_id": task_id}]
    if object_shape:
        data = {"id": task_id, "object": "generation.task", "status": "submitted"}
    return json_reply(200, {"code": 200, "request_id": request_id, "data": data})


def _request_id() -> str:
    return "req_" + secrets.token_hex(12)


def _error_in_200(fault: Fault) -> dict[str, Any]:
    """The body of the "error_in_200" fault: an error with the code `fault.status`."""
    message = f"{_phrase(fault.status)} (sandbox fault, inside a 200)"
    if fault.shape == "success":
        return {"success": False, "message": message}
    if fault.shape == "msg":
        return {"code": fault.status, "msg": message}
    return {"code": fault.status, "message": message, "data": None}


def _with_task_id(reply: Reply, template: str, record: RecordedRequest) -> Reply:
    """The "task_id" fault: the reply's task id replaced by the template's."""
    payload = _parse_json(reply.body) if reply.status == 200 else None
    data = payload.get("data") if isinstance(payload, dict) else None
    entry = data[0] if isinstance(data, list) and data else data
    if not isinstance(entry, dict):
        return reply
    field = "task_id" if "task_id" in entry else "id"
    replaced = (
        template.replace("{id}", str(entry[field]))
        .replace("{other}", new_task_id())
        .replace("{key}", _bearer(record.headers))
    )
    entry[field] = replaced
    return json_reply(200, payload)


def _multipart_file(content_type: str, body: bytes) -> tuple[str, bytes] | None:
    """The filename and bytes of the multipart field `file`, or None."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/form-data") or not match:
        return None
    delimiter = b"--" + match.group(1).encode()
    for part in body.split(delimiter)[1:]:
        head, separator, data = part.partition(b"\r\n\r\n")
        disposition = re.search(rb'(?im)^content-disposition:.*\bname="([^"]*)"', head)
        if not separator or not disposition or disposition.group(1) != b"file":
            continue
        filename = re.search(rb'(?im)^content-disposition:.*\bfilename="([^"]*)"', head)
        name = filename.group(1).decode("utf-8", "replace") if filename else ""
        return name, data.removesuffix(b"\r\n")
    return None


def _shortened(value: Any) -> Any:
    """A recorded body with each string past RECORDED_STRING_CHARS cut to its start and length."""
    if isinstance(value, str) and len(value) > RECORDED_STRING_CHARS:
        return f"{value[:64]}…({len(value)} characters)"
    if isinstance(value, list):
        return [_shortened(item) for item in value]
    if isinstance(value, dict):
        return {key: _shortened(item) for key, item in value.items()}
    return value


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except (ValueError, RecursionError):
        return None


def _range_reply(
    data: bytes, headers: dict[str, str], content_type: str, etag: str, modified: str | None
) -> Reply:
    """200 with the file, or 206 for a single `bytes=N-` (or `N-M`) range.

    The range is honoured only while `If-Range` (when sent) still names this file
    by its ETag or Last-Modified; otherwise the whole, current file comes back.
    """
    validators = {"ETag": etag, "Accept-Ranges": "bytes"}
    if modified:
        validators["Last-Modified"] = modified
    range_header, if_range = headers.get("range"), headers.get("if-range")
    match = _RANGE_RE.match(range_header.strip()) if range_header else None
    if if_range is not None and if_range.strip() not in (etag, modified):
        match = None
    if not match:
        return Reply(200, data, content_type=content_type, headers=validators)
    start, total = int(match.group(1)), len(data)
    end = min(int(match.group(2)), total - 1) if match.group(2) else total - 1
    if start >= total or end < start:
        reply = error_reply(416, "range not satisfiable")
        reply.headers["Content-Range"] = f"bytes */{total}"
        return reply
    headers = {**validators, "Content-Range": f"bytes {start}-{end}/{total}"}
    return Reply(206, data[start : end + 1], content_type=content_type, headers=headers)
