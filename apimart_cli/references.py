"""Reference images sent as uploads: each distinct file crosses the network once.

A local file (or a data: URI) is uploaded through `POST /v1/uploads/images` as
a multipart body streamed from disk, and the URL the service gives back is
remembered by the file's SHA-256 in the cache (`cache.py`) for as long as it
lives (72 hours from its upload, less a margin). Later commands, and the other
jobs of a batch, reuse it.

An upload is not billed but has no idempotency key, so after an ambiguous
failure (a 500, a reply that never came) it is not sent again: the object may
exist, and retrying is the user's call (`apimart upload FILE`).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from apimart_cli.errors import ApimartError, ServiceError, UsageError, WaitTimeout
from apimart_cli.images import EXTENSIONS
from apimart_cli.payload import READ_CHUNK_BYTES, Reference, iter_file, resolve_reference

if TYPE_CHECKING:
    from apimart_cli.cache import Cache
    from apimart_cli.client import Client
    from apimart_cli.history import History
    from apimart_cli.payload import GenerationRequest

REFERENCE_MODES = ("auto", "inline", "upload")
# How long a service's refusal of base64 references is remembered (`--refs auto`).
REFUSAL_REMEMBERED_SECONDS = 7 * 86400.0
_REFUSAL_NOTE = "refuses-base64"
# How long an uploaded file's URL lives (the upload page), and how much of that we
# give up, so that a task submitted just before the end still finds its reference.
UPLOAD_LIFETIME_SECONDS = 72 * 3600.0
UPLOAD_MARGIN_SECONDS = 6 * 3600.0
# A time in an upload reply, in seconds or milliseconds since 1970, between 1970 and the
# year 9999; anything else is unreadable (and a 400-digit number would overflow a float).
_EARLIEST = 0
_LATEST_MS = 253_402_300_799_000
MAX_UPLOAD_URL_CHARS = 8192
MAX_REPLY_FIELD_DEPTH = 32  # the depth of a field of the upload's reply that is kept
_FILE_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _plausible_time(value: object) -> bool:
    """Whether a time read back from the cache (another program may have written it)
    is a moment in the past worth naming: a finite Unix time after 1970, not ahead of
    now (1e300, NaN or a 400-digit number would fail to make a date)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return 0 < value <= time.time() + 86_400


@dataclass(frozen=True)
class Upload:
    """One image to upload: a multipart body with the single field `file`, streamed."""

    reference: Reference
    sha256: str
    data: bytes | None = None  # a data: URI's bytes; None for a file, read as it is sent
    boundary: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def size(self) -> int:
        return self.reference.size

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def file_name(self) -> str:
        """A plain ASCII name for the form: the file's, with the extension of its type."""
        extension = EXTENSIONS.get(self.reference.mime or "", "")
        path = self.reference.path
        stem = path.stem if path is not None else "image"
        stem = "".join(c if c in _FILE_NAME_CHARS else "_" for c in stem).strip(".") or "image"
        return stem + extension

    def _head(self) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{self.file_name}"\r\n'
            f"Content-Type: {self.reference.mime}\r\n\r\n"
        ).encode("ascii")

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("ascii")

    def body_length(self) -> int:
        return len(self._head()) + self.size + len(self._tail())

    def iter_body(self) -> Iterator[bytes]:
        """The body, a chunk at a time; each call starts afresh (re-reading the file)."""
        yield self._head()
        if self.data is not None:
            for start in range(0, len(self.data), READ_CHUNK_BYTES):
                yield self.data[start : start + READ_CHUNK_BYTES]
        else:
            path = self.reference.path
            assert path is not None
            # The URL is remembered under the SHA-256 read before: other bytes of the same
            # length are refused before the last of them goes out (no whole body is sent).
            digest, sent = hashlib.sha256(), 0
            for chunk in iter_file(path, self.size):
                digest.update(chunk)
                sent += len(chunk)
                if sent == self.size and digest.hexdigest() != self.sha256:
                    raise UsageError(
                        f"Reference image {path} changed while being sent (its content is "
                        "not what was read before).",
                        "Leave the file alone until the command finishes, then run it again.",
                    )
                yield chunk
        yield self._tail()


