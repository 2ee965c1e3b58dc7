"""A key bound to its body: every resend sends exactly it, and a key that may have made a
task is let go only on a task id or a refusal that proves nothing was made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.cache import Cache
from apimart_cli.client import Client
from apimart_cli.errors import ExitCode, SubmissionUnknown, TaskError, UsageError
from apimart_cli.history import History
from apimart_cli.payload import build_request
from apimart_cli.references import ReferenceSender
from apimart_cli.submission import request_from_body, resend, stored_body, submit
from tests.helpers.images import png_head

KEY = "sk-live-SUBMIT0123456789abcdef"
BASE = "https://api.test"
SUBMIT_URL = f"{BASE}/v1/images/generations"
UPLOAD_URL = f"{BASE}/v1/uploads/images"
PNG_HEAD = png_head(1, 1)


def image(path: Path, fill: bytes = b"x", size: int = 300) -> Path:
    path.write_bytes(PNG_HEAD + fill * (size - len(PNG_HEAD)))
    return path


def accepted(task_id: str = "task_1") -> dict[str, Any]:
    return {"code": 200, "data": [{"status": "submitted", "task_id": task_id}]}


def refused(status: int, message: str) -> dict[str, Any]:
    return {"status_code": status, "json": {"error": {"code": status, "message": message}}}


def sent(httpx_mock: HTTPXMock) -> list[tuple[str, bytes]]:
    """Each submission's idempotency key and its exact body, in order."""
    return [
        (request.headers["idempotency-key"], request.content)
        for request in httpx_mock.get_requests(url=SUBMIT_URL)
    ]


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(BASE, KEY, sleep=lambda _: None) as api:
        yield api


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    with History.open(tmp_path / "data" / "history.sqlite3") as log:
        yield log


def test_a_stored_body_rebuilds_exactly_the_bytes_first_sent(tmp_path: Path) -> None:
    photo = image(tmp_path / "photo.png")
    request = build_request(
        "a fox — in the snow",
        model="gpt-image-2",
        size="16:9",
        resolution="2k",
        n=2,
        images=[str(photo), "https://cdn.test/a.png", "data:image/png;base64,iVBORw0KGgo="],
        official_fallback=True,
        params={"seed": 42, "style": {"ü": [1.5, None]}},
    )
    stored = json.loads(json.dumps(stored_body(request)))  # as the history keeps it
    again = request_from_body(stored, "k1")
    assert b"".join(again.iter_body()) == b"".join(request.iter_body())
    assert again.body_length() == request.body_length()
    assert stored["image_urls"][0]["file"] == str(photo.absolute())


def test_a_reference_file_changed_since_is_refused_and_nothing_sent(tmp_path: Path) -> None:
    photo = image(tmp_path / "photo.png")
    stored = stored_body(build_request("a fox", images=[str(photo)]))
    image(photo, fill=b"y")  # same size, other content
    with pytest.raises(UsageError, match="changed since idempotency key k1") as caught:
        request_from_body(stored, "k1")
    assert "apimart resend k1" in str(caught.value.hint)
    photo.unlink()
    with pytest.raises(UsageError, match="changed since"):
        request_from_body(stored, "k1")


@pytest.mark.parametrize("status", [409, 422])
def test_409_and_422_keep_the_key_and_its_body_as_unknown(
    status: int, client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=SUBMIT_URL, **refused(status, "idempotency conflict"))
    with pytest.raises(SubmissionUnknown) as caught:
        submit(client, history, build_request("a fox"), idempotency_key="k-409")
    assert caught.value.exit_code == ExitCode.SERVICE
    assert "apimart resend k-409" in str(caught.value.hint)
    [row] = history.list()
    assert (row.task_id, row.state, row.idempotency_key) == (None, "unknown", "k-409")
    assert history.bound_body("k-409") == {"model": "gpt-image-2", "prompt": "a fox"}


def test_every_resend_of_a_key_sends_the_body_first_sent_with_it(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=SUBMIT_URL, status_code=500)
    httpx_mock.add_response(url=SUBMIT_URL, json=accepted())
    with pytest.raises(SubmissionUnknown):
        submit(client, history, build_request("a fox", n=1), idempotency_key="k1")
    # The caller now holds another request (an edited line): the key keeps its body.
    assert submit(client, history, build_request("an owl"), idempotency_key="k1") == ["task_1"]
    [(key1, first), (key2, second)] = sent(httpx_mock)
    assert key1 == key2 == "k1" and first == second
    assert json.loads(second)["prompt"] == "a fox"
    [row] = history.list()
    assert (row.task_id, row.idempotency_key, row.prompt) == ("task_1", "k1", "a fox")


