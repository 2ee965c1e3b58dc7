"""The sandbox speaks the API's shapes, makes real PNGs, and misbehaves on request."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from apimart_cli.sandbox import (
    Clock,
    Fault,
    ManualClock,
    Sandbox,
    SandboxConfig,
    encode_png,
    gradient_png,
)
from tests.helpers.images import chunks
from tests.helpers.records import plain_client
from tests.helpers.waiting import returns, wait_until

KEY = "sk-test-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
SUBMIT = "/v1/images/generations"
TASK_ID_RE = re.compile(r"^task_01K[0-9A-HJKMNP-TV-Z]{23}$")


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-image-2", "prompt": "a lighthouse at dawn", **fields}


def read_png(data: bytes) -> tuple[int, int]:
    """Check a PNG's signature, chunk CRCs and pixel data; return its width and height."""
    found = dict(chunks(data))
    width, height = struct.unpack(">II", found[b"IHDR"][:8])
    assert len(zlib.decompress(found[b"IDAT"])) == height * (1 + 3 * width)
    assert b"IEND" in found
    return width, height


def log_lines(log: io.StringIO, count: int) -> list[str]:
    """The log's lines once it has `count` (a line is written just after its reply is sent)."""
    wait_until(lambda: len(log.getvalue().splitlines()) >= count, what=f"{count} log lines")
    return log.getvalue().splitlines()


