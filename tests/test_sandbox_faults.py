"""The sandbox's fault switches that break the wire or the reply: each does what it says."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apimart_cli.sandbox import Fault, ManualClock, Sandbox, SandboxConfig
from tests.helpers.images import chunks
from tests.helpers.records import plain_client

KEY = "sk-test-secret-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
SUBMIT = "/v1/images/generations"
TASK_ID_RE = re.compile(r"^task_01K[0-9A-HJKMNP-TV-Z]{23}$")
BODY = {"model": "gpt-image-2", "prompt": "a lighthouse", "size": "64x64"}


class Api:
    """A started sandbox on a manual clock, with clients for the API and the image host."""

    def __init__(self, sandbox: Sandbox, clock: ManualClock) -> None:
        self.sandbox, self.clock = sandbox, clock
        self.client = plain_client(base_url=sandbox.base_url, headers=AUTH, timeout=5)
        self.public = plain_client(timeout=5)

    def submit(self, **headers: str) -> str:
        reply = self.client.post(SUBMIT, json=BODY, headers=headers)
        assert reply.status_code == 200, reply.text
        task_id: str = reply.json()["data"][0]["task_id"]
        return task_id

    def image_url(self) -> str:
        data = self.client.get(f"/v1/tasks/{self.submit()}").json()["data"]
        url: str = data["result"]["images"][0]["url"][0]
        return url

    def raw(self, path: str, origin: str = "api", timeout: float = 5) -> socket.socket:
        """A raw connection that has sent `GET path`, for reading a reply byte by byte."""
        base = self.sandbox.base_url if origin == "api" else self.sandbox.image_base_url
        host, port = base.removeprefix("http://").split(":")
        connection = socket.create_connection((host, int(port)), timeout=timeout)
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
        connection.sendall(request.encode())
        return connection


@pytest.fixture
def api() -> Iterator[Api]:
    clock = ManualClock()
    with Sandbox(SandboxConfig(duration=0), clock=clock) as sandbox:
        client = Api(sandbox, clock)
        yield client
        client.client.close()
        client.public.close()


def read_head(connection: socket.socket) -> tuple[dict[str, str], bytes]:
    """The reply's headers (lower-case names) and whatever body bytes came with them."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, "closed before the headers"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, rest


def read_until_closed(connection: socket.socket, body: bytes) -> bytes:
    while chunk := connection.recv(65536):
        body += chunk
    return body


# An API that announces a large body and drips it


@pytest.mark.parametrize("method", ["POST", "GET task", "GET balance"])
def test_drip_announces_a_large_body_and_sends_a_byte_per_interval(api: Api, method: str) -> None:
    if method == "POST":
        api.sandbox.inject(Fault("drip", method="POST", path=SUBMIT, size=2000, interval=1.0))
        reply = api.client.post(SUBMIT, json=BODY)
        task_id = api.sandbox.submissions()[0].task_id
        assert reply.json()["data"][0]["task_id"] == task_id  # the task was created
    else:
        path = f"/v1/tasks/{api.submit()}" if method == "GET task" else "/v1/balance"
        api.sandbox.inject(Fault("drip", path=path, size=2000, interval=1.0))
        started = api.clock.monotonic()
        reply = api.client.get(path)
        # A pause of `interval` between bytes: on a manual clock, 1999 s pass at once.
        assert api.clock.monotonic() - started == pytest.approx(1999)

    assert reply.status_code == 200
    assert reply.headers["Content-Length"] == "2000"
    assert len(reply.content) == 2000
    assert reply.content.endswith(b"   ")  # the real reply, padded to the announced size
    json.loads(reply.content)


def balance_on_a_socket(sandbox: Sandbox) -> socket.socket:
    """A balance request on a plain socket: its reply is read as it comes, byte by byte."""
    host, port = sandbox.base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=5)
    request = f"GET /v1/balance HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\r\n"
    connection.sendall(request.encode())
    return connection