def prepare_upload(reference: Reference) -> Upload:
    """The upload of a local file or data: URI, its content hashed (a file read once)."""
    if reference.kind == "data":
        data = base64.b64decode(reference.source.partition(",")[2])
        return Upload(reference, hashlib.sha256(data).hexdigest(), data)
    assert reference.path is not None
    digest = hashlib.sha256()
    for chunk in iter_file(reference.path, reference.size):
        digest.update(chunk)
    return Upload(reference, digest.hexdigest())


def check_upload_files(paths: Sequence[str]) -> list[Reference]:
    """Every file checked as a reference is (it exists, an image by its bytes, at most
    20 MiB) before anything is sent: one bad file and none is uploaded."""
    if not paths:
        raise UsageError("No files given.", "apimart upload photo.png [more.jpg ...]")
    references = []
    for text in paths:
        reference = resolve_reference(text)
        if reference.kind != "file":
            raise UsageError(
                f"{text[:60]!r} is not a local file.",
                "`apimart upload` sends files; a URL can be given to --image as it is.",
            )
        references.append(reference)
    return references


# -- the service's reply ---------------------------------------------------------------------


def parse_upload(reply: Mapping[str, Any], *, now: float) -> tuple[dict[str, Any], float]:
    """The upload object (from `{"url": ...}` or `{"code": 200, "data": {"url": ...}}`) and
    when its URL should no longer be relied on."""
    data = reply.get("data") if isinstance(reply.get("data"), Mapping) else reply
    assert isinstance(data, Mapping)
    url = data.get("url")
    if isinstance(url, list) and url:  # as task results sometimes send it
        url = url[0]
    if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
        raise ServiceError(
            "The service's reply to an upload has no URL.",
            "Run the command again with -v to see the reply; the file may have been stored.",
        )
    from urllib.parse import unquote

    from apimart_cli import secrets

    if secrets.holds_secret(url) or secrets.holds_secret(unquote(url)):
        # It would be printed, kept and sent as a reference: the key in plain sight.
        raise ServiceError(
            "The service's reply to an upload has a URL that holds the API key; it is not used.",
            "Tell APIMart's support; the file may have been stored.",
        )
    if (
        len(url) > MAX_UPLOAD_URL_CHARS
        or not all(c.isprintable() and not c.isspace() for c in url)
        or not _names_a_host(url)
    ):
        # Printed as it is (`apimart upload`) and sent as a reference: a newline would make
        # two lines of output, an escape would reach the terminal.
        raise ServiceError(
            f"The service's reply to an upload has a URL that cannot be one ({len(url)} "
            "characters: no host, spaces or control characters, or too long).",
            "The file may have been stored; run the command again to upload it anew.",
        )
    created = _timestamp(data.get("created_at"))
    # A clock ahead of ours would stretch the URL's life: never later than now.
    created = now if created is None else min(created, now)
    expires = created + UPLOAD_LIFETIME_SECONDS
    stated = _timestamp(data.get("expires_at"))
    if stated is not None:
        expires = min(expires, stated)
    from apimart_cli.history import json_depth

    # A field nested too deeply to print or keep (a reply just short of what the parser
    # refuses) is left out: the URL is what the upload is for.
    kept = {k: v for k, v in data.items() if json_depth(v) < MAX_REPLY_FIELD_DEPTH}
    return {**kept, "url": url}, expires - UPLOAD_MARGIN_SECONDS


def _names_a_host(url: str) -> bool:
    """Whether `url` parses and names a host to fetch it from (`http:///a.png` does not)."""
    from urllib.parse import urlsplit

    try:
        return bool(urlsplit(url).hostname)
    except ValueError:  # `http://[::1`
        return False


