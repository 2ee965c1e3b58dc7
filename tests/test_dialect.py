"""The service's wider dialect, through the client: errors inside a 200, model errors under
a load status, replays, synchronous results, times in every form."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.client import Client
from apimart_cli.errors import (
    ApimartError,
    BadRequestError,
    ExitCode,
    NotFoundError,
    ServiceStatusError,
    SubmissionUnknown,
    TaskError,
)
from apimart_cli.payload import build_request
from apimart_cli.tasks import is_result_id, parse_task, parse_time, reply_error, result_id

KEY = "sk-live-SECRET0123456789abcdef"
BASE = "https://api.test"
SUBMIT_URL = f"{BASE}/v1/images/generations"
TASK_ID = "task_01KPQ7J7DWB7QZ3WCEK3YVPBRA"
TASK_URL = f"{BASE}/v1/tasks/{TASK_ID}?language=en"
KEY_ID = "0b8f5e1c-4d7a-4f3e-9c2b-6a1d2e3f4a5b"
SUBMITTED = {"code": 200, "data": [{"status": "submitted", "task_id": TASK_ID}]}
URL = "https://upload.apimart.ai/f/image/abc.png"


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(BASE, KEY, sleep=lambda _: None) as api:
        yield api


def submit_fails(client: Client, model: str = "gpt-image-2") -> ApimartError:
    with pytest.raises(ApimartError) as caught:
        client.submit(build_request("a fox", model=model), KEY_ID)
    return caught.value


@pytest.mark.parametrize(
    ("body", "message", "exit_code"),
    [
        ({"code": 400, "message": "prompt rejected", "data": None}, "prompt rejected", 1),
        ({"success": False, "message": "令牌已过期"}, "令牌已过期", 1),
        ({"code": 401, "msg": "invalid token"}, "invalid token", 3),
        ({"code": 402, "message": "insufficient balance"}, "insufficient balance", 4),
        ({"error": {"message": "bad size", "type": "invalid_request_error"}}, "bad size", 1),
    ],
)
def test_a_submit_refused_inside_a_200_created_nothing_and_says_why(
    client: Client, httpx_mock: HTTPXMock, body: dict[str, Any], message: str, exit_code: int
) -> None:
    httpx_mock.add_response(method="POST", url=SUBMIT_URL, json=body)
    error = submit_fails(client)
    assert not isinstance(error, SubmissionUnknown)  # a refusal: nothing was created
    assert message in error.message
    assert error.exit_code == exit_code
    assert len(httpx_mock.get_requests()) == 1  # not resent


def test_a_submit_failing_with_500_inside_a_200_is_unknown(
    client: Client, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=SUBMIT_URL, json={"code": 500, "msg": "boom"})
    error = submit_fails(client)
    assert isinstance(error, SubmissionUnknown)
    assert "boom" in error.message
    assert error.idempotency_key == KEY_ID
    assert len(httpx_mock.get_requests()) == 1


def test_a_503_inside_a_200_is_load_and_the_submit_resent(
    client: Client, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=SUBMIT_URL, json={"code": 503, "message": "busy"})
    httpx_mock.add_response(method="POST", url=SUBMIT_URL, json=SUBMITTED)
    assert client.submit(build_request("a fox"), KEY_ID) == [TASK_ID]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, {"code": "model_not_found", "message": "no channel", "type": "new_api_error"}),
        (500, {"code": 500, "message": "no such model", "type": "unsupported_generation_model"}),
        (200, {"code": "model_not_found", "message": "no channel"}),
    ],
)
def test_a_model_error_is_never_retried_and_names_the_model(
    client: Client, httpx_mock: HTTPXMock, status: int, error: dict[str, Any]
) -> None:
    reply = {"error": error}
    httpx_mock.add_response(method="POST", url=SUBMIT_URL, status_code=status, json=reply)
    failure = submit_fails(client, model="gpt-image-9")
    assert isinstance(failure, BadRequestError)  # refused: nothing was created
    assert "gpt-image-9" in failure.message
    assert failure.exit_code == ExitCode.FAILED
    assert len(httpx_mock.get_requests()) == 1


@pytest.mark.parametrize(
    ("body", "kind", "message"),
    [
        ({"code": 400, "message": "task id malformed", "data": None}, BadRequestError, "malformed"),
        ({"code": 404, "msg": "task not found"}, TaskError, "does not exist"),
        ({"success": False, "message": "denied"}, BadRequestError, "denied"),
    ],
)
def test_a_poll_answered_with_an_error_inside_a_200_is_that_error(
    client: Client, httpx_mock: HTTPXMock, body: dict[str, Any], kind: type, message: str
) -> None:
    httpx_mock.add_response(url=TASK_URL, json=body)
    with pytest.raises(ApimartError) as caught:
        client.get_task(TASK_ID)
    assert isinstance(caught.value, kind)
    assert message in caught.value.message
    assert "not an object" not in caught.value.message
    assert caught.value.as_data()["retryable"] is False
    assert len(httpx_mock.get_requests()) == 1


def test_a_poll_answered_with_a_5xx_inside_a_200_is_retried(
    client: Client, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=TASK_URL, json={"code": 502, "message": "bad gateway"})
    httpx_mock.add_response(url=TASK_URL, json={"code": 200, "data": {"status": "RUNNING"}})
    assert client.get_task(TASK_ID).status == "processing"


def test_an_http_404_is_still_not_found(client: Client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/v1/models", status_code=404, json={"message": "no"})
    with pytest.raises(NotFoundError):
        client.list_models()


def test_a_replay_is_said_and_its_request_id_kept(client: Client, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT_URL,
        headers={"Idempotency-Replayed": "true"},
        json={"code": 200, "request_id": "req_9", "data": {"id": TASK_ID, "status": "pending"}},
    )
    submitted = client.submit_reply(build_request("a fox"), KEY_ID)
    assert submitted.task_ids == [TASK_ID]
    assert submitted.replayed
    assert submitted.request_id == "req_9"


SYNC_RESULT = {
    "code": 200,
    "request_id": "req_01/ab c",
    "data": {
        "object": "generation.result",
        "status": "completed",
        "result": {"images": [{"url": [URL], "expires_at": "2999-01-01T00:00:00Z"}]},
    },
}


def test_a_synchronous_result_is_kept_under_an_id_from_its_request_id(
    client: Client, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=SUBMIT_URL, json=SYNC_RESULT)
    submitted = client.submit_reply(build_request("a fox"), KEY_ID)
    (task_id,) = submitted.task_ids
    assert task_id == "result_req_01-ab-c"
    assert submitted.result is not None and submitted.result.status == "completed"
    # Asked again, in this run or the next, without the service (which has no such task).
    assert client.get_task(task_id).images[0].url == URL
    with Client(BASE, KEY) as later:
        task = later.get_task(task_id)
    assert task.status == "completed"
    assert task.images[0].expires_at == parse_time("2999-01-01T00:00:00Z")
    assert len(httpx_mock.get_requests()) == 1


def test_result_ids() -> None:
    assert result_id(None, KEY_ID) == f"result_{KEY_ID}"
    assert result_id("", "k") == "result_k"
    assert result_id("../../etc", "k") == "result_etc"
    assert len(result_id("x" * 500, "k")) == 128
    assert is_result_id(result_id("r", "k")) and not is_result_id(TASK_ID)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (1776835126, 1776835126),
        (1776835126.9, 1776835126),
        (1776835126000, 1776835126),
        ("1776835126", 1776835126),
        ("1776835126000", 1776835126),
        ("2026-04-22T05:18:46Z", 1776835126),
        ("2026-04-22T05:18:46+00:00", 1776835126),
        ("2026-04-22T13:18:46+08:00", 1776835126),
        ("2026-04-22T05:18:46.250Z", 1776835126),
        ("2026-04-22 05:18:46", 1776835126),
        ("tomorrow", None),
        ("", None),
        (None, None),
        (True, None),
        (-5, -5),  # before 1970, long past: an expiry there has passed
        (0, None),  # the field left unset
        (float("inf"), None),
    ],
)
def test_times_in_every_form(value: Any, seconds: int | None) -> None:
    assert parse_time(value) == seconds


def test_created_as_iso_text() -> None:
    task = parse_task({"data": {"status": "pending", "created": "2026-04-22T05:18:46Z"}}, TASK_ID)
    assert task.created == 1776835126


@pytest.mark.parametrize(
    "payload",
    [
        {"code": 200, "data": {"status": "failed", "error": {"code": 400, "message": "nsfw"}}},
        {"code": 200, "data": None},
        {"success": True, "remain_balance": 1},
        {"object": "list", "data": []},
        {"code": 0, "data": {"id": TASK_ID}},
    ],
)
def test_replies_that_are_not_errors(payload: dict[str, Any]) -> None:
    assert reply_error(payload, 200) is None


def test_http_errors_keep_their_status() -> None:
    said = reply_error({"code": 400, "message": "x"}, 503)
    assert said is not None and said.status == 503
    assert not isinstance(said, ServiceStatusError)


@pytest.mark.parametrize(
    ("message", "refusal"),
    [
        ("image_requires_upload: we no longer support passing base64 image data", True),
        ("data URIs are not accepted in image_urls", True),
        ("Base64 images are not supported", True),
        ("prompt rejected; upload a policy appeal at https://apimart.ai", False),
        ("upload quota exceeded", False),
    ],
)
def test_a_base64_refusal_is_what_the_service_says_about_base64(
    tmp_path: Any, message: str, refusal: bool
) -> None:
    from apimart_cli.references import is_base64_refusal
    from tests.cli.conftest import PNG

    image = tmp_path / "ref.png"
    image.write_bytes(PNG)
    request = build_request("a fox", images=[str(image)])
    error = BadRequestError(f"The server answered 400: {message}", status_code=400)
    assert is_base64_refusal(error, request) is refusal