def test_drip_in_real_time_sends_few_bytes_and_ends_when_the_sandbox_stops() -> None:
    with Sandbox(SandboxConfig(duration=0)) as sandbox:
        sandbox.inject(Fault("drip", path="/v1/balance", interval=0.2))
        connection = balance_on_a_socket(sandbox)
        headers, body = read_head(connection)
        assert headers["content-length"] == str(1024 * 1024)
        body += connection.recv(10)
        assert 1 <= len(body) <= 3  # a byte now, the next ones 0.2 s apart
    # stop() ended the drip: the connection closes instead of dripping on for days.
    connection.settimeout(2)
    assert len(read_until_closed(connection, b"")) < 20
    connection.close()


def test_drip_headers_never_ends_its_headers_until_the_sandbox_stops() -> None:
    with Sandbox(SandboxConfig(duration=0)) as sandbox:
        sandbox.inject(Fault("drip_headers", path="/v1/balance", interval=0.05))
        connection = balance_on_a_socket(sandbox)
        data = b""
        while len(data) < 40:  # the status line, then a header a byte at a time
            data += connection.recv(100)
        assert data.startswith(b"HTTP/1.1 200 OK\r\nX-Padding: aaa")
        assert b"\r\n\r\n" not in data
    connection.settimeout(2)
    assert b"\r\n\r\n" not in read_until_closed(connection, data)  # closed, never ended
    connection.close()


def test_heal_forgets_the_faults_not_yet_spent(api: Api) -> None:
    api.sandbox.inject(Fault("status", path="/v1/balance", status=503, times=100))
    assert api.client.get("/v1/balance").status_code == 503
    api.sandbox.heal()
    assert api.client.get("/v1/balance").status_code == 200


# An image host that sends slowly, stalls, or cuts short


def test_throttle_sends_the_image_at_its_rate(api: Api) -> None:
    url = api.image_url()
    size = len(api.public.get(url).content)
    api.sandbox.inject(Fault("throttle", path="/f/", rate=1000))
    started = api.clock.monotonic()

    reply = api.public.get(url)

    assert len(reply.content) == size
    assert api.clock.monotonic() - started == pytest.approx(size / 1000, abs=0.2)