def _timestamp(value: object) -> float | None:
    """Unix seconds from seconds, milliseconds or an ISO 8601 string; None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        if not _EARLIEST <= value <= _LATEST_MS:  # NaN, infinity, 400 digits: unreadable
            return None
        return value / 1000 if value > 10**11 else float(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return _timestamp(float(text))
        except ValueError:
            pass
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=dt.timezone.utc)
            return parsed.timestamp()
        except (ValueError, OverflowError):  # year 9999 shifted past the end by its zone
            return None
    return None


# -- uploading, remembered ---------------------------------------------------------------------


@dataclass
class Uploader:
    """Uploads through `client`, remembering each file's URL in `cache` by its SHA-256."""

    client: Client
    cache: Cache
    concurrency: int = 4
    clock: Callable[[], float] = time.time
    on_uploaded: Callable[[Upload, bool], None] | None = None  # (upload, was it remembered)

    def upload(self, upload: Upload) -> dict[str, Any]:
        """The service's object for this file: remembered, or uploaded now."""
        base_url = self.client.base_url
        remembered = self.cache.upload(base_url, upload.sha256)
        if remembered is not None:
            if self.on_uploaded:
                self.on_uploaded(upload, True)
            return remembered
        reply = self.client.upload_image(upload)
        obj, expires_at = parse_upload(reply, now=self.clock())
        self.cache.remember_upload(base_url, upload.sha256, obj, expires_at)
        if self.on_uploaded:
            self.on_uploaded(upload, False)
        return obj

    def upload_all(self, references: Iterable[Reference]) -> dict[Reference, str]:
        """The URL of each local file or data: URI among `references`: all are hashed,
        then each distinct content is uploaded once, up to `concurrency` at a time."""
        pending = list(dict.fromkeys(r for r in references if r.kind != "url"))
        prepared = self._parallel(prepare_upload, pending)
        distinct = list({upload.sha256: upload for upload in prepared}.values())
        objects = self._parallel(self.upload, distinct)
        url_of = {upload.sha256: obj["url"] for upload, obj in zip(distinct, objects, strict=True)}
        return {upload.reference: url_of[upload.sha256] for upload in prepared}

    def _parallel(self, function: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """`function` of each item, up to `concurrency` at a time, results in order.

        After the first failure no further item starts; it is raised once those
        under way have ended (an upload cut off midway would be an orphan anyway).
        """
        if not items:
            return []
        if len(items) == 1:
            return [function(items[0])]
        from apimart_cli.workers import map_within  # daemon threads: Ctrl-C ends at once

        done, timed_out = map_within(
            self.client.deadline,
            function,
            items,
            workers=self.concurrency,
            name="upload",
            stop_after_failure=True,
        )
        if timed_out:
            raise WaitTimeout("Out of time while uploading reference images.")
        failures = [value for ok, value in done.values() if not ok]
        if failures:
            raise failures[0]
        return [done[index][1] for index in range(len(items))]


def with_uploaded(request: GenerationRequest, urls: Mapping[Reference, str]) -> GenerationRequest:
    """The request with each uploaded reference replaced by its URL."""
    return replace(
        request,
        references=tuple(
            Reference(urls[ref], "url") if ref in urls else ref for ref in request.references
        ),
    )


def inline_references(requests: Iterable[GenerationRequest]) -> list[Reference]:
    """The references that travel as base64 (local files and data: URIs), first seen first."""
    return list(
        dict.fromkeys(
            ref for request in requests for ref in request.references if ref.kind != "url"
        )
    )


def is_base64_refusal(error: ApimartError, request: GenerationRequest) -> bool:
    """Whether `error` is the service refusing the base64 references `request` carried:
    a 400 (nothing was created) that speaks of base64 or data URIs (or says
    `image_requires_upload`). A 400 that merely mentions uploading is not one."""
    status = getattr(error, "status_code", None)
    if status != 400 or not inline_references([request]):
        return False
    message = error.message.lower()
    return any(word in message for word in _REFUSAL_WORDS)


_REFUSAL_WORDS = ("base64", "data uri", "data url", "data:image", "image_requires_upload")


def upload_files(
    client: Client, references: Sequence[Reference], *, warn: Callable[[str], None]
) -> Iterator[dict[str, Any]]:
    """The service's object for each file, in order, each as soon as it is uploaded
    (or found remembered), so that a failure midway still shows the ones that made it."""
    from apimart_cli.cache import Cache

    uploader = Uploader(client, Cache(warn=warn, deadline=client.deadline), concurrency=1)
    for reference in references:
        yield uploader.upload(prepare_upload(reference))


# -- sending generations with their references -----------------------------------------------


class ReferenceSender:
    """Sends generation requests with their references the way the settings say.

    `check` checks every request against its model's schema (not gpt-image-2's,
    which `build_request` checks offline) and learns what each model makes (its
    operation: a model that makes something the tool cannot save is refused);
    `prepare` uploads the references of all the requests when `mode` is
    "upload", each distinct content once, in parallel; `submit` sends one
    request to its operation's endpoint and, where the service refuses base64
    references, uploads them and sends it once more, from then on uploading. A
    video model's local references are always uploaded: they go by URL.

    The mode "auto" is "inline" until the service refuses base64 once: that refusal
    is remembered for its base URL in the cache for REFUSAL_REMEMBERED_SECONDS, and
    from then on "auto" uploads first, saying so once. "inline" and "upload" are the
    user's word and always win.
    """

    def __init__(
        self,
        client: Client,
        mode: str,
        *,
        concurrency: int = 4,
        info: Callable[[str], None],
        warn: Callable[[str], None],
        cache: Cache | None = None,
    ) -> None:
        from apimart_cli.cache import Cache

        self.client = client
        self.mode = mode
        self._info = info
        self._cache = cache if cache is not None else Cache(warn=warn, deadline=client.deadline)
        self._uploader = Uploader(client, self._cache, concurrency=concurrency)
        self._lock = threading.Lock()
        self._uploading = threading.Lock()
        self._urls: dict[Reference, str] = {}  # uploaded in this run
        self._told = False
        self._auto = mode == "auto"
        self._refused_since: float | None = None
        self._operations: dict[str, str] = {}  # each checked model's operation
        self._told_video = False

    def check(self, requests: Sequence[tuple[str, GenerationRequest]]) -> None:
        """Each (label, request) whose model is not gpt-image-2, against its schema:
        a UsageError (exit 2) before anything is sent, naming the label and the field."""
        from apimart_cli.constants import DEFAULT_MODEL
        from apimart_cli.schema import check_body, fetch_model

        schemas: dict[str, Mapping[str, Any] | None] = {}
        for label, request in requests:
            model = request.model
            if model == DEFAULT_MODEL:
                continue
            try:
                if model not in schemas:
                    found = fetch_model(self.client, self._cache, model)
                    schemas[model] = None if found is None else found.input_schema
                    if found is None:
                        self._info(
                            f"Note: the service has no schema for the model {model}; "
                            "its requests are sent as given, to the images endpoint."
                        )
                    else:
                        operation = found.checked_operation(model)
                        with self._lock:
                            self._operations[model] = operation
                schema = schemas[model]
                if schema is None:
                    continue
                check_body(request.dry_run(), schema, model)
            except UsageError as error:
                error.message = f"{label}{error.message}" if label else error.message
                error.args = (error.message,)
                raise

    def upload_first(self, requests: Sequence[GenerationRequest]) -> None:
        """With the mode "upload": every distinct reference of `requests` uploaded now, in
        parallel, so that their submissions (`submit`) find the URLs ready (a video
        model's are uploaded whatever the mode)."""
        from apimart_cli.constants import VIDEO_OPERATION

        with self._lock:
            videos = {m for m, op in self._operations.items() if op == VIDEO_OPERATION}
        self._upload(inline_references([r for r in requests if r.model in videos]))
        self._resolve_auto(requests)
        if self.mode == "upload":
            local = inline_references(requests)
            if local:
                self._say_remembered()
            self._upload(local)

    def submit(
        self,
        history: History,
        request: GenerationRequest,
        *,
        idempotency_key: str | None = None,
        before_resend: Callable[[str], None] | None = None,
    ) -> list[str]:
        """Submit `request` (recorded as `submission.submit` does); its task ids.

        `before_resend(key)` hears the new idempotency key before a resubmission
        after a base64 refusal, so that a caller that records keys (`batch`) can.
        """
        from apimart_cli.constants import IMAGE_OPERATION, VIDEO_OPERATION
        from apimart_cli.submission import bound_request, submit

        bound = None if idempotency_key is None else bound_request(history, idempotency_key)
        if bound is not None:  # a key sent before goes with the body it was sent with
            request = bound
        else:
            with self._lock:
                operation = self._operations.get(request.model, IMAGE_OPERATION)
            request = replace(request, operation=operation)
            if operation == VIDEO_OPERATION and inline_references([request]):
                self._tell_video_uploads(request.model)
                self._upload(inline_references([request]))
                request = self._with_urls(request)
            self._resolve_auto([request])
        if bound is None and self.mode == "upload" and inline_references([request]):
            self._say_remembered()
            self._upload(inline_references([request]))
            request = self._with_urls(request)
        try:
            return submit(
                self.client, history, request, idempotency_key=idempotency_key, note=self._info
            )
        except ApimartError as error:
            if not is_base64_refusal(error, request):
                raise
            reason = error.message
        self._refused(reason)
        self._upload(inline_references([request]))
        # The refusal was a 400: no task was created under the first key, so the
        # request (now with URLs, another body) goes out once more under a new one,
        # rather than reusing a key the service saw with a different body.
        key = str(uuid.uuid4())
        if before_resend:
            before_resend(key)
        return submit(
            self.client, history, self._with_urls(request), idempotency_key=key, note=self._info
        )

    def _resolve_auto(self, requests: Sequence[GenerationRequest]) -> None:
        """The mode "auto", once there are local references to send: "upload" if the
        service's refusal of base64 is remembered, else "inline" (the cache is read then,
        not by every command)."""
        with self._lock:
            if self.mode != "auto" or not inline_references(requests):
                return
        refused = self._cache.note(self.client.base_url, _REFUSAL_NOTE)
        with self._lock:
            if self.mode == "auto":
                self.mode = "upload" if refused is not None else "inline"
                if _plausible_time(refused):
                    self._refused_since = float(refused)

    def _say_remembered(self) -> None:
        """With "auto" and a remembered refusal: say once why local files are uploaded."""
        with self._lock:
            told, self._told = self._told, True
        if self._auto and not told:
            since = ""
            if self._refused_since:
                day = dt.datetime.fromtimestamp(self._refused_since, dt.timezone.utc)
                since = f" on {day:%Y-%m-%d}"
            self._info(
                f"Uploading local references first: {self.client.base_url} refused base64 "
                f"references{since} (--refs inline sends them inline)."
            )

    def _tell_video_uploads(self, model: str) -> None:
        with self._lock:
            told, self._told_video = self._told_video, True
        if not told:
            self._info(
                f"Note: {model} makes videos, whose references go by URL: uploading the "
                "local files first."
            )

    def _refused(self, reason: str) -> None:
        self._cache.remember_note(
            self.client.base_url,
            _REFUSAL_NOTE,
            time.time(),
            time.time() + REFUSAL_REMEMBERED_SECONDS,
        )
        with self._lock:
            self.mode = "upload"  # the jobs still to come go straight to uploading
            told, self._told = self._told, True
        if not told and self._auto:
            self._info(
                f"The service refused base64 references ({reason}); uploading them and "
                "sending the request again. Later commands upload first (remembered for "
                "7 days; --refs inline sends them inline)."
            )
        elif not told:
            self._info(
                f"The service refused base64 references ({reason}); uploading them and "
                "sending the request again. To upload by default: `apimart config set "
                "references upload`, APIMART_REFERENCES=upload or --refs upload."
            )

    def _upload(self, references: Sequence[Reference]) -> None:
        # One upload round at a time: jobs refused together (a batch's workers) then wait
        # for the first round and find their references among its URLs, not upload twins.
        with self._uploading:
            with self._lock:
                missing = [ref for ref in references if ref not in self._urls]
            if missing:
                urls = self._uploader.upload_all(missing)
                with self._lock:
                    self._urls.update(urls)

    def _with_urls(self, request: GenerationRequest) -> GenerationRequest:
        with self._lock:
            return with_uploaded(request, dict(self._urls))
