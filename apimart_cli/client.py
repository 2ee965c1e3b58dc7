"""The APIMart HTTP client: submit, get a task, balance, stream an image.

The only module that knows httpx: every transport failure becomes one of the
project's errors here. Each request in flight has an `httpx.Client` of its own
(`_Lanes`), all made alike. The API key goes only on API requests, never as a
default header, so an image host can never receive it. Every API call goes
through `retry.retrying` and stops at the command's `Deadline`; no API request
lasts longer than REQUEST_TIME_LIMIT, whatever the server sends (an upload: its
reply, once its body is sent), and a download or an upload's body fails when it
stalls (STALL_WINDOW).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.cookiejar import CookieJar
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from apimart_cli import __version__, lean_httpx, secrets
from apimart_cli.constants import (
    CONNECT_TIMEOUT,
    GENERATION_PATHS,
    MAX_JSON_REPLY_BYTES,
    READ_TIMEOUT,
    REQUEST_TIME_LIMIT,
    STALL_MIN_BYTES_PER_SECOND,
    STALL_WINDOW,
    USER_AGENT_PRODUCT,
)
from apimart_cli.deadline import Deadline
from apimart_cli.errors import (
    ApimartError,
    APIStatusError,
    AuthRefusedError,
    BadRequestError,
    BalanceError,
    NotFoundError,
    RateLimitedError,
    ServiceError,
    ServiceStatusError,
    SubmissionTimedOut,
    SubmissionUnknown,
    TaskError,
    UsageError,
    WaitTimeout,
    clipped,
    named,
    printable,
)
from apimart_cli.retry import (
    RETRYABLE_STATUSES,
    SAFE_TO_RESEND_SUBMIT,
    Transient,
    parse_retry_after,
    retrying,
)
from apimart_cli.settings import is_loopback, no_key_error
from apimart_cli.tasks import (
    ReplyError,
    Submitted,
    Task,
    is_result_id,
    parse_submitted,
    parse_task,
    reply_error,
    validate_task_id,
)
from apimart_cli.workers import Runner

lean_httpx.keep_out_cli()  # httpx's own command-line client: 40 ms, never used
import httpx  # noqa: E402

lean_httpx.allow_cli()

if TYPE_CHECKING:
    import ssl

    from apimart_cli.payload import GenerationRequest


class UploadBody(Protocol):
    """A multipart body streamed from disk (`references.Upload`): its type, its exact
    length (for Content-Length), then its bytes, afresh on each call."""

    @property
    def content_type(self) -> str: ...
    def body_length(self) -> int: ...
    def iter_body(self) -> Iterator[bytes]: ...


Log = Callable[[str], None]

# Transport errors raised before any byte of the request left: safe to resend anything.
# LocalProtocolError: httpx refused to build the request (a bad header), so nothing left.
_NEVER_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.LocalProtocolError,
)

_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    401: AuthRefusedError,
    402: BalanceError,
    403: AuthRefusedError,
    404: NotFoundError,
    408: ServiceStatusError,
    425: ServiceStatusError,
    429: RateLimitedError,
}
_SERVICE_HINT = "The service is having trouble; try again in a few minutes."

_STATUS_HINTS = {
    400: "The server refused the request; its message says why.",
    401: "Check the key: `apimart config set api_key`, or set APIMART_API_KEY.",
    402: "Top up the balance, then submit again (`apimart balance` shows it).",
    403: "Check that the key may use this API: `apimart config set api_key`.",
    429: "The service is rate limiting this key; wait a little and run the command again.",
}


class _Malformed(Exception):
    """A reply whose body is not the JSON object it should be."""


class _TooSlow(Exception):
    """A request that outlasted REQUEST_TIME_LIMIT, or a transfer that stalled."""


class Reply(NamedTuple):
    """A streamed reply: its status, its headers (any case), and its body as it arrives.

    Iterating `body` raises `retry.Transient` when the transfer fails or stalls,
    and `WaitTimeout` when the command's deadline comes.
    """

    status: int
    headers: Mapping[str, str]
    body: Iterator[bytes]


class _StallMeter:
    """Fails a transfer averaging under STALL_MIN_BYTES_PER_SECOND over STALL_WINDOW."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._since = clock()
        self._bytes = 0

    def add(self, count: int) -> None:
        self._bytes += count
        now = self._clock()
        if now - self._since < STALL_WINDOW:
            return
        if self._bytes < STALL_MIN_BYTES_PER_SECOND * STALL_WINDOW:
            raise _TooSlow(
                f"{self._bytes} bytes in {STALL_WINDOW:g} s, under "
                f"{STALL_MIN_BYTES_PER_SECOND} bytes/s"
            )
        self._since, self._bytes = now, 0