def test_stall_sends_part_then_holds_the_connection_open(api: Api) -> None:
    url = api.image_url()
    full = api.public.get(url).content
    api.sandbox.inject(Fault("stall", path="/f/", cut=0.25))
    connection = api.raw(url.removeprefix(api.sandbox.image_base_url), "image", timeout=0.3)

    headers, body = read_head(connection)
    while len(body) < len(full) // 4:
        body += connection.recv(65536)

    assert headers["content-length"] == str(len(full))
    assert body == full[: len(full) // 4]
    with pytest.raises(TimeoutError):  # nothing more, and not closed either
        connection.recv(1)
    api.sandbox.stop()
    connection.settimeout(2)
    assert connection.recv(1) == b""  # stopping the sandbox hangs up on it
    connection.close()


def test_stall_with_a_delay_closes_after_it(api: Api) -> None:
    url = api.image_url()
    full = api.public.get(url).content
    api.sandbox.inject(Fault("stall", path="/f/", delay=30))
    started = api.clock.monotonic()

    with pytest.raises(httpx.RemoteProtocolError):  # the announced length never came
        api.public.get(url)
    assert api.clock.monotonic() - started == pytest.approx(30)
    assert api.public.get(url).content == full


@pytest.mark.parametrize("cut", [0.5, 1.0])
def test_unsized_image_has_no_length_and_ends_where_the_host_hangs_up(api: Api, cut: float) -> None:
    url = api.image_url()
    full = api.public.get(url).content
    api.sandbox.inject(Fault("unsized", path="/f/", cut=cut))

    reply = api.public.get(url)  # a body without a length ends at the close: no error

    assert reply.status_code == 200
    assert "content-length" not in reply.headers
    assert reply.content == full[: int(len(full) * cut)]
    assert (b"IEND" in reply.content) == (cut == 1.0)


def test_truncate_announces_the_length_and_sends_its_cut(api: Api) -> None:
    url = api.image_url()
    api.sandbox.inject(Fault("truncate", path="/f/", cut=0.1))

    with pytest.raises(httpx.RemoteProtocolError):
        api.public.get(url)


def test_gzip_image_is_encoded_on_the_wire(api: Api) -> None:
    url = api.image_url()
    full = api.public.get(url).content
    api.sandbox.inject(Fault("gzip", path="/f/"))

    reply = api.public.get(url)

    assert reply.headers["Content-Encoding"] == "gzip"
    assert reply.content == full  # httpx decodes it
    assert int(reply.headers["Content-Length"]) == reply.num_bytes_downloaded != len(full)


def test_garbage_after_a_png_signature(api: Api) -> None:
    url = api.image_url()
    full = api.public.get(url).content
    api.sandbox.inject(Fault("garbage", path="/f/"))

    reply = api.public.get(url)

    assert (reply.status_code, reply.headers["Content-Type"]) == (200, "image/png")
    assert reply.content[:8] == full[:8]
    assert len(reply.content) == len(full)
    assert reply.content[12:16] != b"IHDR"


# An image that changes between requests, and the validators that tell


def test_image_has_validators_and_if_range_guards_a_resume(api: Api) -> None:
    url = api.image_url()
    first = api.public.get(url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]

    for validator in (etag, modified):
        same = api.public.get(url, headers={"Range": "bytes=10-", "If-Range": validator})
        assert (same.status_code, same.content) == (206, first.content[10:])
    stale = api.public.get(url, headers={"Range": "bytes=10-", "If-Range": '"another"'})
    assert (stale.status_code, stale.content) == (200, first.content)


def test_swap_changes_the_image_for_good(api: Api) -> None:
    url = api.image_url()
    before = api.public.get(url)
    api.sandbox.inject(Fault("swap", path="/f/"))

    after = api.public.get(url)
    resumed = api.public.get(
        url, headers={"Range": "bytes=100-", "If-Range": before.headers["ETag"]}
    )
    blind = api.public.get(url, headers={"Range": "bytes=100-"})

    assert after.content != before.content
    assert after.headers["ETag"] != before.headers["ETag"]
    assert after.headers["Last-Modified"] != before.headers["Last-Modified"]
    assert chunks(after.content)[-1][0] == b"IEND"
    assert (resumed.status_code, resumed.content) == (200, after.content)  # If-Range protects
    stitched = before.content[:100] + blind.content  # a resume without it stitches two images
    assert blind.status_code == 206 and stitched not in (before.content, after.content)
    assert api.public.get(url).content == after.content


# Replies a parser or a careless client chokes on


def test_nested_reply_is_deep_json(api: Api) -> None:
    api.sandbox.inject(Fault("nested", method="POST", path=SUBMIT))

    reply = api.client.post(SUBMIT, json=BODY)

    assert reply.status_code == 200
    assert reply.content.startswith(b'{"code": 200, "data": [[[[')
    assert reply.content.count(b"[") == 100_000
    with pytest.raises(RecursionError):
        json.loads(reply.content)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{id}\n{id}", "{id}\n{id}"),
        ("../{id}", "../{id}"),
        ("{key}", KEY),
    ],
)
def test_task_id_fault_puts_a_hostile_id_in_the_submission_reply(
    api: Api, template: str, expected: str
) -> None:
    api.sandbox.inject(Fault("task_id", method="POST", path=SUBMIT, task_id=template))

    reply = api.client.post(SUBMIT, json=BODY)

    (created,) = api.sandbox.submissions()
    assert created.task_id is not None
    assert reply.json()["data"][0]["task_id"] == expected.replace("{id}", created.task_id)
    assert api.client.get(f"/v1/tasks/{created.task_id}").json()["data"]["status"] == "completed"