@pytest.mark.parametrize("status", [401, 402, 403, 429])
def test_a_resend_refused_for_the_key_or_balance_keeps_the_key(
    status: int, client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=SUBMIT_URL, status_code=500)
    httpx_mock.add_response(url=SUBMIT_URL, is_reusable=True, **refused(status, "no"))
    request = build_request("a fox")
    with pytest.raises(SubmissionUnknown):
        submit(client, history, request, idempotency_key="k1")
    with pytest.raises(SubmissionUnknown, match="may have created the task"):
        submit(client, history, request, idempotency_key="k1")
    [row] = history.list()
    assert (row.state, row.idempotency_key) == ("unknown", "k1")


def test_a_resend_out_of_time_while_retrying_keeps_the_key(
    history: History, httpx_mock: HTTPXMock
) -> None:
    from apimart_cli.deadline import Deadline

    httpx_mock.add_response(url=SUBMIT_URL, status_code=500)
    # Asked to wait longer than the time left: the resend ends without any refusal.
    httpx_mock.add_response(
        url=SUBMIT_URL, headers={"Retry-After": "3600"}, **refused(429, "slow down")
    )
    request = build_request("a fox")
    with Client(BASE, KEY, sleep=lambda _: None, deadline=Deadline.after(30)) as client:
        with pytest.raises(SubmissionUnknown):
            submit(client, history, request, idempotency_key="k1")
        with pytest.raises(SubmissionUnknown) as caught:
            submit(client, history, request, idempotency_key="k1")
    assert caught.value.exit_code == ExitCode.TIMEOUT
    [row] = history.list()
    assert (row.state, row.idempotency_key) == ("unknown", "k1")


def test_a_resend_refused_for_its_model_under_a_5xx_keeps_the_key(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=SUBMIT_URL, status_code=500)
    model_gone = {"error": {"code": "model_not_found", "message": "no such model"}}
    httpx_mock.add_response(url=SUBMIT_URL, status_code=503, json=model_gone)
    request = build_request("a fox")
    with pytest.raises(SubmissionUnknown):
        submit(client, history, request, idempotency_key="k1")
    with pytest.raises(SubmissionUnknown, match="may have created the task"):
        submit(client, history, request, idempotency_key="k1")
    [row] = history.list()
    assert (row.state, row.idempotency_key) == ("unknown", "k1")


def test_a_first_send_refused_and_a_resend_refused_for_its_body_let_the_key_go(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=SUBMIT_URL, **refused(402, "insufficient balance"))
    with pytest.raises(Exception, match="402"):
        submit(client, history, build_request("a fox"), idempotency_key="k1")
    assert history.list() == []
    httpx_mock.add_response(url=SUBMIT_URL, status_code=500)
    httpx_mock.add_response(url=SUBMIT_URL, **refused(400, "prompt refused by moderation"))
    with pytest.raises(SubmissionUnknown):
        submit(client, history, build_request("a fox"), idempotency_key="k2")
    with pytest.raises(Exception, match="moderation"):
        submit(client, history, build_request("a fox"), idempotency_key="k2")
    assert history.list() == []