def _reply_error(status_code: int, body: bytes) -> ReplyError:
    """What an error reply says, from any of the error shapes the service sends."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
        payload = None
    return reply_error(payload, max(status_code, 400)) or ReplyError(status_code, None)


def make_status_error(
    status_code: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    in_body: ReplyError | None = None,
    model: str | None = None,
) -> APIStatusError:
    """The one place an error reply becomes an error: its class says its exit code.

    `in_body`: the error a 200 carried, whose `code` is the status to act on. A
    model problem (`model_not_found`, `unsupported_generation_model`) is a refusal
    whatever the status: it names `model`, and is never taken for load."""
    said = in_body or _reply_error(status_code, body)
    status = said.status if in_body else status_code
    message = said.message or ("no reason given" if in_body else _phrase(status))
    answered = f"{status}" if in_body is None else f"200 with an error (code {status})"
    if said.names_model:
        which = f"the model {model}" if model else "the model asked for"
        return BadRequestError(
            f"The service cannot use {which}: {message}",
            "`apimart models` lists the models the service offers.",
            status_code=status,
            request_id=headers.get("x-request-id"),
        )
    default = ServiceStatusError if status >= 500 else BadRequestError
    kind = _STATUS_CLASSES.get(status, default)
    hint = _STATUS_HINTS.get(status)
    if hint is None and issubclass(kind, ServiceError):
        hint = _SERVICE_HINT
    return kind(
        f"The server answered {answered}: {message}",
        hint,
        status_code=status,
        request_id=headers.get("x-request-id"),
        retry_after=parse_retry_after(headers.get("retry-after")),
    )


def _phrase(status: int) -> str:
    """A status's standard name (`Bad Gateway`), for a reply that gives no reason of its own."""
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "no reason given"


# The variables httpx reads its proxies from, in either case.
_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@contextmanager
def _proxies_checked() -> Iterator[None]:
    """Building a client: a proxy in the environment httpx cannot use is a UsageError
    naming its variable, not an internal error. Its value is not quoted: a proxy URL may
    carry a password."""
    try:
        yield
    except (ImportError, ValueError, httpx.InvalidURL) as exc:
        named_here = [
            name
            for name in os.environ
            if name.upper() in _PROXY_VARIABLES and os.environ[name].strip()
        ]
        if not named_here:  # no proxy to blame: not this
            raise
        reason = (
            "a SOCKS proxy needs the socksio package (pip install 'httpx[socks]')"
            if isinstance(exc, ImportError)
            else "it is not a proxy URL httpx can use (http, https or socks5, with a valid host"
            " and port)"
        )
        raise UsageError(
            f"Cannot use the proxy {', '.join(sorted(named_here))} names: {reason}.",
            "Fix or unset that variable (NO_PROXY lists hosts to reach directly).",
        ) from None


