"""The sandbox speaks the service's wider dialect: model docs, replays with their request
id, the response-version header, and switches and faults for the shapes relays send."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.helpers.records import direct, plain_client

SUBMIT = "/v1/images/generations"
BODY = {"model": "gpt-image-2", "prompt": "a fox"}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.0)) as server:
        yield server


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with plain_client(base_url=sandbox.base_url, headers={"Authorization": "Bearer x"}) as c:
        yield c


def test_every_api_reply_names_its_response_version(api: httpx.Client) -> None:
    assert api.get("/v1/models").headers["X-APIMart-Response-Version"] == "2026-07-27"
    asked = api.get("/v1/models", headers={"X-APIMart-Response-Version": "2026-01-01"})
    assert asked.headers["X-APIMart-Response-Version"] == "2026-01-01"


def test_a_replay_is_marked_and_repeats_the_request_id(api: httpx.Client) -> None:
    headers = {"Idempotency-Key": "k-1"}
    first = api.post(SUBMIT, json=BODY, headers=headers)
    again = api.post(SUBMIT, json=BODY, headers=headers)

    assert "Idempotency-Replayed" not in first.headers
    assert again.headers["Idempotency-Replayed"] == "true"
    assert first.json() == again.json()
    assert first.json()["request_id"].startswith("req_")


def test_model_docs(api: httpx.Client) -> None:
    docs = api.get("/v1/model-docs", params={"model": "gpt-image-2-official"}).json()

    assert docs["object"] == "model.documentation"
    assert docs["model"] == "gpt-image-2-official"
    assert docs["doc_url"] and docs["markdown_url"]
    assert docs["markdown"].startswith("# gpt-image-2-official")
    assert "`mask_url`" in docs["markdown"]
    assert isinstance(docs["fetched_at"], int) and docs["cache_ttl_seconds"] > 0
    assert docs["stale"] is False
    assert api.get("/v1/model-docs", params={"model": "nope"}).status_code == 404
    assert api.get("/v1/model-docs").status_code == 400


@pytest.mark.parametrize(
    "fields",
    [
        {"size": "16:9", "resolution": "4k", "n": 4},
        {"size": "auto", "quality": "high", "background": "transparent", "output_format": "png"},
        {"output_compression": 80, "moderation": "low", "mask_url": "https://x.test/m.png"},
    ],
)
def test_gpt_image_2_official_as_its_page_documents(
    api: httpx.Client, fields: dict[str, Any]
) -> None:
    reply = api.post(SUBMIT, json={**BODY, "model": "gpt-image-2-official", **fields})
    assert reply.status_code == 200, reply.text


def test_gemini_3_1_flash_takes_its_tall_ratios(api: httpx.Client) -> None:
    body = {**BODY, "model": "gemini-3.1-flash-image-preview", "size": "1:4"}
    assert api.post(SUBMIT, json=body).status_code == 200


@pytest.mark.parametrize(
    ("shape", "body"),
    [
        (
            "code",
            {"code": 400, "message": "Bad Request (sandbox fault, inside a 200)", "data": None},
        ),
        ("msg", {"code": 400, "msg": "Bad Request (sandbox fault, inside a 200)"}),
        ("success", {"success": False, "message": "Bad Request (sandbox fault, inside a 200)"}),
    ],
)
def test_error_inside_a_200(
    sandbox: Sandbox, api: httpx.Client, shape: str, body: dict[str, Any]
) -> None:
    sandbox.inject(Fault("error_in_200", method="POST", path=SUBMIT, status=400, shape=shape))
    reply = api.post(SUBMIT, json=BODY)
    assert (reply.status_code, reply.json()) == (200, body)
    assert sandbox.submissions() == []


def test_model_error_under_a_load_status(sandbox: Sandbox, api: httpx.Client) -> None:
    sandbox.inject(Fault("model_error", method="POST", path=SUBMIT, status=503))
    reply = api.post(SUBMIT, json=BODY)
    assert reply.status_code == 503
    assert reply.json()["error"]["code"] == "model_not_found"
    assert "gpt-image-2" in reply.json()["error"]["message"]


def test_fault_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="shape"):
        Fault("error_in_200", shape="xml")


def test_state_synonyms_and_iso_times(sandbox: Sandbox, api: httpx.Client) -> None:
    sandbox.configure(state_synonyms=True, iso_times=True)
    task_id = api.post(SUBMIT, json=BODY).json()["data"][0]["task_id"]

    data = api.get(f"/v1/tasks/{task_id}").json()["data"]

    assert data["status"] == "SUCCEEDED"
    assert data["created"].endswith("Z") and data["completed"].endswith("Z")
    assert data["result"]["images"][0]["expires_at"].endswith("Z")


def test_synchronous_results(sandbox: Sandbox, api: httpx.Client) -> None:
    sandbox.configure(sync_results=True)
    reply = api.post(SUBMIT, json=BODY, headers={"Idempotency-Key": "k"}).json()

    data = reply["data"]
    assert data["object"] == "generation.result"
    assert data["status"] == "completed"
    assert "id" not in data and "task_id" not in data
    assert reply["request_id"].startswith("req_")
    (image,) = data["result"]["images"]
    assert direct.get(image["url"][0]).status_code == 200