def test_the_base64_fallbacks_key_keeps_the_uploaded_body(
    tmp_path: Path, client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    photo = image(tmp_path / "photo.png")
    request = build_request("ink it", images=[str(photo)])
    url = "https://cdn.test/u/1.png"
    httpx_mock.add_response(url=SUBMIT_URL, **refused(400, "base64 images are not supported"))
    httpx_mock.add_response(url=UPLOAD_URL, json={"url": url, "created_at": 1_800_000_000})
    httpx_mock.add_response(url=SUBMIT_URL, status_code=500)  # the fallback's reply is lost
    httpx_mock.add_response(url=SUBMIT_URL, json=accepted())
    cache = Cache(tmp_path / "cache.sqlite3", warn=print)
    sender = ReferenceSender(client, "inline", info=lambda _: None, warn=print, cache=cache)
    keys: list[str] = []
    with pytest.raises(SubmissionUnknown):
        sender.submit(history, request, idempotency_key="k1", before_resend=keys.append)
    [fallback] = keys
    # A rerun (batch) sends the fallback's key with the inline request at hand.
    rerun = ReferenceSender(client, "inline", info=lambda _: None, warn=print, cache=cache)
    assert rerun.submit(history, request, idempotency_key=fallback) == ["task_1"]
    bodies = sent(httpx_mock)
    assert [key for key, _ in bodies] == ["k1", fallback, fallback]
    assert bodies[1][1] == bodies[2][1]
    assert json.loads(bodies[2][1])["image_urls"] == [url]


def test_resend_sends_each_unknown_submission_and_records_its_task(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=SUBMIT_URL, status_code=500)
    httpx_mock.add_exception(httpx.ReadTimeout("lost"), url=SUBMIT_URL)
    for key in ("k1", "k2"):
        with pytest.raises(SubmissionUnknown):
            submit(client, history, build_request(f"prompt {key}"), idempotency_key=key)
    httpx_mock.add_response(url=SUBMIT_URL, json=accepted("task_a"))
    httpx_mock.add_response(url=SUBMIT_URL, **refused(409, "request in progress"))
    results = list(resend(client, history))
    assert [(r.key, r.task_ids) for r in results] == [("k1", ("task_a",)), ("k2", ())]
    assert isinstance(results[1].error, SubmissionUnknown)
    assert "apimart resend k2" in str(results[1].error.hint)
    states = {r.idempotency_key: (r.task_id, r.state) for r in history.list()}
    assert states == {"k1": ("task_a", "submitted"), "k2": (None, "unknown")}
    [(_, first), *_] = sent(httpx_mock)
    assert [body for key, body in sent(httpx_mock) if key == "k1"] == [first, first]


def test_a_key_the_history_has_answered_is_never_sent_again(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    # The key was answered (by `apimart resend`, or by a run killed before its caller
    # heard), yet its caller still holds it as unknown, or an earlier version left an
    # id-less row of it beside its task. A service that no longer holds the key would
    # make a second task of it: the history's answer is given, and nothing is sent.
    what = {"base_url": BASE, "prompt": "a fox", "fields": {}, "idempotency_key": "k1"}
    history.record_sending(**what, body={"model": "gpt-image-2", "prompt": "a fox"})
    history.record_submission("task_1", **what)
    with history._write() as conn:  # as an earlier version left it
        conn.execute(
            "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt, fields,"
            " idempotency_key, state) VALUES (NULL, 1, 1, ?, 'a fox', '{}', 'k1', 'unknown')",
            (BASE,),
        )

    assert [(r.key, r.task_ids, r.error) for r in resend(client, history)] == [
        ("k1", ("task_1",), None)
    ]
    assert list(resend(client, history)) == []
    assert submit(client, history, build_request("a fox"), idempotency_key="k1") == ["task_1"]
    assert sent(httpx_mock) == []
    assert [(r.task_id, r.state) for r in history.list()] == [("task_1", "submitted")]


def test_a_key_first_sent_to_another_service_is_not_sent_to_this_one(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    # A batch rerun with another --base-url (a relay, say): the task the key may have
    # made is at the first service, which this one cannot answer for. Sent here, it
    # would be made twice, and the first lost from the history.
    other = "https://relay.test"
    httpx_mock.add_response(url=f"{other}/v1/images/generations", status_code=500)
    with Client(other, KEY, sleep=lambda _: None) as relay, pytest.raises(SubmissionUnknown):
        submit(relay, history, build_request("a fox"), idempotency_key="k1")

    with pytest.raises(SubmissionUnknown) as caught:
        submit(client, history, build_request("a fox"), idempotency_key="k1")

    assert other in caught.value.message and BASE in caught.value.message
    assert f"apimart --base-url {other} resend k1" in str(caught.value.hint)
    assert sent(httpx_mock) == []
    [row] = history.list()
    assert (row.task_id, row.state, row.base_url) == (None, "unknown", other)


def test_a_key_first_sent_to_a_sandbox_may_go_to_the_service(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    # A sandbox (loopback) bills nothing, and ends with its command: its keys go on.
    what = {"prompt": "a fox", "fields": {}, "idempotency_key": "k1"}
    body = {"model": "gpt-image-2", "prompt": "a fox"}
    history.record_sending(base_url="http://127.0.0.1:8787", **what, body=body)
    httpx_mock.add_response(url=SUBMIT_URL, json=accepted())
    assert submit(client, history, build_request("a fox"), idempotency_key="k1") == ["task_1"]
    assert [key for key, _ in sent(httpx_mock)] == ["k1"]


def test_resend_of_a_key_that_is_not_unknown_is_an_error_of_its_own(
    client: Client, history: History
) -> None:
    [result] = resend(client, history, ["k-gone"])
    assert isinstance(result.error, TaskError) and "k-gone" in result.error.message
    with pytest.raises(UsageError, match="Invalid idempotency key"):
        list(resend(client, history, ["not a key; rm -rf"]))
    assert list(resend(client, history)) == []


def test_a_key_sent_by_an_older_version_without_a_body_is_still_kept_and_bound_now(
    client: Client, history: History, httpx_mock: HTTPXMock
) -> None:
    what = {"base_url": BASE, "prompt": "a fox", "fields": {}, "idempotency_key": "k-old"}
    history.record_sending(**what)  # as a version that kept no body left it
    httpx_mock.add_response(url=SUBMIT_URL, **refused(401, "key refused"))
    with pytest.raises(SubmissionUnknown):
        submit(client, history, build_request("a fox"), idempotency_key="k-old")
    [row] = history.list()
    assert (row.state, row.idempotency_key) == ("unknown", "k-old")
    assert history.bound_body("k-old") == {"model": "gpt-image-2", "prompt": "a fox"}