def test_task_id_fault_in_the_object_shaped_reply(api: Api) -> None:
    api.sandbox.inject(Fault("task_id", method="POST", path=SUBMIT, task_id="../{id}"))

    reply = api.client.post(SUBMIT, json=BODY, headers={"X-APIMart-Response-Version": "2026-07-27"})

    assert reply.json()["data"]["id"] == "../" + api.sandbox.submissions()[0].task_id


def test_task_reply_with_another_id_than_the_polled_one(api: Api) -> None:
    task_id = api.submit()
    api.sandbox.inject(Fault("task_id", path="/v1/tasks/"))

    data = api.client.get(f"/v1/tasks/{task_id}").json()["data"]

    assert data["id"] != task_id
    assert TASK_ID_RE.match(data["id"])
    assert data["status"] == "completed"
    assert api.client.get(f"/v1/tasks/{task_id}").json()["data"]["id"] == task_id  # one-shot


# The key echoed back (the sandbox keeps it nowhere it shows)


def test_echo_key_fault_puts_the_key_in_an_error_message(api: Api) -> None:
    api.sandbox.inject(Fault("echo_key", method="POST", path=SUBMIT, status=400))

    reply = api.client.post(SUBMIT, json=BODY)

    assert reply.status_code == 400
    assert KEY in reply.json()["error"]["message"]
    assert api.sandbox.submissions() == []


def test_echo_key_word_fails_the_task_with_the_key_in_its_reason(api: Api) -> None:
    reply = api.client.post(SUBMIT, json={**BODY, "prompt": "a fox sandbox:echo-key"})
    task_id = reply.json()["data"][0]["task_id"]

    data = api.client.get(f"/v1/tasks/{task_id}").json()["data"]

    assert data["status"] == "failed"
    assert KEY in data["error"]["message"]
    recorded = api.public.get(f"{api.sandbox.base_url}/__sandbox/requests").text
    assert KEY not in recorded


def test_after_create_fault_on_the_object_shape_still_creates_the_task(api: Api) -> None:
    api.sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=500))

    reply = api.client.post(SUBMIT, json=BODY, headers={"X-APIMart-Response-Version": "2026-07-27"})

    assert reply.status_code == 500
    (created,) = api.sandbox.submissions()
    assert api.client.get(f"/v1/tasks/{created.task_id}").json()["data"]["status"] == "completed"


# From another process: every fault through the admin endpoint


@pytest.mark.parametrize(
    ("fault", "check"),
    [
        ({"kind": "drip", "path": "/v1/balance", "size": 128, "interval": 0}, "drip"),
        ({"kind": "nested", "path": "/v1/balance", "depth": 50}, "nested"),
        ({"kind": "task_id", "path": "/v1/tasks/", "task_id": "{key}"}, "task_id"),
        ({"kind": "echo_key", "path": "/v1/balance", "status": 401}, "echo_key"),
    ],
)
def test_admin_endpoint_takes_the_new_faults(api: Api, fault: dict[str, Any], check: str) -> None:
    task_id = api.submit()
    added = api.public.post(f"{api.sandbox.base_url}/__sandbox/faults", json=fault)
    assert added.status_code == 200, added.text
    assert KEY not in added.text

    path = f"/v1/tasks/{task_id}" if check == "task_id" else "/v1/balance"
    reply = api.client.get(path)

    if check == "drip":
        assert len(reply.content) == 128 and reply.json()["success"] is True
    elif check == "nested":
        assert reply.content.count(b"[") == 50
    elif check == "task_id":
        assert reply.json()["data"]["id"] == KEY
    else:
        assert reply.status_code == 401 and KEY in reply.text


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "drip", "interval": -1},
        {"kind": "truncate", "cut": 1.5},
        {"kind": "throttle", "rate": 0},
        {"kind": "nested", "depth": "deep"},
        {"kind": "stall", "delay": "long"},
    ],
)
def test_admin_endpoint_refuses_bad_fault_fields(api: Api, fault: dict[str, Any]) -> None:
    reply = api.public.post(f"{api.sandbox.base_url}/__sandbox/faults", json=fault)

    assert reply.status_code == 400
    assert "fault" in reply.json()["error"]["message"]