def _environment_proxy(scheme: str, host: str) -> tuple[str, str, int] | None:
    """The proxy httpx takes from the environment for `scheme://host`: the variable that
    names it, the proxy's host and its port (never its password); None if none."""
    from urllib.request import getproxies_environment

    proxies = getproxies_environment()
    host = host.lower()
    for entry in proxies.get("no", "").lower().split(","):  # NO_PROXY, as httpx reads it
        entry = entry.strip()
        if entry == "*":
            return None
        name = entry.split("://")[-1].lstrip("*.")
        if name and (host == name or host.endswith(f".{name}")):
            return None
    for kind in (scheme.lower(), "all"):
        value = proxies.get(kind, "").strip()
        if not value:
            continue
        variables = (
            name
            for name, given in os.environ.items()
            if name.lower() == f"{kind}_proxy" and given.strip() == value
        )
        proxy = urlsplit(value if "://" in value else f"http://{value}")
        try:
            port = proxy.port or (443 if proxy.scheme == "https" else 80)
        except ValueError:  # httpx refused it when the client was made; so would this
            return None
        return next(variables, f"{kind.upper()}_PROXY"), proxy.hostname or "", port
    return None


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def certificate_context() -> ssl.SSLContext:
    """The TLS settings every client of this process shares: the certificates of
    SSL_CERT_FILE, else SSL_CERT_DIR, else certifi's, as httpx reads them. Making one
    parses the whole certificate bundle (20-40 ms of CPU), and httpx would make one for
    each client and each proxy; a context is safe to share between threads."""
    return _certificate_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _certificate_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    """One context for each setting of the two variables (the arguments are the key).
    Certificates that cannot be read are a UsageError naming the variable: no request
    could be made safely without them."""
    try:
        return httpx.create_ssl_context(trust_env=True)
    except OSError as exc:  # ssl.SSLError too: a file of no certificates
        variable, value = ("SSL_CERT_FILE", cafile) if cafile else ("SSL_CERT_DIR", capath)
        raise UsageError(
            f"Cannot read the certificates {variable} names ({named(value or '')}):"
            f" {exc.strerror or exc}.",
            f"Point {variable} at a file of PEM certificates, or unset it.",
        ) from None


class _Lanes:
    """httpx clients for one kind of request, each lent to one request at a time.

    One httpx client shared by every thread looks at each of its connections on
    every request it sends and every reply it closes, and counts them all again
    for each idle one: with 64 polls in flight that was more of a request's CPU
    than the request itself (docs/benchmarks.md). Lent one request at a time, a
    client holds one connection, kept alive for the next request it is lent to:
    the one returned last is lent first, its connection the warmest.
    """

    def __init__(self, make: Callable[[], httpx.Client], first: httpx.Client | None = None):
        self._make = make
        self._idle = [] if first is None else [first]
        self._made = list(self._idle)
        self._lock = threading.Lock()
        self._closed = False

    @contextmanager
    def lend(self) -> Iterator[httpx.Client]:
        """A client no other request is using, made if none is free."""
        with self._lock:
            http = self._idle.pop() if self._idle else None
        if http is None:
            http = self._make()
            with self._lock:
                self._made.append(http)
        try:
            yield http
        finally:
            with self._lock:
                closed = self._closed
                if not closed:
                    self._idle.append(http)
            if closed:  # made or lent as the lanes closed (a request abandoned at a deadline)
                http.close()

    def close(self) -> None:
        """Close every client made, a lent one too (its request fails, as it would have),
        and any lent from now on once its request is over."""
        with self._lock:
            self._closed = True
            made, self._made, self._idle = self._made, [], []
        for http in made:
            http.close()