class Api:
    """A started sandbox, a client with the key for it, and one without (`public`)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.client = plain_client(base_url=sandbox.base_url, headers=AUTH, timeout=5)
        self.public = plain_client(timeout=5)

    def close(self) -> None:
        self.client.close()
        self.public.close()
        self.sandbox.stop()

    def submit(self, **fields: Any) -> str:
        reply = self.client.post(SUBMIT, json=body(**fields))
        assert reply.status_code == 200, reply.text
        task_id: str = reply.json()["data"][0]["task_id"]
        return task_id

    def task(self, task_id: str) -> dict[str, Any]:
        reply = self.client.get(f"/v1/tasks/{task_id}")
        assert reply.status_code == 200, reply.text
        data: dict[str, Any] = reply.json()["data"]
        return data

    def image(self, task_id: str, index: int = 0, **kwargs: Any) -> httpx.Response:
        url = self.task(task_id)["result"]["images"][index]["url"][0]
        return self.public.get(url, **kwargs)


@pytest.fixture
def make_api() -> Iterator[Callable[..., Api]]:
    """Start sandboxes (default: tasks complete at once) and stop them all afterwards."""
    started: list[Api] = []

    def make(log: io.StringIO | None = None, clock: Clock | None = None, **config: Any) -> Api:
        config.setdefault("duration", 0.0)
        started.append(Api(Sandbox(SandboxConfig(**config), log=log, clock=clock).start()))
        return started[-1]

    yield make
    for api in started:
        api.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


# Tasks


def test_task_goes_submitted_then_processing_then_completed(make_api: Callable[..., Api]) -> None:
    clock = ManualClock()
    api = make_api(duration=50.0, clock=clock)
    task_id = api.submit(n=2)
    assert TASK_ID_RE.match(task_id)

    first = api.task(task_id)
    assert (first["status"], first["progress"]) == ("submitted", 0)
    clock.advance(15)
    middle = api.task(task_id)
    assert (middle["status"], middle["progress"]) == ("processing", 30)
    clock.advance(34.9)
    assert api.task(task_id)["status"] == "processing"
    clock.advance(0.1)
    done = api.task(task_id)

    assert done["status"] == "completed"
    assert done["progress"] == 100
    assert (done["created"], done["completed"]) == (int(clock.time()) - 50, int(clock.time()))
    assert done["actual_time"] == 50
    assert {"cost", "credits_cost"} <= set(done)
    images = done["result"]["images"]
    assert [image["url"] for image in images] == [
        [f"{api.sandbox.image_base_url}/f/image/{task_id}_{i}.png"] for i in range(2)
    ]
    assert all(image["expires_at"] == done["completed"] + 86400 for image in images)


@pytest.mark.parametrize(
    ("prompt", "status", "message"),
    [
        ("please sandbox:fail now", "failed", "sandbox:fail"),
        ("please sandbox:cancel now", "cancelled", "cancelled"),
    ],
)
def test_trigger_words_end_the_task(api: Api, prompt: str, status: str, message: str) -> None:
    task = api.task(api.submit(prompt=prompt))

    assert task["status"] == status
    assert message in task["error"]["message"]
    assert "result" not in task
    image_url = f"{api.sandbox.image_base_url}/f/image/{task['id']}_0.png"
    assert api.public.get(image_url).status_code == 404


def test_failure_rate_fails_tasks(make_api: Callable[..., Api]) -> None:
    api = make_api(failure_rate=1.0)
    assert api.task(api.submit())["status"] == "failed"


def test_unknown_task_is_404_with_an_error_body(api: Api) -> None:
    reply = api.client.get("/v1/tasks/task_01KNOSUCHTASK")

    assert reply.status_code == 404
    assert reply.json() == {
        "error": {"code": 404, "message": "task not found", "type": "not_found_error"}
    }


def test_unknown_path_is_404(api: Api) -> None:
    assert api.client.get("/v1/nothing").status_code == 404


def test_language_parameter_is_accepted(api: Api) -> None:
    task_id = api.submit()
    assert api.client.get(f"/v1/tasks/{task_id}", params={"language": "zh"}).status_code == 200


def test_balance_counts_completed_costs(api: Api) -> None:
    for path in ("/v1/balance", "/v1/user/balance"):
        assert api.client.get(path).json() == {
            "success": True,
            "remain_balance": 10.5,
            "used_balance": 0,
            "unlimited_quota": False,
        }
    cost = api.task(api.submit(n=3))["cost"]
    assert api.client.get("/v1/balance").json()["used_balance"] == pytest.approx(cost)


# Submissions


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"n": "2"}, "n must be an integer"),
        ({"n": True}, "n must be an integer"),
        ({"n": 0}, "n must be an integer"),
        ({"n": 11}, "n must be an integer"),
        ({"n": 1.5}, "n must be an integer"),
        ({"size": "17:9"}, "invalid size"),
        ({"size": "4000x100"}, "invalid size"),
        ({"size": "0x100"}, "invalid size"),
        ({"size": "AUTO"}, "invalid size"),
        ({"resolution": "8k"}, "resolution must be one of"),
        ({"model": "dall-e-3"}, "model must be"),
        ({"prompt": ""}, "prompt is required"),
        ({"prompt": 5}, "prompt is required"),
        ({"image_urls": ["https://x.test/a.png"] * 17}, "image_urls exceeds max 16"),
        ({"image_urls": "https://x.test/a.png"}, "image_urls must be a list"),
        ({"image_urls": ["ftp://x.test/a.png"]}, "image_urls[0] must be"),
        ({"image_urls": ["data:text/plain;base64,aGk="]}, "image_urls[0] must be"),
        ({"official_fallback": "yes"}, "official_fallback must be a boolean"),
    ],
)
def test_invalid_submission_is_400(api: Api, fields: dict[str, Any], message: str) -> None:
    reply = api.client.post(SUBMIT, json=body(**fields))

    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["code"], error["type"]) == (400, "invalid_request_error")
    assert message in error["message"]
    assert api.sandbox.submissions() == []


def test_body_must_be_a_json_object(api: Api) -> None:
    assert api.client.post(SUBMIT, json=[body()]).status_code == 400
    assert api.client.post(SUBMIT, content=b"{not json").status_code == 400


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Basic abc", "Token abc"])
def test_api_needs_a_bearer_key(api: Api, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with plain_client(base_url=api.sandbox.base_url, headers=headers) as client:
        for reply in (client.post(SUBMIT, json=body()), client.get("/v1/balance")):
            assert reply.status_code == 401
            assert reply.json()["error"]["type"] == "authentication_error"


def test_accepted_submission_is_one_task_whatever_n(api: Api) -> None:
    fields = {
        "n": 10,
        "size": "1881x836",
        "resolution": "4k",
        "official_fallback": True,
        "image_urls": ["https://x.test/a.png", "data:image/png;base64,AAAA"],
    }
    reply = api.client.post(SUBMIT, json=body(**fields))

    assert reply.status_code == 200
    assert reply.json() == {
        "code": 200,
        "request_id": reply.json()["request_id"],
        "data": [{"status": "submitted", "task_id": api.sandbox.submissions()[0].task_id}],
    }
    assert len(api.task(reply.json()["data"][0]["task_id"])["result"]["images"]) == 10


def test_chunked_request_body_is_read(api: Api) -> None:
    content = iter([json.dumps(body()).encode()])
    reply = api.client.post(SUBMIT, content=content)

    assert reply.status_code == 200, reply.text
    assert api.sandbox.requests[0].headers["transfer-encoding"] == "chunked"


def test_idempotency_key_returns_the_same_task(api: Api) -> None:
    headers = {"Idempotency-Key": "4f1c2b1e-key"}
    first = api.client.post(SUBMIT, json=body(), headers=headers).json()
    again = api.client.post(SUBMIT, json=body(), headers=headers).json()
    other = api.client.post(SUBMIT, json=body(), headers={"Idempotency-Key": "other"}).json()

    assert first == again
    assert other != first
    assert len(api.sandbox.submissions()) == 2


def test_submit_rate_answers_429_with_retry_after(make_api: Callable[..., Api]) -> None:
    api = make_api(submit_rate=1.0)
    assert api.client.post(SUBMIT, json=body()).status_code == 200

    reply = api.client.post(SUBMIT, json=body())

    assert reply.status_code == 429
    assert reply.headers["Retry-After"] == "1"
    assert reply.json()["error"]["type"] == "rate_limit_error"
    assert len(api.sandbox.submissions()) == 1


# Images


@pytest.mark.parametrize(
    ("fields", "pixels"),
    [
        ({"size": "16:9", "resolution": "2k"}, (2048, 1152)),
        ({"size": "9:21", "resolution": "1k"}, (864, 2016)),
        ({"size": "1881x836"}, (1881, 836)),
        ({"size": "auto"}, (1024, 1024)),
        ({"resolution": "4k"}, (2880, 2880)),
        ({"image_urls": ["https://x.test/a.png"]}, (1024, 1024)),
    ],
)
def test_image_is_a_png_of_the_tables_size(
    api: Api, fields: dict[str, Any], pixels: tuple[int, int]
) -> None:
    reply = api.image(api.submit(**fields))

    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "image/png"
    assert int(reply.headers["Content-Length"]) == len(reply.content)
    assert read_png(reply.content) == pixels


def test_reference_data_uri_without_size_sets_the_pixels(api: Api) -> None:
    reference = encode_png(300, 200, b"\x00" + bytes(900) * 200)
    uri = "data:image/png;base64," + base64.b64encode(reference).decode()

    assert read_png(api.image(api.submit(image_urls=[uri])).content) == (300, 200)


def test_images_differ_by_prompt_and_index(api: Api) -> None:
    lighthouse = api.submit(prompt="a lighthouse", size="64x64", n=2)
    forest = api.submit(prompt="a forest", size="64x64")

    images = {api.image(lighthouse, 0).content, api.image(lighthouse, 1).content}
    images.add(api.image(forest).content)
    assert len(images) == 3


def test_large_image_is_made_row_by_row_not_pixel_by_pixel() -> None:
    """Quick to make: one row is worked out in Python and repeated; no Python runs per pixel."""
    steps = 0

    def count(frame: Any, event: str, arg: Any) -> Any:
        nonlocal steps
        steps += 1
        return count

    sys.settrace(count)
    try:
        data = gradient_png(3840, 2160, "a wide view", 0)
    finally:
        sys.settrace(None)

    assert steps < 3840 * 2160 // 10  # a loop over the pixels takes a step or more each
    assert read_png(data) == (3840, 2160)


def test_noise_images_are_incompressible(make_api: Callable[..., Api]) -> None:
    api = make_api(noise=True)
    data = api.image(api.submit(size="64x64")).content

    assert read_png(data) == (64, 64)
    assert len(data) > 64 * 64 * 3


@pytest.mark.parametrize(
    ("range_header", "status", "content_range", "part"),
    [
        ("bytes=100-", 206, "bytes 100-{last}/{total}", slice(100, None)),
        ("bytes=10-19", 206, "bytes 10-19/{total}", slice(10, 20)),
        ("bytes=999999999-", 416, "bytes */{total}", None),
    ],
)
def test_range_request(
    api: Api, range_header: str, status: int, content_range: str, part: slice | None
) -> None:
    task_id = api.submit(size="64x64")
    full = api.image(task_id).content

    reply = api.image(task_id, headers={"Range": range_header})

    assert reply.status_code == status
    assert reply.headers["Content-Range"] == content_range.format(
        last=len(full) - 1, total=len(full)
    )
    if part is not None:
        assert reply.content == full[part]


def test_expired_image_is_410(make_api: Callable[..., Api]) -> None:
    clock = ManualClock()
    api = make_api(clock=clock)
    task_id = api.submit(size="64x64")
    url = api.task(task_id)["result"]["images"][0]["url"][0]
    clock.advance(86399)
    assert api.public.get(url).status_code == 200
    clock.advance(1)

    reply = api.public.get(url)

    assert reply.status_code == 410
    assert reply.json()["error"]["code"] == 410


def test_image_host_needs_no_key_and_requests_record_it(api: Api) -> None:
    task_id = api.submit(size="64x64")
    assert api.image(task_id).status_code == 200
    api.image(task_id, headers=AUTH)

    by_origin = [(r.origin, r.method, "authorization" in r.headers) for r in api.sandbox.requests]
    assert ("image", "GET", False) in by_origin
    assert ("image", "GET", True) in by_origin
    assert by_origin[0] == ("api", "POST", True)
    assert api.sandbox.requests[0].json == body(size="64x64")


def test_download_rate_throttles(make_api: Callable[..., Api]) -> None:
    clock = ManualClock()
    api = make_api(noise=True, download_rate=100_000, clock=clock)
    task_id = api.submit(size="100x100")  # about 30 kB
    url = api.task(task_id)["result"]["images"][0]["url"][0]
    started = clock.monotonic()

    reply = api.public.get(url)

    assert reply.status_code == 200
    sending = clock.monotonic() - started  # on the sandbox's clock, not the machine's
    expected = len(reply.content) / 100_000
    # The last chunk goes out when its last byte is due: the transfer ends at
    # len / rate, never before (it did, by a part of a chunk, and a test read it so).
    assert sending == pytest.approx(expected), (len(reply.content), sending)


def test_latency_delays_api_replies(make_api: Callable[..., Api]) -> None:
    clock = ManualClock()
    api = make_api(latency=0.2, clock=clock)
    started = clock.monotonic()
    api.client.get("/v1/balance")
    assert clock.monotonic() - started == pytest.approx(0.2)


# Faults


def test_status_fault_is_one_shot_with_retry_after(api: Api) -> None:
    task_id = api.submit()
    api.sandbox.inject(Fault("status", path="/v1/tasks/", status=503, retry_after="2"))

    reply = api.client.get(f"/v1/tasks/{task_id}")

    assert reply.status_code == 503
    assert reply.headers["Retry-After"] == "2"
    assert reply.json()["error"]["type"] == "service_unavailable"
    assert api.client.get(f"/v1/tasks/{task_id}").status_code == 200


def test_status_fault_counts_its_times(api: Api) -> None:
    api.sandbox.inject(Fault("status", path="/v1/balance", status=500, times=2))

    codes = [api.client.get("/v1/balance").status_code for _ in range(3)]

    assert codes == [500, 500, 200]


def test_status_fault_with_a_gateway_page(api: Api) -> None:
    api.sandbox.inject(Fault("status", status=502, html=True))

    reply = api.client.get("/v1/balance")

    assert reply.status_code == 502
    assert reply.headers["Content-Type"] == "text/html"
    assert "502 Bad Gateway" in reply.text


def test_fault_matches_method_and_path(api: Api) -> None:
    api.sandbox.inject(Fault("status", method="POST", path=SUBMIT, status=402))

    assert api.client.get("/v1/balance").status_code == 200
    reply = api.client.post(SUBMIT, json=body())
    assert (reply.status_code, reply.json()["error"]["type"]) == (402, "payment_required")
    assert api.sandbox.submissions() == []


@pytest.mark.parametrize(
    ("fault", "content_type"),
    [
        (Fault("malformed"), "application/json"),
        (Fault("html"), "text/html"),
    ],
)
def test_fault_answers_200_with_a_body_that_is_not_json(
    api: Api, fault: Fault, content_type: str
) -> None:
    api.sandbox.inject(fault)

    reply = api.client.get("/v1/balance")

    assert (reply.status_code, reply.headers["Content-Type"]) == (200, content_type)
    with pytest.raises(ValueError):
        json.loads(reply.content)


def test_drop_fault_closes_without_a_reply(api: Api) -> None:
    api.sandbox.inject(Fault("drop", path="/v1/balance"))

    with pytest.raises(httpx.TransportError):
        api.client.get("/v1/balance")
    assert api.client.get("/v1/balance").status_code == 200


def test_slow_fault_delays_then_answers(make_api: Callable[..., Api]) -> None:
    clock = ManualClock()
    api = make_api(clock=clock)
    api.sandbox.inject(Fault("slow", delay=0.2))
    started = clock.monotonic()

    assert api.client.get("/v1/balance").status_code == 200
    assert clock.monotonic() - started == pytest.approx(0.2)


def test_truncate_fault_sends_half_the_image(api: Api) -> None:
    task_id = api.submit(size="64x64")
    url = api.task(task_id)["result"]["images"][0]["url"][0]
    api.sandbox.inject(Fault("truncate", path="/f/"))

    with pytest.raises(httpx.RemoteProtocolError):
        api.public.get(url)
    assert api.public.get(url).status_code == 200


def test_after_create_fault_creates_the_task_but_fails_the_reply(api: Api) -> None:
    api.sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=500))

    reply = api.client.post(SUBMIT, json=body())

    assert reply.status_code == 500
    assert reply.json()["error"]["type"] == "server_error"
    (created,) = api.sandbox.submissions()
    assert created.task_id is not None
    assert api.task(created.task_id)["status"] == "completed"


def test_content_type_fault_on_the_image_host(api: Api) -> None:
    task_id = api.submit(size="64x64")
    api.sandbox.inject(Fault("content_type", path="/f/", content_type="text/plain"))

    reply = api.image(task_id)

    assert (reply.status_code, reply.headers["Content-Type"]) == (200, "text/plain")
    assert reply.text.startswith("<html>")


# Admin endpoints, for a sandbox in another process


def test_admin_endpoint_injects_a_fault(api: Api) -> None:
    fault = {"kind": "status", "path": "/v1/balance", "status": 503}
    assert (
        api.public.post(f"{api.sandbox.base_url}/__sandbox/faults", json=fault).status_code == 200
    )

    assert api.client.get("/v1/balance").status_code == 503


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "explode"},
        {"kind": "drop", "colour": "red"},
        {"kind": "drop", "times": "2"},
        {},
        [1],
    ],
)
def test_admin_endpoint_refuses_a_bad_fault(api: Api, fault: Any) -> None:
    reply = api.public.post(f"{api.sandbox.base_url}/__sandbox/faults", json=fault)

    assert reply.status_code == 400


def test_admin_endpoint_lists_requests(api: Api) -> None:
    api.submit()

    recorded = api.public.get(f"{api.sandbox.base_url}/__sandbox/requests").json()["requests"]

    assert len(recorded) == 1
    assert recorded[0]["method"] == "POST"
    assert recorded[0]["headers"]["authorization"] == "Bearer [hidden]"  # never the key itself
    assert KEY not in str(recorded)
    assert recorded[0]["json"] == body()
    assert recorded[0]["task_id"] == api.sandbox.submissions()[0].task_id


def test_fault_kind_is_checked_in_process_too() -> None:
    with pytest.raises(ValueError, match="fault kind"):
        Fault("explode")


# Lifecycle and logging


def test_log_has_a_line_per_request_and_never_the_key(make_api: Callable[..., Api]) -> None:
    log = io.StringIO()
    api = make_api(log=log)
    api.submit()
    api.client.get("/v1/tasks/task_01KMISSING")

    lines = log_lines(log, 2)
    assert len(lines) == 2
    assert re.match(r"^api\s+POST /v1/images/generations 200 [\d.]+ms$", lines[0])
    assert " 404 " in lines[1]
    assert KEY not in log.getvalue()


def test_log_notes_a_key_sent_to_the_image_host(make_api: Callable[..., Api]) -> None:
    log = io.StringIO()
    api = make_api(log=log)
    api.image(api.submit(size="8x8"), headers=AUTH)

    (image_line,) = [line for line in log_lines(log, 3) if line.startswith("image")]
    assert image_line.endswith("(an Authorization header was sent to the image host)")
    assert KEY not in log.getvalue()


def test_serve_forever_returns_once_stopped() -> None:
    sandbox = Sandbox()
    server = threading.Thread(target=sandbox.serve_forever)
    server.start()
    wait_until(lambda: sandbox.base_url, what="the sandbox listening")
    sandbox.stop()
    returns(server.join)

    assert not server.is_alive()


def test_stop_closes_idle_keep_alive_connections_promptly() -> None:
    sandbox = Sandbox().start()
    with plain_client(base_url=sandbox.base_url, headers=AUTH) as client:
        assert client.get("/v1/balance").status_code == 200  # leaves a connection open
        # The client holds its connection until the block ends: a stop that waited for
        # it would never return.
        returns(sandbox.stop)
        host, port = sandbox.base_url.removeprefix("http://").split(":")
        with pytest.raises(OSError):
            socket.create_connection((host, int(port)), timeout=1).close()


def test_a_burst_of_new_connections_is_served() -> None:
    """100 clients connecting at once: the listen backlog must not reset any of them."""
    from concurrent.futures import ThreadPoolExecutor

    with Sandbox(SandboxConfig(duration=1, latency=0.2)) as server:
        host, port = server.base_url.removeprefix("http://").split(":")

        def submit(i: int) -> int:
            # A new connection each (http.client: an httpx client would spend more CPU
            # on its TLS set-up than the sandbox does on the request).
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            try:  # a loaded machine is slow; what must not happen is a reset
                connection.request(
                    "POST",
                    "/v1/images/generations",
                    body=json.dumps({"model": "gpt-image-2", "prompt": f"burst {i}"}),
                    headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
                )
                return connection.getresponse().status
            finally:
                connection.close()

        with ThreadPoolExecutor(100) as pool:
            assert set(pool.map(submit, range(100))) == {200}
