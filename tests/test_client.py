"""The API client: exact requests, safe retries, errors with the contract's exit codes."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpx
import pytest
from pytest_httpx import HTTPXMock

from apimart_cli import client as client_module
from apimart_cli.client import Client, make_status_error
from apimart_cli.deadline import Deadline
from apimart_cli.errors import (
    ApimartError,
    APIStatusError,
    AuthError,
    ExitCode,
    ServiceError,
    SubmissionUnknown,
    TaskError,
    UsageError,
    WaitTimeout,
)
from apimart_cli.payload import GenerationRequest, build_request
from apimart_cli.retry import Transient
from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.helpers.clocks import FakeClock
from tests.helpers.images import png_head
from tests.helpers.waiting import returns

KEY = "sk-live-SECRET0123456789abcdef"
BASE = "https://api.test"
SUBMIT_URL = f"{BASE}/v1/images/generations"
TASK_ID = "task_01KPQ7J7DWB7QZ3WCEK3YVPBRA"
TASK_URL = f"{BASE}/v1/tasks/{TASK_ID}?language=en"
IDEMPOTENCY_KEY = "0b8f5e1c-4d7a-4f3e-9c2b-6a1d2e3f4a5b"
AUTH = {"Authorization": f"Bearer {KEY}"}
SUBMITTED = {"code": 200, "data": [{"status": "submitted", "task_id": TASK_ID}]}
PROCESSING = {"code": 200, "data": {"id": TASK_ID, "status": "processing", "progress": 30}}
HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
PNG = png_head(1, 1)


@dataclass
class Recorder:
    """What the client reported: retry lines, trace lines, the delays it slept."""

    delays: list[float] = field(default_factory=list)
    retries: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        return self.retries + self.logs


@pytest.fixture
def rec() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    for message in recorder.messages():
        assert KEY not in message


@pytest.fixture
def client(rec: Recorder) -> Iterator[Client]:
    with Client(
        BASE, KEY, log=rec.logs.append, on_retry=rec.retries.append, sleep=rec.delays.append
    ) as api:
        yield api


def fails(error_type: type[ApimartError], call: Any, *args: Any, **kwargs: Any) -> ApimartError:
    """The error `call` raises; no error ever carries the API key."""
    with pytest.raises(error_type) as caught:
        call(*args, **kwargs)
    error = caught.value
    for text in (error.message, error.hint or "", str(error), repr(error.args)):
        assert KEY not in text
    return error


def request_body(request: GenerationRequest) -> bytes:
    return b"".join(request.iter_body())


def expect_submit(httpx_mock: HTTPXMock, request: GenerationRequest, **reply: Any) -> None:
    """A reply to a submission that matches only the exact request the client must send."""
    body = request_body(request)
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT_URL,
        match_headers={
            **AUTH,
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Idempotency-Key": IDEMPOTENCY_KEY,
        },
        match_content=body,
        **reply,
    )


@pytest.fixture
def fox() -> GenerationRequest:
    return build_request("a red fox", n=2, size="16:9", resolution="2k")


# --- make_status_error -----------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [
        (400, ExitCode.FAILED),
        (401, ExitCode.AUTH),
        (402, ExitCode.BALANCE),
        (403, ExitCode.AUTH),
        (404, ExitCode.FAILED),
        (409, ExitCode.FAILED),
        (422, ExitCode.FAILED),
        (429, ExitCode.SERVICE),
        (500, ExitCode.SERVICE),
        (502, ExitCode.SERVICE),
        (503, ExitCode.SERVICE),
        (504, ExitCode.SERVICE),
    ],
)
def test_make_status_error_exit_codes(status: int, exit_code: ExitCode) -> None:
    error = make_status_error(status, {}, b"")
    assert error.status_code == status
    assert error.exit_code == exit_code
    assert error.message == f"The server answered {status}: {HTTPStatus(status).phrase}"
    if exit_code != ExitCode.FAILED or status == 400:
        assert error.hint


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"error": {"code": 400, "message": "bad size", "type": "invalid_request_error"}}',
            "bad size",
        ),
        ('{"error": {"code": "x", "message": "提示词违规"}}'.encode(), "提示词违规"),
        (b'{"message": "rate limited"}', "rate limited"),
        (b'{"code": 500, "message": "upstream down"}', "upstream down"),
        (b'{"success": false, "message": "key disabled"}', "key disabled"),
        (b'{"error": {"code": 500}, "message": "outer"}', "outer"),
        (b'{"error": "just a string"}', "just a string"),
        (b'{"code": 502, "msg": "bad gateway upstream"}', "bad gateway upstream"),
        (b'{"error": 42}', "Bad Gateway"),
        (b'{"error": {"message": ""}}', "Bad Gateway"),
        (b"[1, 2]", "Bad Gateway"),
        (b"null", "Bad Gateway"),
        (HTML_502, "Bad Gateway"),
        (b"", "Bad Gateway"),
        (b"\xff\xfe not utf-8", "Bad Gateway"),
    ],
)
def test_make_status_error_message(body: bytes, message: str) -> None:
    error = make_status_error(502, {}, body)
    assert error.message == f"The server answered 502: {message}"


def test_a_status_with_no_name_and_no_reason_says_so() -> None:
    assert (
        make_status_error(599, {}, b"<html>").message == "The server answered 599: no reason given"
    )


def test_make_status_error_headers() -> None:
    headers = httpx.Headers({"X-Request-Id": "req_123", "Retry-After": "12"})
    error = make_status_error(429, headers, b"{}")
    assert error.request_id == "req_123"
    assert error.retry_after == 12.0
    assert make_status_error(429, httpx.Headers({"Retry-After": "999"}), b"").retry_after == 30.0
    assert make_status_error(503, {}, b"").retry_after is None


# --- submit ------------------------------------------------------------------------


def test_submit_sends_exactly_the_request(
    client: Client, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    expect_submit(httpx_mock, fox, json=SUBMITTED)
    assert client.submit(fox, IDEMPOTENCY_KEY) == [TASK_ID]
    (sent,) = httpx_mock.get_requests()
    assert json.loads(sent.content) == {
        "model": "gpt-image-2",
        "prompt": "a red fox",
        "n": 2,
        "size": "16:9",
        "resolution": "2k",
    }
    assert sent.headers["Content-Length"] == str(len(sent.content))
    assert "Transfer-Encoding" not in sent.headers
    assert sent.headers["User-Agent"].startswith("apimart-cli/")


def test_submit_streams_a_reference_file_with_its_exact_length(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    image = tmp_path / "ref.png"
    image.write_bytes(PNG * 1000)
    request = build_request("edit this", images=[str(image)], official_fallback=True)
    body = request_body(request)
    assert body.startswith(b'{"model": "gpt-image-2", "prompt": "edit this", "image_urls": ["data:')
    expect_submit(httpx_mock, request, json=SUBMITTED)
    assert client.submit(request, IDEMPOTENCY_KEY) == [TASK_ID]
    (sent,) = httpx_mock.get_requests()
    assert sent.headers["Content-Length"] == str(len(body)) == str(len(sent.content))
    assert json.loads(sent.content)["official_fallback"] is True


def test_submit_accepts_the_object_shape(
    client: Client, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    expect_submit(httpx_mock, fox, json={"code": 200, "data": {"id": TASK_ID, "status": "pending"}})
    assert client.submit(fox, IDEMPOTENCY_KEY) == [TASK_ID]


def test_submit_is_resent_with_the_same_key_after_429(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    expect_submit(
        httpx_mock,
        fox,
        status_code=429,
        headers={"Retry-After": "7"},
        json={"error": {"code": 429, "message": "too many requests"}},
    )
    expect_submit(httpx_mock, fox, json=SUBMITTED)
    assert client.submit(fox, IDEMPOTENCY_KEY) == [TASK_ID]
    first, second = httpx_mock.get_requests()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == IDEMPOTENCY_KEY
    assert first.content == second.content == request_body(fox)
    assert rec.delays == [7.0]  # the server's Retry-After, not the backoff
    assert len(rec.retries) == 1
    assert "429" in rec.retries[0] and "7.0 s" in rec.retries[0] and "try 2" in rec.retries[0]


def test_each_429_is_reported_to_on_rate_limited(
    rec: Recorder, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    told: list[float | None] = []
    with Client(BASE, KEY, sleep=rec.delays.append, on_rate_limited=told.append) as api:
        expect_submit(httpx_mock, fox, status_code=429, headers={"Retry-After": "7"})
        expect_submit(httpx_mock, fox, status_code=503)
        expect_submit(httpx_mock, fox, status_code=429)
        expect_submit(httpx_mock, fox, json=SUBMITTED)
        assert api.submit(fox, IDEMPOTENCY_KEY) == [TASK_ID]
    assert told == [7.0, None]
    assert len(rec.delays) == 3


def test_submit_is_resent_after_503_with_backoff(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    expect_submit(httpx_mock, fox, status_code=503, text="Service Unavailable")
    expect_submit(httpx_mock, fox, status_code=503, json={"message": "upstream busy"})
    expect_submit(httpx_mock, fox, json=SUBMITTED)
    assert client.submit(fox, IDEMPOTENCY_KEY) == [TASK_ID]
    assert len(httpx_mock.get_requests()) == 3
    assert len(rec.delays) == 2
    assert 0.25 <= rec.delays[0] <= 0.5
    assert 0.5 <= rec.delays[1] <= 1.0


@pytest.mark.parametrize(
    "exception",
    [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out connecting"),
        httpx.PoolTimeout("no connection free"),
    ],
)
def test_submit_is_resent_when_it_was_never_sent(
    client: Client,
    rec: Recorder,
    httpx_mock: HTTPXMock,
    fox: GenerationRequest,
    exception: httpx.TransportError,
) -> None:
    httpx_mock.add_exception(exception, method="POST", url=SUBMIT_URL)
    expect_submit(httpx_mock, fox, json=SUBMITTED)
    assert client.submit(fox, IDEMPOTENCY_KEY) == [TASK_ID]
    first, second = httpx_mock.get_requests()
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert len(rec.delays) == 1


def test_submit_gives_up_after_six_tries_of_429(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    for _ in range(6):
        expect_submit(httpx_mock, fox, status_code=429, json={"error": {"message": "slow down"}})
    error = fails(ApimartError, client.submit, fox, IDEMPOTENCY_KEY)
    assert error.exit_code == ExitCode.SERVICE
    assert "slow down" in error.message
    assert len(httpx_mock.get_requests()) == 6
    assert len(rec.delays) == 5


def _not_resent(httpx_mock: HTTPXMock, case: str) -> None:
    if case == "500":
        httpx_mock.add_response(status_code=500, json={"error": {"message": "server error"}})
    elif case == "502 html":
        httpx_mock.add_response(status_code=502, content=HTML_502)
    elif case == "504":
        httpx_mock.add_response(status_code=504, text="Gateway Timeout")
    elif case == "read timeout":
        httpx_mock.add_exception(httpx.ReadTimeout("The read operation timed out"))
    elif case == "connection dropped":
        httpx_mock.add_exception(httpx.RemoteProtocolError("Server disconnected"))
    elif case == "malformed json":
        httpx_mock.add_response(status_code=200, content=b'{"code": 200, "data": [')
    elif case == "json not an object":
        httpx_mock.add_response(status_code=200, json=[SUBMITTED])
    elif case == "html 200":
        httpx_mock.add_response(status_code=200, html="<html>maintenance</html>")
    elif case == "no task id":
        httpx_mock.add_response(status_code=200, json={"code": 200, "data": [{"status": "ok"}]})
    else:  # pragma: no cover
        raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "500",
        "502 html",
        "504",
        "read timeout",
        "connection dropped",
        "malformed json",
        "json not an object",
        "html 200",
        "no task id",
    ],
)
def test_submit_with_an_unknown_outcome_is_not_resent(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, fox: GenerationRequest, case: str
) -> None:
    _not_resent(httpx_mock, case)
    error = fails(SubmissionUnknown, client.submit, fox, IDEMPOTENCY_KEY)
    assert isinstance(error, SubmissionUnknown)
    assert error.exit_code == ExitCode.SERVICE == 5
    assert error.idempotency_key == IDEMPOTENCY_KEY
    assert IDEMPOTENCY_KEY in f"{error.message} {error.hint}"
    assert "not sent again" in error.message
    assert len(httpx_mock.get_requests()) == 1
    assert rec.delays == [] and rec.retries == []


@pytest.mark.parametrize(
    ("status", "body", "exit_code"),
    [
        (400, {"error": {"message": "prompt rejected by moderation"}}, ExitCode.FAILED),
        (401, {"error": {"message": "invalid key", "type": "authentication_error"}}, ExitCode.AUTH),
        (402, {"error": {"message": "insufficient balance"}}, ExitCode.BALANCE),
        (403, {"message": "forbidden"}, ExitCode.AUTH),
    ],
)
def test_submit_refused_is_not_resent(
    client: Client,
    rec: Recorder,
    httpx_mock: HTTPXMock,
    fox: GenerationRequest,
    status: int,
    body: dict[str, Any],
    exit_code: ExitCode,
) -> None:
    expect_submit(httpx_mock, fox, status_code=status, json=body)
    error = fails(APIStatusError, client.submit, fox, IDEMPOTENCY_KEY)
    assert not isinstance(error, SubmissionUnknown)  # refused: nothing was created
    assert error.exit_code == exit_code
    assert str(status) in error.message
    assert error.hint
    assert rec.delays == []


# --- get_task ------------------------------------------------------------------------


def test_get_task(client: Client, rec: Recorder, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=TASK_URL, match_headers=AUTH, json=PROCESSING)
    task = client.get_task(f" {TASK_ID}\n")
    assert (task.task_id, task.status, task.progress) == (TASK_ID, "processing", 30)
    (sent,) = httpx_mock.get_requests()
    assert sent.content == b""
    assert "Idempotency-Key" not in sent.headers
    assert len(rec.logs) == 1
    assert rec.logs[0].startswith(f"GET {TASK_URL} -> 200 (")
    assert rec.logs[0].endswith(" ms)")


def _transient(httpx_mock: HTTPXMock, case: str) -> None:
    if case == "500":
        httpx_mock.add_response(url=TASK_URL, status_code=500, json={"error": {"message": "oops"}})
    elif case == "502 html":
        httpx_mock.add_response(url=TASK_URL, status_code=502, content=HTML_502)
    elif case == "503":
        httpx_mock.add_response(url=TASK_URL, status_code=503)
    elif case == "429":
        httpx_mock.add_response(url=TASK_URL, status_code=429, headers={"Retry-After": "1"})
    elif case == "html 200":
        httpx_mock.add_response(url=TASK_URL, status_code=200, html="<html>oops</html>")
    elif case == "malformed json":
        httpx_mock.add_response(url=TASK_URL, status_code=200, content=b'{"data": ')
    elif case == "read timeout":
        httpx_mock.add_exception(httpx.ReadTimeout("The read operation timed out"), url=TASK_URL)
    elif case == "connect error":
        httpx_mock.add_exception(httpx.ConnectError("Connection refused"), url=TASK_URL)
    else:  # pragma: no cover
        raise AssertionError(case)


TRANSIENT = [
    "500",
    "502 html",
    "503",
    "429",
    "html 200",
    "malformed json",
    "read timeout",
    "connect error",
]


@pytest.mark.parametrize("case", TRANSIENT)
def test_get_task_retries_transient_failures(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, case: str
) -> None:
    for _ in range(5):
        _transient(httpx_mock, case)
    httpx_mock.add_response(url=TASK_URL, json=PROCESSING)
    assert client.get_task(TASK_ID).status == "processing"
    assert len(httpx_mock.get_requests()) == 6
    assert len(rec.delays) == len(rec.retries) == 5
    assert all(delay <= 8.0 for delay in rec.delays)
    assert [f"(try {n})" in line for n, line in enumerate(rec.retries, start=2)] == [True] * 5


@pytest.mark.parametrize("case", TRANSIENT)
def test_get_task_gives_up_after_six_tries(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, case: str
) -> None:
    for _ in range(6):
        _transient(httpx_mock, case)
    error = fails(ApimartError, client.get_task, TASK_ID)
    assert error.exit_code == ExitCode.SERVICE == 5
    assert error.hint
    assert len(httpx_mock.get_requests()) == 6
    assert len(rec.delays) == 5


def test_backoff_doubles_between_tries(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock
) -> None:
    for _ in range(6):
        httpx_mock.add_response(url=TASK_URL, status_code=500)
    fails(ApimartError, client.get_task, TASK_ID)
    for delay, ceiling in zip(rec.delays, [0.5, 1.0, 2.0, 4.0, 8.0], strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_get_task_404_is_a_task_error(client: Client, rec: Recorder, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=TASK_URL, status_code=404, json={"error": {"message": "task not found"}}
    )
    error = fails(TaskError, client.get_task, TASK_ID)
    assert error.exit_code == ExitCode.FAILED == 1
    assert TASK_ID in error.message and "404" in error.message
    assert rec.delays == []


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [(401, ExitCode.AUTH), (403, ExitCode.AUTH), (402, ExitCode.BALANCE), (400, ExitCode.FAILED)],
)
def test_get_task_refusals_are_not_retried(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, status: int, exit_code: ExitCode
) -> None:
    httpx_mock.add_response(url=TASK_URL, status_code=status, json={"error": {"message": "no"}})
    error = fails(APIStatusError, client.get_task, TASK_ID)
    assert error.exit_code == exit_code
    assert len(httpx_mock.get_requests()) == 1
    assert rec.delays == []


@pytest.mark.parametrize("task_id", ["a/b", "..", "task 1", "", "%2F"])
def test_get_task_refuses_a_bad_id_before_sending(client: Client, task_id: str) -> None:
    error = fails(UsageError, client.get_task, task_id)
    assert error.exit_code == ExitCode.USAGE


def test_get_task_reply_without_status_is_a_service_error(
    client: Client, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=TASK_URL, json={"code": 200, "data": {"id": TASK_ID}})
    assert fails(ServiceError, client.get_task, TASK_ID).exit_code == ExitCode.SERVICE


# --- balance ---------------------------------------------------------------------------


@pytest.mark.parametrize(("account", "path"), [(False, "/v1/balance"), (True, "/v1/user/balance")])
def test_balance(client: Client, httpx_mock: HTTPXMock, account: bool, path: str) -> None:
    reply = {"success": True, "remain_balance": 10.5, "used_balance": 2.3, "unlimited_quota": False}
    httpx_mock.add_response(method="GET", url=f"{BASE}{path}", match_headers=AUTH, json=reply)
    assert client.balance(account=account) == reply


def test_balance_success_false_shows_the_servers_message(
    client: Client, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=f"{BASE}/v1/balance", json={"success": False, "message": "令牌已过期"}
    )
    error = fails(APIStatusError, client.balance)
    assert "令牌已过期" in error.message
    assert error.exit_code != ExitCode.OK
    assert len(httpx_mock.get_requests()) == 1


def test_balance_success_false_without_a_message(client: Client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/v1/balance", json={"success": False})
    assert "no reason given" in fails(APIStatusError, client.balance).message


# --- deadlines, limits ------------------------------------------------------------------


def test_deadline_stops_retries_that_would_wait_past_it(httpx_mock: HTTPXMock) -> None:
    fake = FakeClock(1000.0)
    deadline = Deadline(fake.time + 5.0, fake)
    with Client(BASE, KEY, deadline=deadline, sleep=fake.sleep, clock=fake) as api:
        httpx_mock.add_response(url=TASK_URL, status_code=429, headers={"Retry-After": "10"})
        error = fails(ApimartError, api.get_task, TASK_ID)
    assert error.exit_code == ExitCode.TIMEOUT  # time ran out, not the service
    assert fake.slept == []
    assert len(httpx_mock.get_requests()) == 1


def test_deadline_allows_retries_that_fit(httpx_mock: HTTPXMock) -> None:
    fake = FakeClock(1000.0)
    deadline = Deadline(fake.time + 5.0, fake)
    with Client(BASE, KEY, deadline=deadline, sleep=fake.sleep, clock=fake) as api:
        httpx_mock.add_response(url=TASK_URL, status_code=429, headers={"Retry-After": "2"})
        httpx_mock.add_response(url=TASK_URL, json=PROCESSING)
        assert api.get_task(TASK_ID).status == "processing"
    assert fake.slept == [2.0]


def test_deadline_bounds_the_backoff_too(httpx_mock: HTTPXMock) -> None:
    """No sleep runs past the deadline and no try is sent after it."""
    fake = FakeClock(1000.0)
    deadline = Deadline(fake.time + 1.6, fake)
    with Client(BASE, KEY, deadline=deadline, sleep=fake.sleep, clock=fake) as api:
        # Waits of at most 0.5 s and 1 s fit; the third (1 to 2 s) would end past it.
        for _ in range(3):
            httpx_mock.add_response(url=TASK_URL, status_code=500)
        error = fails(ApimartError, api.get_task, TASK_ID)
    assert error.exit_code == ExitCode.TIMEOUT
    assert len(fake.slept) == 2
    assert fake.time < 1000.0 + 1.6


def test_oversize_reply_is_refused(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_JSON_REPLY_BYTES", 1000)
    big = json.dumps({**PROCESSING, "padding": "x" * 1000}).encode()
    for _ in range(6):
        httpx_mock.add_response(url=TASK_URL, content=big)
    error = fails(ServiceError, client.get_task, TASK_ID)
    assert error.exit_code == ExitCode.SERVICE
    assert "larger than 1000 bytes" in error.message


def test_reply_at_the_size_limit_is_read(
    client: Client, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps(PROCESSING).encode()
    monkeypatch.setattr(client_module, "MAX_JSON_REPLY_BYTES", len(body))
    httpx_mock.add_response(url=TASK_URL, content=body)
    assert client.get_task(TASK_ID).progress == 30


def test_oversize_reply_to_a_submit_is_unknown(
    client: Client, httpx_mock: HTTPXMock, fox: GenerationRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_JSON_REPLY_BYTES", 10)
    expect_submit(httpx_mock, fox, json=SUBMITTED)
    fails(SubmissionUnknown, client.submit, fox, IDEMPOTENCY_KEY)
    assert len(httpx_mock.get_requests()) == 1


# --- the key ---------------------------------------------------------------------------


@pytest.mark.parametrize("api_key", [None, ""])
def test_no_key_is_an_auth_error_and_nothing_is_sent(
    httpx_mock: HTTPXMock, fox: GenerationRequest, api_key: str | None
) -> None:
    with Client(BASE, api_key) as api:
        for call, args in (
            (api.get_task, (TASK_ID,)),
            (api.balance, ()),
            (api.submit, (fox, IDEMPOTENCY_KEY)),
        ):
            error = fails(AuthError, call, *args)
            assert error.exit_code == ExitCode.AUTH == 3
            assert error.hint and "apimart config set api_key" in error.hint
    assert httpx_mock.get_requests() == []


def test_key_echoed_by_the_server_is_never_shown(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(
        url=TASK_URL, status_code=503, json={"error": {"message": f"backend refused {KEY}"}}
    )
    httpx_mock.add_response(
        url=TASK_URL, status_code=401, json={"error": {"message": f"Invalid token: {KEY}"}}
    )
    error = fails(APIStatusError, client.get_task, TASK_ID)  # `fails` checks the message
    assert error.exit_code == ExitCode.AUTH
    assert "Invalid token" in error.message
    assert len(rec.retries) == 1  # the rec fixture checks every retry line


def _base64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "form",
    [
        KEY,
        _base64(f"Bearer {KEY}"),  # the Authorization header, echoed encoded
        _base64(KEY),
        KEY[6:],  # the key without its first characters
        KEY[:12],
    ],
)
def test_a_url_holding_the_key_in_any_form_carries_it(client: Client, form: str) -> None:
    """Such a result URL is never fetched: the image host would receive the key."""
    assert client.carries_key(f"https://img.test/f/a.png?token={form}")
    assert not client.carries_key("https://img.test/f/a.png?token=abc")


def test_a_task_id_holding_part_of_the_key_is_never_taken(
    client: Client, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    """A cut key as an id would be printed as `task_[API key]`, an id no one can use, and
    name its files with the key."""
    expect_submit(httpx_mock, fox, json={"code": 200, "data": [{"task_id": f"task_{KEY[5:]}"}]})
    error = fails(SubmissionUnknown, client.submit, fox, IDEMPOTENCY_KEY)
    assert "API key as a task id" in error.message
    assert KEY[5:] not in error.message


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_never_followed_nor_retried_and_names_where_it_points(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, status: int
) -> None:
    """The key must not follow a redirect to another address, and a redirect is no
    passing fault: the base URL is what is wrong, and the message says where it points
    (the key cut out, where the server put it in the Location)."""
    elsewhere = f"https://other.test:8443/v1/balance?k={KEY}"
    httpx_mock.add_response(
        url=f"{BASE}/v1/balance", status_code=status, headers={"Location": elsewhere}
    )
    error = fails(ServiceError, client.balance)
    assert error.exit_code == ExitCode.SERVICE
    assert f"redirect ({status}) to https://other.test:8443/v1/balance?k=[API key]" in error.message
    assert error.hint and "base URL" in error.hint
    assert len(httpx_mock.get_requests()) == 1  # not followed, not retried
    assert rec.retries == []


def test_a_redirected_submission_is_not_followed_nor_resent(
    client: Client, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    expect_submit(httpx_mock, fox, status_code=307, headers={"Location": "https://other.test/"})
    error = fails(SubmissionUnknown, client.submit, fox, IDEMPOTENCY_KEY)
    assert "redirect (307) to https://other.test/" in error.message
    assert "the key is not sent on. The task may" in error.message  # sentences kept apart
    assert len(httpx_mock.get_requests()) == 1


def test_log_lines_carry_method_url_and_status(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock, fox: GenerationRequest
) -> None:
    expect_submit(httpx_mock, fox, status_code=503)
    expect_submit(httpx_mock, fox, json=SUBMITTED)
    httpx_mock.add_response(url=f"{BASE}/v1/balance", json={"success": True})
    client.submit(fox, IDEMPOTENCY_KEY)
    client.balance()
    assert [line.split(" (")[0] for line in rec.logs] == [
        f"POST {SUBMIT_URL} -> 503",
        f"POST {SUBMIT_URL} -> 200",
        f"GET {BASE}/v1/balance -> 200",
    ]


# --- images ------------------------------------------------------------------------------


def test_stream_sends_no_authorization(
    client: Client, rec: Recorder, httpx_mock: HTTPXMock
) -> None:
    url = "https://upload.apimart.ai/f/image/abc.png"
    httpx_mock.add_response(
        url=url, match_headers={"Range": "bytes=5-"}, status_code=206, content=PNG[5:]
    )
    with client.stream(url, {"Range": "bytes=5-"}) as reply:
        assert reply.status == 206
        assert b"".join(reply.body) == PNG[5:]
    (sent,) = httpx_mock.get_requests()
    assert "Authorization" not in sent.headers
    assert KEY not in str(sent.headers)
    assert rec.logs[0].startswith(f"GET {url} -> 206")


def test_stream_follows_redirects_without_authorization(
    client: Client, httpx_mock: HTTPXMock
) -> None:
    first = "https://upload.apimart.ai/f/image/abc.png"
    final = "https://cdn.example.com/abc.png"
    httpx_mock.add_response(url=first, status_code=302, headers={"Location": final})
    httpx_mock.add_response(url=final, content=PNG, headers={"Content-Type": "image/png"})
    with client.stream(first) as reply:
        assert b"".join(reply.body) == PNG
    assert all("Authorization" not in sent.headers for sent in httpx_mock.get_requests())
    assert len(httpx_mock.get_requests()) == 2


def test_a_redirect_to_a_url_that_cannot_be_fetched_fails_at_once() -> None:
    # Not a passing network fault: retried, it would be refused the same way every time.
    from tests.helpers.scripted import Scripted, scripted_api

    to_a_file = Scripted(
        balance=lambda path, headers: (302, b"", {"Location": "file:///etc/passwd"})
    )
    with (
        scripted_api(to_a_file) as api,
        Client(api.base_url, KEY) as client,
        pytest.raises(ServiceError) as caught,
        client.stream(f"{api.base_url}/a.png"),
    ):
        pass
    assert not isinstance(caught.value, Transient)
    assert "cannot be fetched" in caught.value.message


def test_base_url_trailing_slash(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=TASK_URL, json=PROCESSING)
    with Client(BASE + "/", KEY) as api:
        assert api.base_url == BASE
        api.get_task(TASK_ID)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://api.apimart.ai",
        "http://127.0.0.1:8787",
        "http://localhost:8787",
        "http://[::1]:8787",
    ],
)
def test_certificates_from_the_environment_for_any_base_url(base_url: str) -> None:
    # SSL_CERT_FILE and SSL_CERT_DIR hold for a sandbox's image hosts as for any other.
    with Client(base_url, KEY) as api:
        assert api._template.trust_env


def test_requests_in_flight_at_once_each_have_an_httpx_client_of_their_own() -> None:
    # One httpx client shared by 64 polls in flight went over all its connections,
    # squared, for every request: most of the CPU of a wait for 100 tasks.
    made: list[httpx.Client] = []

    def make() -> httpx.Client:
        made.append(httpx.Client())
        return made[-1]

    lanes = client_module._Lanes(make)
    with lanes.lend() as first, lanes.lend() as second:
        assert first is not second
    with lanes.lend() as again:
        assert again is first  # returned last: its connection is the warmest
    assert len(made) == 2
    with lanes.lend() as late:  # lent as they close: a request abandoned at a deadline
        lanes.close()
        assert late.is_closed
    assert all(http.is_closed for http in made)
    with lanes.lend() as after:
        assert not after.is_closed  # its request goes ahead (and fails, or not, as before)
    assert after.is_closed  # but nothing keeps it open


def test_the_httpx_clients_of_a_client_share_their_cookies(httpx_mock: HTTPXMock) -> None:
    # As one httpx client would: a cookie the service sets goes back with every request.
    httpx_mock.add_response(url=f"{BASE}/v1/balance", json={}, headers={"Set-Cookie": "seen=1"})
    httpx_mock.add_response(url=TASK_URL, json=PROCESSING)
    with Client(BASE, KEY) as api:
        with api._api.lend():
            api.balance()  # through a second client
        with api._api.lend(), api._api.lend():
            api.get_task(TASK_ID)  # through a third
        assert len(api._api._made) == 3
    first, second = httpx_mock.get_requests()
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "seen=1"


def test_the_api_and_the_image_hosts_are_reached_through_clients_of_their_own() -> None:
    # Lent to both, each client kept a connection to both: twice the sockets.
    with Sandbox(SandboxConfig(duration=0)) as sandbox, Client(sandbox.base_url, KEY) as api:
        [task_id] = api.submit(build_request("a fox"), IDEMPOTENCY_KEY)
        url = api.get_task(task_id).images[0].url
        with api.stream(url) as reply:
            assert reply.status == 200
        with api._api.lend() as for_the_api, api._media.lend() as for_images:
            assert for_the_api is not for_images
        assert not set(map(id, api._api._made)) & set(map(id, api._media._made))


def test_the_clients_of_a_process_read_the_certificates_once_a_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Reading a certificate bundle costs 20-40 ms; httpx reads one for each client and
    # each proxy unless it is handed a context. SSL_CERT_FILE still decides which.
    loaded: list[object] = []
    real = ssl.create_default_context

    def recording(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        loaded.append(kwargs.get("cafile"))
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", recording)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    bundles = [tmp_path / "first.pem", tmp_path / "second.pem"]
    for bundle in bundles:
        bundle.write_bytes(Path(certifi.where()).read_bytes())
    for bundle in bundles:
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        for base_url in ("https://api.apimart.ai", "http://127.0.0.1:8787", "https://x.example"):
            with Client(base_url, KEY):
                pass
    assert loaded == [str(bundle) for bundle in bundles]


@pytest.mark.parametrize("content", [None, b"not a certificate\n"], ids=["missing", "no PEM"])
def test_certificates_that_cannot_be_read_are_a_usage_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: bytes | None
) -> None:
    # It was "internal error (FileNotFoundError)" or "(SSLError)".
    bundle = tmp_path / "bundle.pem"
    if content is not None:
        bundle.write_bytes(content)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with pytest.raises(UsageError) as refused:
        Client("http://127.0.0.1:8787", KEY)
    assert refused.value.exit_code == ExitCode.USAGE
    assert f"SSL_CERT_FILE names ({bundle})" in refused.value.message
    assert refused.value.hint == "Point SSL_CERT_FILE at a file of PEM certificates, or unset it."


@pytest.mark.parametrize(
    "proxy",
    ["socks5://me:pw-secret@127.0.0.1:9", "http://me:pw-secret@[::1", "ftp://me:pw-secret@host"],
    ids=["SOCKS without socksio", "not a URL", "unknown scheme"],
)
def test_a_proxy_httpx_cannot_use_is_a_usage_error_that_does_not_quote_it(
    monkeypatch: pytest.MonkeyPatch, proxy: str
) -> None:
    # Each was an internal error (ImportError, InvalidURL, ValueError).
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(UsageError) as refused:
        Client("https://api.apimart.ai", KEY)
    assert refused.value.exit_code == ExitCode.USAGE
    assert refused.value.message.startswith("Cannot use the proxy HTTPS_PROXY names: ")
    assert "pw-secret" not in f"{refused.value.message} {refused.value.hint}"


def test_proxies_from_the_environment_but_never_before_a_loopback_sandbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with Sandbox(SandboxConfig(duration=0)) as sandbox, Client(sandbox.base_url, KEY) as api:
        assert api.balance()  # straight to the sandbox, not through the proxy
    with Client("https://api.apimart.ai", KEY) as api:
        proxied = api._template._transport_for_url(httpx.URL("https://api.apimart.ai/v1/balance"))
        assert proxied is not api._template._transport  # the proxy's transport


def test_a_proxy_that_refuses_is_named_not_the_service_and_not_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It said "Could not connect to api.apimart.ai:443: Connection refused" four times
    # over six seconds: the service looked down when the proxy was.
    monkeypatch.setenv("HTTPS_PROXY", "http://me:pw-secret@127.0.0.1:9")  # nothing there
    slept: list[float] = []
    with (
        Client("https://api.apimart.ai", KEY, sleep=slept.append) as api,
        pytest.raises(ServiceError) as failed,
    ):
        api.balance()
    message = failed.value.message
    assert message.startswith("Could not connect to the proxy HTTPS_PROXY names, 127.0.0.1:9: ")
    assert failed.value.hint == (
        "Check the proxy, or unset HTTPS_PROXY (NO_PROXY lists hosts to reach directly)."
    )
    assert "pw-secret" not in f"{message} {failed.value.hint}"
    assert slept == []  # nothing on this machine will start listening within the retries


@pytest.mark.parametrize(
    ("environment", "url", "expected"),
    [
        (
            {"HTTPS_PROXY": "http://u:p@proxy.example:3128"},
            "https://api.apimart.ai",
            ("HTTPS_PROXY", "proxy.example", 3128),
        ),
        (
            {"https_proxy": "proxy.example"},
            "https://api.apimart.ai",
            ("https_proxy", "proxy.example", 80),
        ),
        ({"ALL_PROXY": "https://[::1]"}, "https://api.apimart.ai", ("ALL_PROXY", "::1", 443)),
        ({"HTTP_PROXY": "http://proxy.example:1"}, "https://api.apimart.ai", None),
        (
            {"HTTPS_PROXY": "http://proxy.example:1", "NO_PROXY": "apimart.ai"},
            "https://api.apimart.ai",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://proxy.example:1", "NO_PROXY": "x.org, *"},
            "https://api.apimart.ai",
            None,
        ),
        (
            {"HTTPS_PROXY": "http://proxy.example:1", "NO_PROXY": "other.ai"},
            "https://api.apimart.ai",
            ("HTTPS_PROXY", "proxy.example", 1),
        ),
    ],
)
def test_the_proxy_named_is_the_one_the_environment_gives_the_base_url(
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    url: str,
    expected: tuple[str, str, int] | None,
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    parts = urlsplit(url)
    assert client_module._environment_proxy(parts.scheme, parts.hostname or "") == expected


# --- time limits: a dripping server cannot hold a request -------------------------------


@pytest.fixture
def dripping() -> Iterator[tuple[Sandbox, str, str]]:
    """A sandbox with a completed task: the sandbox, the task's id and its image's URL."""
    with Sandbox(SandboxConfig(duration=0)) as sandbox:
        with Client(sandbox.base_url, KEY) as api:
            [task_id] = api.submit(build_request("a fox"), IDEMPOTENCY_KEY)
            task = api.get_task(task_id)
        assert task.status == "completed", task
        yield sandbox, task_id, task.images[0].url


# A dripping reply never ends on its own (a megabyte, a byte at a time): that a call
# returns at all shows what cut it, and the error or the retry says which limit did.
# `returns` fails a call that never does, so a limit that is not kept fails the test.


def test_a_dripping_reply_is_cut_off_at_the_request_limit_and_retried(
    monkeypatch: pytest.MonkeyPatch, dripping: tuple[Sandbox, str, str]
) -> None:
    sandbox, task_id, _ = dripping
    monkeypatch.setattr(client_module, "REQUEST_TIME_LIMIT", 1.0)
    retries: list[str] = []
    # The first reply drips; the retry does not.
    sandbox.inject(Fault("drip", path="/v1/tasks/", interval=0.2))
    with Client(sandbox.base_url, KEY, sleep=lambda s: None, on_retry=retries.append) as api:
        task = returns(lambda: api.get_task(task_id))
    assert task.status == "completed"
    assert len(retries) == 1 and "no complete reply within 1 s" in retries[0]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_dripping_headers_are_cut_off_at_the_request_limit_too(
    monkeypatch: pytest.MonkeyPatch,
    dripping: tuple[Sandbox, str, str],
    fox: GenerationRequest,
    method: str,
) -> None:
    """A reply whose headers never end holds no request past REQUEST_TIME_LIMIT: a poll
    is retried; a submission, which the server may have acted on, is an unknown outcome."""
    sandbox, task_id, _ = dripping
    monkeypatch.setattr(client_module, "REQUEST_TIME_LIMIT", 1.0)
    retries: list[str] = []
    sandbox.inject(Fault("drip_headers", method=method, path="/v1/", interval=0.1))
    with Client(sandbox.base_url, KEY, sleep=lambda s: None, on_retry=retries.append) as api:
        if method == "GET":
            assert returns(lambda: api.get_task(task_id)).status == "completed"
            assert len(retries) == 1 and "no complete reply within 1 s" in retries[0]
        else:
            returns(lambda: fails(SubmissionUnknown, api.submit, fox, "another-key"))
            assert retries == []


def test_a_dripping_reply_ends_at_the_deadline_with_a_timeout(
    monkeypatch: pytest.MonkeyPatch, dripping: tuple[Sandbox, str, str]
) -> None:
    sandbox, _, _ = dripping
    monkeypatch.setattr(client_module, "REQUEST_TIME_LIMIT", 3600.0)  # only the deadline
    sandbox.inject(Fault("drip", path="/v1/balance", interval=0.2, times=10))
    before = len(sandbox.requests)
    with Client(sandbox.base_url, KEY, deadline=Deadline.after(1.0)) as api:
        error = returns(lambda: fails(WaitTimeout, api.balance))
    assert error.exit_code == ExitCode.TIMEOUT
    assert [r.path for r in sandbox.requests[before:]] == ["/v1/balance"]  # cut, not retried


def test_a_stalled_transfer_fails_as_transient(
    monkeypatch: pytest.MonkeyPatch, dripping: tuple[Sandbox, str, str]
) -> None:
    sandbox, _, image = dripping
    monkeypatch.setattr(client_module, "STALL_WINDOW", 0.5)
    monkeypatch.setattr(client_module, "STALL_MIN_BYTES_PER_SECOND", 1000)
    sandbox.inject(Fault("drip", path="/f/", interval=0.1))
    with Client(sandbox.base_url, KEY) as api:  # no deadline: only the stall can end it

        def download() -> Transient:
            with pytest.raises(Transient) as caught, api.stream(image) as reply:
                assert reply.status == 200
                for _ in reply.body:
                    pass
            return caught.value

        error = returns(download)
    assert "under 1000 bytes/s" in error.error.message
    assert error.error.exit_code == ExitCode.SERVICE


def test_a_transfer_ends_at_the_deadline_with_a_timeout(
    monkeypatch: pytest.MonkeyPatch, dripping: tuple[Sandbox, str, str]
) -> None:
    sandbox, _, image = dripping
    monkeypatch.setattr(client_module, "STALL_WINDOW", 3600.0)  # only the deadline
    sandbox.inject(Fault("drip", path="/f/", interval=0.1))
    with Client(sandbox.base_url, KEY, deadline=Deadline.after(0.8)) as api:

        def download() -> None:
            with pytest.raises(WaitTimeout), api.stream(image) as reply:
                for _ in reply.body:
                    pass

        returns(download)