class Client:
    """A client for one base URL and key."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        deadline: Deadline | None = None,
        log: Log | None = None,
        on_retry: Log | None = None,
        on_rate_limited: Callable[[float | None], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        base_url_source: str | None = None,
    ) -> None:
        """`deadline` is the command's (`--timeout`): no request, retry or download
        of this client outlasts it. Its clock is the client's."""
        self.base_url = base_url.rstrip("/")
        # Which setting named the base URL (`--base-url`, `APIMART_BASE_URL`...), for the
        # message when nothing answers there.
        self._base_url_source = base_url_source
        self._api_key = api_key
        self._log = log
        self.on_retry = on_retry  # told of each retry, with what failed and when it retries
        # Told of each 429 with its Retry-After: batch's pacing, the engine's poll loop.
        self._rate_limit_listeners = [on_rate_limited] if on_rate_limited else []
        self._sleep = sleep
        self._clock = clock
        self.deadline = deadline or Deadline.none()
        self._runner = Runner("request")  # each API exchange, bounded (see `_send`)
        self._results: dict[str, Task] = {}  # synchronous results, by the id made for them
        self._results_lock = threading.Lock()
        loopback = is_loopback(urlsplit(self.base_url).hostname or "")
        certificates = certificate_context()

        cookies = CookieJar()  # one jar: they answer the service as one client would

        def make() -> httpx.Client:
            return httpx.Client(
                verify=certificates,
                timeout=httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT),
                headers={"User-Agent": f"{USER_AGENT_PRODUCT}/{__version__}"},
                cookies=cookies,
                # HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE... are honoured, as curl and gh do,
                # except the proxies for a loopback base URL (a sandbox): no proxy stands in
                # front of it. A transport given here is one httpx puts no proxy before; it
                # still takes its certificates from SSL_CERT_FILE or SSL_CERT_DIR.
                transport=httpx.HTTPTransport(verify=certificates) if loopback else None,
            )

        with _proxies_checked():
            self._template = make()  # builds each API request; a bad proxy setting fails here
        # Each request in flight has a client of its own (`_Lanes`), the API's kept apart
        # from the downloads', so that each holds one connection.
        self._api = _Lanes(make, self._template)
        self._media = _Lanes(make)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._runner.close()
        self._api.close()
        self._media.close()

    def on_rate_limited(self, listener: Callable[[float | None], None]) -> None:
        """Tell `listener` of each 429 from now on, with its Retry-After (None if none)."""
        self._rate_limit_listeners.append(listener)

    # -- the API --------------------------------------------------------------

    def submit(self, request: GenerationRequest, idempotency_key: str) -> list[str]:
        """Submit one generation; the task ids it created."""
        return self.submit_reply(request, idempotency_key).task_ids

    def submit_reply(self, request: GenerationRequest, idempotency_key: str) -> Submitted:
        """Submit one generation; what the reply says: its task ids (or its finished
        result, kept for `get_task`), whether it was a replay, its request id."""
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(request.body_length()),
            "Idempotency-Key": idempotency_key,
        }
        reply_headers: dict[str, str] = {}
        reply = self._call(
            "POST",
            GENERATION_PATHS[request.operation],
            headers=headers,
            body=request.iter_body,
            idempotency_key=idempotency_key,
            model=request.model,
            reply_headers=reply_headers,
        )
        replayed = reply_headers.get("idempotency-replayed", "").strip().lower() == "true"
        try:
            submitted = parse_submitted(reply, idempotency_key, replayed=replayed)
            if any(self.carries_key(task_id) for task_id in submitted.task_ids):
                raise ServiceError("The service sent the API key as a task id.")
        except ServiceError as error:  # a 2xx without usable ids: the task may still exist
            raise self._unknown(error, idempotency_key) from None
        if submitted.result is not None:
            self._keep_result(submitted.result)
        return submitted

    def _keep_result(self, task: Task) -> None:
        """A synchronous result, for `get_task` in this run and (through the cache in the
        data folder) in the next command, until its images expire."""
        from apimart_cli.cache import Cache

        with self._results_lock:
            self._results[task.task_id] = task
        expiries = [image.expires_at for image in task.images if image.expires_at]
        until = min(expiries) if expiries else time.time() + RESULT_KEPT_SECONDS
        cache = Cache(deadline=self.deadline)
        cache.remember_note(self.base_url, f"result:{task.task_id}", dict(task.raw), until)

    def _kept_result(self, task_id: str) -> Task | None:
        with self._results_lock:
            task = self._results.get(task_id)
        if task is not None or not is_result_id(task_id):
            return task
        from apimart_cli.cache import Cache

        data = Cache(deadline=self.deadline).note(self.base_url, f"result:{task_id}")
        return parse_task({"data": data}, task_id) if isinstance(data, dict) else None

    def get_task(self, task_id: str) -> Task:
        """The task's current state (a synchronous result's, as it was kept)."""
        task_id = validate_task_id(task_id)
        kept = self._kept_result(task_id)
        if kept is not None:
            return kept
        try:
            reply = self._call("GET", f"/v1/tasks/{task_id}", params={"language": "en"})
        except NotFoundError:
            raise TaskError(
                f"Task {task_id} does not exist (404).",
                "Check the id; `apimart history` lists the tasks submitted from here.",
            ) from None
        return parse_task(reply, task_id)

    def balance(self, *, account: bool = False) -> Mapping[str, Any]:
        """The key's (or the whole account's) balance object."""
        reply = self._call("GET", "/v1/user/balance" if account else "/v1/balance")
        if not isinstance(reply, Mapping):
            raise ServiceError("The service sent a balance reply that is not an object.")
        return reply  # `success: false` is an error inside a 200, raised by `_call`

    def upload_image(self, upload: UploadBody) -> Mapping[str, Any]:
        """Upload one image (multipart field `file`, streamed from disk); the service's reply.

        Not idempotent and without a key: sent again only where nothing can have been
        stored (429, 503, never connected), as a submission is.
        """
        headers = {
            "Content-Type": upload.content_type,
            "Content-Length": str(upload.body_length()),
        }
        reply: Mapping[str, Any] = self._call(
            "POST",
            "/v1/uploads/images",
            headers=headers,
            body=upload.iter_body,
            once=True,
            transfer=True,
        )
        return reply

    def list_models(self) -> list[Mapping[str, Any]]:
        """The service's models, each an object with at least an `id`."""
        reply = _unwrapped(self._call("GET", "/v1/models"))
        items = reply.get("data") if isinstance(reply, Mapping) else reply
        if not isinstance(items, list):
            raise ServiceError("The service sent a model list that is not a list.")
        models = [{"id": item} if isinstance(item, str) else item for item in items]
        if not all(
            isinstance(item, Mapping) and isinstance(item.get("id"), str) for item in models
        ):
            raise ServiceError("The service sent a model list with an entry that has no id.")
        return models

    def model_schema(self, model: str) -> Mapping[str, Any] | None:
        """The model's schema object (`model`, `operation`, `input_schema`); None if none."""
        try:
            reply = self._call("GET", "/v1/model-schema", params={"model": model})
        except APIStatusError as error:
            if error.status_code == 404:
                return None
            raise
        data = _unwrapped(reply)
        if not isinstance(data, Mapping) or not data:
            return None
        return data

    def model_docs(self, model: str) -> Mapping[str, Any] | None:
        """The model's documentation object (`markdown`, `cache_ttl_seconds`...); None if none."""
        try:
            reply = self._call("GET", "/v1/model-docs", params={"model": model})
        except NotFoundError:
            return None
        data = _unwrapped(reply)
        if not isinstance(data, Mapping) or not isinstance(data.get("markdown"), str):
            raise ServiceError(f"The service sent documentation for {model} with no Markdown.")
        return data

    @contextmanager
    def stream(self, url: str, headers: Mapping[str, str] | None = None) -> Iterator[Reply]:
        """GET `url` with no `Authorization` header (an image), its body streamed.

        No total time limit: the body fails (`Transient`) when it stalls. A failure
        to connect is `Transient` too; the deadline, `WaitTimeout`.
        """
        started = self._clock()
        timeout = httpx.Timeout(
            self.deadline.cap(STALL_WINDOW), connect=self.deadline.cap(CONNECT_TIMEOUT)
        )
        try:
            with (
                self._media.lend() as http,
                http.stream(
                    "GET", url, headers=dict(headers or {}), follow_redirects=True, timeout=timeout
                ) as reply,
            ):
                self._trace("GET", url, reply.status_code, started)
                yield Reply(reply.status_code, reply.headers, self._transfer(reply))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol, UnicodeError, ValueError) as exc:
            # What `downloads.check_result_url` lets through and httpx still refuses, or a
            # redirect to such a URL (`file:///etc/passwd`): the same answer every time.
            raise ServiceError(f"The image URL {url} cannot be fetched: {_describe(exc)}") from None
        except (httpx.TransportError, httpx.DecodingError, _TooSlow) as exc:
            if self.deadline.expired():
                raise WaitTimeout(f"Out of time downloading {url}.") from None
            raise Transient(ServiceError(_describe(exc))) from None
        except httpx.TooManyRedirects:  # a loop: the same answer every time
            raise ServiceError(f"The image host redirected {url} too many times.") from None

    def _transfer(self, reply: httpx.Response) -> Iterator[bytes]:
        """The body as it arrives, failing when it stalls or the deadline comes."""
        meter = _StallMeter(self._clock)
        for chunk in reply.iter_bytes():
            if self.deadline.expired():
                raise WaitTimeout("Out of time while downloading.")
            meter.add(len(chunk))
            yield chunk

    # -- one request, with retries ---------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Iterator[bytes]] | None = None,
        idempotency_key: str | None = None,
        once: bool = False,
        transfer: bool = False,
        model: str | None = None,
        reply_headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a request, retrying what is safe, and return its JSON body.

        A submission (`idempotency_key`) or another request that is not idempotent
        (`once`: an upload) is sent again only where it cannot have been acted on.
        `transfer` (an upload of any size): no total time limit, but it fails when it
        makes no progress for STALL_WINDOW seconds. `model`: the model an error names;
        `reply_headers` gets the headers of the reply returned (names in lower case).
        """
        if not self._api_key:
            raise no_key_error()
        if self.deadline.expired():  # nothing starts after the deadline (a queue of queries)
            raise WaitTimeout("Out of time before the request was sent.")
        url = f"{self.base_url}{path}"
        all_headers = {"Authorization": f"Bearer {self._api_key}", **(headers or {})}

        def attempt() -> Any:
            return self._attempt(
                method,
                url,
                params,
                all_headers,
                body,
                idempotency_key,
                once,
                transfer,
                model,
                reply_headers,
            )

        return retrying(attempt, deadline=self.deadline, sleep=self._sleep, on_retry=self.on_retry)

    def _attempt(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        body: Callable[[], Iterator[bytes]] | None,
        idempotency_key: str | None,
        once: bool,
        transfer: bool,
        model: str | None = None,
        reply_headers: dict[str, str] | None = None,
    ) -> Any:
        """One try: the JSON body, or the error it ended in (`Transient` if worth another).

        A 200 whose body says it failed is that error, by the code it carries."""
        is_submit = idempotency_key is not None or once
        retry_after: float | None = None
        failure: ApimartError
        try:
            status, headers_in, content = self._send(
                method, url, params, headers, body() if body else None, transfer=transfer
            )
            in_body = None
            if 300 <= status < 400:
                raise self._redirected(status, headers_in, is_submit, idempotency_key)
            if status < 400:
                payload = self._json(content)
                in_body = reply_error(payload, status)
                if in_body is None:
                    if reply_headers is not None:
                        reply_headers.update({k.lower(): v for k, v in headers_in.items()})
                    return payload
            failure = make_status_error(status, headers_in, content, in_body=in_body, model=model)
            status = failure.status_code
            retry_after = failure.retry_after
            if status == 429:
                for listener in self._rate_limit_listeners:
                    listener(retry_after)
            retryable = status in (SAFE_TO_RESEND_SUBMIT if is_submit else RETRYABLE_STATUSES)
            retryable = retryable and isinstance(failure, ServiceError)  # not a model problem
        except _NEVER_SENT as exc:
            late = self._out_of_time(False, None)  # nothing was sent: never an unknown outcome
            if late is not None:
                raise late from None
            failure, retryable = self._unreachable(exc)
            if not retryable:
                raise failure from None
        except (httpx.TransportError, _Malformed, _TooSlow) as exc:
            sent = idempotency_key is not None  # a submission whose outcome is now unknown
            failure = self._out_of_time(sent, idempotency_key) or ServiceError(
                f"The request to {url} failed: {_describe(exc)}", _GAVE_UP_HINT
            )
            retryable = not is_submit  # the server may have acted on it
        failure.message = self._without_key(failure.message)
        failure.args = (failure.message,)
        if isinstance(failure, (WaitTimeout, SubmissionTimedOut)):
            raise failure
        if not retryable:
            if is_submit and isinstance(failure, ServiceError):
                if idempotency_key is None:
                    raise _maybe_stored(failure)
                raise self._unknown(failure, idempotency_key)
            raise failure
        raise Transient(failure, retry_after)

    def _redirected(
        self,
        status: int,
        headers: Mapping[str, str],
        is_submit: bool,
        idempotency_key: str | None,
    ) -> ApimartError:
        """The error for a redirect, never followed: the key would go with it, perhaps to
        another address. No passing fault either (an http:// base URL the service moves
        to https://, a proxy): the base URL is what is wrong, so it is not retried."""
        location = headers.get("location") or "nowhere said"
        shown_location = self._without_key(clipped(printable(location), 200))
        failure = ServiceError(
            f"The server answered with a redirect ({status}) to {shown_location}, not "
            "followed: the key is not sent on.",
            f"Check the base URL {self.base_url} (from "
            f"{self._base_url_source or 'the settings'}): set it to where the redirect "
            "points if that is the service.",
        )
        if not is_submit:
            return failure
        if idempotency_key is None:
            return _maybe_stored(failure)
        return self._unknown(failure, idempotency_key)

    def _out_of_time(self, is_submit: bool, idempotency_key: str | None) -> ApimartError | None:
        """The error for a request cut short by the command's deadline, if it was."""
        if not self.deadline.expired():
            return None
        if is_submit:
            return SubmissionTimedOut(
                "Out of time waiting for the service's reply; the task may have been "
                "created. It was not sent again.",
                _unknown_hint(idempotency_key),
                idempotency_key=idempotency_key or "",
            )
        return WaitTimeout("Out of time waiting for the service's reply.")

    def _unreachable(self, exc: Exception) -> tuple[ServiceError, bool]:
        """The error for a request that never reached the server, and whether to retry.

        It names the host and port and the setting that named them. A refused
        connection on this machine (a sandbox that is not running) is not retried:
        nothing there will start listening by itself within the retries.
        """
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        proxy = None if is_loopback(host) else _environment_proxy(parts.scheme, host)
        if proxy is not None:  # the connection that failed was the proxy's
            variable, proxy_host, proxy_port = proxy
            error = ServiceError(
                f"Could not connect to the proxy {variable} names,"
                f" {_address(proxy_host, proxy_port)}: {_describe(exc)}",
                f"Check the proxy, or unset {variable} (NO_PROXY lists hosts to reach directly).",
            )
            # A refusal on this machine: nothing will start listening there within the retries.
            return error, not (_refused(exc) and is_loopback(proxy_host))
        address = _address(host, parts.port or (443 if parts.scheme == "https" else 80))
        source = self._base_url_source or "the settings"
        hint = f"The base URL {self.base_url} comes from {source}: check it, and the network."
        refused = _refused(exc)
        if refused and is_loopback(host):
            hint = (
                f"Nothing is listening at {address} on this machine (the base URL"
                f" {self.base_url} comes from {source}). Start the sandbox there"
                " (`apimart sandbox`), or use `apimart --sandbox ...`."
            )
        error = ServiceError(f"Could not connect to {address}: {_describe(exc)}", hint)
        return error, not (refused and is_loopback(host))

    def carries_key(self, text: str) -> bool:
        """Whether `text` (a URL or an id the service sent) holds the key, in any form
        (URL-encoded, base64) or any part `secrets` hides: never to be fetched or used."""
        if not self._api_key:
            return False
        return self._api_key in text or secrets.holds(text, self._api_key)

    def _without_key(self, text: str) -> str:
        """`text` with the key cut out: a server may echo it, and nothing shown may hold it."""
        text = text.replace(self._api_key, secrets.HIDDEN) if self._api_key else text
        return secrets.redact(text)

    def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        content: Iterator[bytes] | None,
        *,
        transfer: bool = False,
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One try: status, headers, and at most MAX_JSON_REPLY_BYTES of body, within
        REQUEST_TIME_LIMIT and the deadline (a server sending a byte a second is cut off).

        httpx's timeouts bound each read, not the whole: a server dripping its headers
        would hold the request for ever. So the exchange runs on a thread of its own,
        which is abandoned at the limit. An upload (`transfer`) may take as long as
        its body needs, failing when the body stalls, but no longer than the deadline,
        and its reply, once the body is sent, gets REQUEST_TIME_LIMIT as any other."""
        limit = self.deadline.cap(STALL_WINDOW if transfer else REQUEST_TIME_LIMIT)
        timeout = httpx.Timeout(min(READ_TIMEOUT, limit), connect=min(CONNECT_TIMEOUT, limit))
        request = self._template.build_request(
            method, url, params=params, headers=dict(headers), content=content, timeout=timeout
        )
        if transfer:
            reply_limit = self.deadline.cap(REQUEST_TIME_LIMIT)
            try:
                return self._runner.run(
                    self.deadline, lambda: self._exchange(request, reply_limit, transfer=True)
                )
            except WaitTimeout:
                raise _TooSlow("no complete reply before the deadline") from None
        try:
            return self._runner.run(Deadline.after(limit), lambda: self._exchange(request, limit))
        except WaitTimeout:
            raise _TooSlow(f"no complete reply within {limit:.0f} s") from None

    def _exchange(
        self, request: httpx.Request, limit: float, *, transfer: bool = False
    ) -> tuple[int, Mapping[str, str], bytes]:
        """`request` sent and its reply read, on the calling thread (see `_send`); a body
        still coming `limit` seconds after the request started (an upload: after its
        reply started, however long the upload took) is _TooSlow."""
        started = self._clock()
        with self._api.lend() as http:
            reply = http.send(request, stream=True)
            ends = (self._clock() if transfer else started) + limit
            try:
                self._trace(request.method, str(reply.url), reply.status_code, started)
                chunks, size = [], 0
                for chunk in reply.iter_bytes():
                    size += len(chunk)
                    if size > MAX_JSON_REPLY_BYTES:
                        raise _Malformed(f"the reply was larger than {MAX_JSON_REPLY_BYTES} bytes")
                    if self._clock() >= ends:
                        raise _TooSlow(f"no complete reply within {limit:.0f} s")
                    chunks.append(chunk)
                return reply.status_code, reply.headers, b"".join(chunks)
            finally:
                reply.close()

    @staticmethod
    def _json(content: bytes) -> Any:
        try:
            payload = json.loads(content)
        except ValueError:
            raise _Malformed("the reply was not JSON") from None
        except RecursionError:  # `[[[[...` thousands deep: as malformed as any other
            raise _Malformed("the reply was JSON nested too deeply to read") from None
        if not isinstance(payload, Mapping):
            raise _Malformed("the reply was not a JSON object")
        return payload

    def _unknown(self, failure: ApimartError, idempotency_key: str | None) -> SubmissionUnknown:
        return SubmissionUnknown(
            f"{_sentence(failure.message)} The task may have been created; it was not sent again.",
            _unknown_hint(idempotency_key),
            idempotency_key=idempotency_key or "",
        )

    def _trace(self, method: str, url: str, status: int, started: float) -> None:
        if self._log:
            elapsed = (self._clock() - started) * 1000
            self._log(f"{method} {url} -> {status} ({elapsed:.0f} ms)")


_GAVE_UP_HINT = "The service is having trouble; try again later."
# How long a synchronous result is kept when its images say no expiry.
RESULT_KEPT_SECONDS = 7 * 86400.0


def _unknown_hint(idempotency_key: str | None) -> str:
    return (
        f"Idempotency key {idempotency_key}. `apimart history --pending` lists it; "
        "check your APIMart dashboard before submitting again."
    )


def _maybe_stored(failure: ApimartError) -> ApimartError:
    """An upload whose outcome is unknown: it may be stored, and it is not sent again."""
    failure.message = (
        f"{_sentence(failure.message)} The file may have been stored; it was not sent again."
    )
    failure.args = (failure.message,)
    failure.hint = "Uploads are not billed: run the command again to upload it anew."
    return failure


def _unwrapped(reply: Any) -> Any:
    """`data` of a `{"code": 200, "data": ...}` envelope, or the reply as it is."""
    if isinstance(reply, Mapping) and "code" in reply and "data" in reply:
        return reply["data"]
    return reply


def _refused(exc: BaseException) -> bool:
    """Whether a connection attempt was refused (nothing listens at that port)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "refused" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _sentence(message: str) -> str:
    """`message` ending as a sentence, so that the next one does not run into it."""
    message = message.rstrip()
    return message if message.endswith((".", "!", "?")) else message + "."


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
