"""The sandbox's newer endpoints: uploads, models and schemas, base64 refused, reply shapes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apimart_cli.sandbox import ManualClock, Sandbox, SandboxConfig, encode_png
from tests.helpers.records import plain_client

KEY = "sk-upload-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
SUBMIT = "/v1/images/generations"
UPLOAD = "/v1/uploads/images"
PNG = encode_png(8, 8, b"\x00" + bytes(24) * 8)
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
MAX_BYTES = 20 * 1024 * 1024


class Api:
    def __init__(self, sandbox: Sandbox, clock: ManualClock) -> None:
        self.sandbox, self.clock = sandbox, clock
        self.client = plain_client(base_url=sandbox.base_url, headers=AUTH, timeout=30)
        self.public = plain_client(timeout=30)

    def upload(self, data: bytes, name: str = "ref.png", field: str = "file") -> httpx.Response:
        return self.client.post(UPLOAD, files={field: (name, data, "application/octet-stream")})


@pytest.fixture
def make_api() -> Iterator[Any]:
    started: list[Api] = []

    def make(**config: Any) -> Api:
        clock = ManualClock()
        config.setdefault("duration", 0)
        sandbox = Sandbox(SandboxConfig(**config), clock=clock).start()
        started.append(Api(sandbox, clock))
        return started[-1]

    yield make
    for api in started:
        api.client.close()
        api.public.close()
        api.sandbox.stop()


@pytest.fixture
def api(make_api: Any) -> Api:
    return make_api()  # type: ignore[no-any-return]


# Uploads


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + bytes(100), "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(100), "image/webp"),
        (b"GIF89a" + bytes(100), "image/gif"),
    ],
)
def test_upload_answers_its_url_and_serves_the_file_back(
    api: Api, data: bytes, content_type: str
) -> None:
    reply = api.upload(data, name="my ref.bin")

    assert reply.status_code == 200, reply.text
    upload = reply.json()
    assert set(upload) == {"url", "filename", "content_type", "bytes", "created_at"}
    assert (upload["content_type"], upload["bytes"]) == (content_type, len(data))
    assert upload["filename"] == "my_ref.bin"
    assert upload["created_at"] == int(api.clock.time())
    assert upload["url"].startswith(f"{api.sandbox.image_base_url}/f/upload/")
    served = api.public.get(upload["url"])
    assert (served.status_code, served.content) == (200, data)
    assert served.headers["Content-Type"] == content_type


def test_uploads_and_their_bytes_are_recorded(api: Api) -> None:
    api.upload(PNG)
    api.upload(PNG, name="again.png")

    assert [upload.filename for upload in api.sandbox.uploads] == ["ref.png", "again.png"]
    sent = [request.bytes for request in api.sandbox.requests if request.path == UPLOAD]
    assert len(sent) == 2 and all(size > len(PNG) for size in sent)
    listed = api.public.get(f"{api.sandbox.base_url}/__sandbox/uploads").json()["uploads"]
    assert [entry["bytes"] for entry in listed] == [len(PNG), len(PNG)]
    requests = api.public.get(f"{api.sandbox.base_url}/__sandbox/requests").json()["requests"]
    assert [r["bytes"] for r in requests] == sent
    assert KEY not in str(requests)


def test_submission_bytes_are_recorded(api: Api) -> None:
    reply = api.client.post(
        SUBMIT, json={"model": "gpt-image-2", "prompt": "a", "image_urls": [DATA_URI]}
    )

    assert reply.status_code == 200
    assert api.sandbox.requests[-1].bytes == int(reply.request.headers["Content-Length"])


@pytest.mark.parametrize(
    ("data", "field", "status", "message"),
    [
        (b"%PDF-1.7" + bytes(100), "file", 400, "unsupported format"),
        (PNG, "image", 400, "missing file field"),
        (b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES), "file", 413, "too large"),
    ],
)
def test_upload_refuses_what_the_service_refuses(
    api: Api, data: bytes, field: str, status: int, message: str
) -> None:
    reply = api.upload(data, field=field)

    assert reply.status_code == status
    assert message in reply.json()["error"]["message"]
    assert api.sandbox.uploads == []


def test_upload_of_exactly_the_limit_is_accepted(api: Api) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES - 8)
    assert api.upload(data).json()["bytes"] == MAX_BYTES


def test_upload_needs_multipart_and_a_key(api: Api) -> None:
    assert (
        api.client.post(UPLOAD, content=PNG, headers={"Content-Type": "image/png"}).status_code
        == 400
    )
    assert (
        api.public.post(f"{api.sandbox.base_url}{UPLOAD}", files={"file": PNG}).status_code == 401
    )


def test_uploaded_file_expires_after_72_hours(api: Api) -> None:
    url = api.upload(PNG).json()["url"]
    api.clock.advance(72 * 3600 - 1)
    assert api.public.get(url).status_code == 200
    api.clock.advance(1)
    assert api.public.get(url).status_code == 410
    assert api.public.get(url.replace("/f/upload/", "/f/upload/0")).status_code == 404


def test_uploaded_url_works_as_a_reference(api: Api) -> None:
    url = api.upload(PNG).json()["url"]
    body = {"model": "gpt-image-2", "prompt": "like this", "image_urls": [url]}

    assert api.client.post(SUBMIT, json=body).status_code == 200


# Base64 refused, as the newer service does


@pytest.mark.parametrize("model", ["gpt-image-2", "gpt-image-2-official"])
def test_refuse_base64_answers_400_and_creates_nothing(make_api: Any, model: str) -> None:
    api = make_api(refuse_base64=True)
    body = {"model": model, "prompt": "a fox", "image_urls": ["https://x.test/a.png", DATA_URI]}

    reply = api.client.post(SUBMIT, json=body)

    assert reply.status_code == 400
    assert reply.json()["error"]["message"].startswith("image_requires_upload")
    assert api.sandbox.submissions() == []
    body["image_urls"] = ["https://x.test/a.png"]
    assert api.client.post(SUBMIT, json=body).status_code == 200


def test_base64_accepted_by_default_and_refused_once_switched(api: Api) -> None:
    body = {"model": "gpt-image-2", "prompt": "a fox", "image_urls": [DATA_URI]}
    assert api.client.post(SUBMIT, json=body).status_code == 200

    api.client.post("/__sandbox/config", json={"refuse_base64": True})

    assert api.client.post(SUBMIT, json=body).status_code == 400


# The reply shape the vendor's client asks for


def test_response_version_header_gets_the_object_shape(api: Api) -> None:
    headers = {"X-APIMart-Response-Version": "2026-07-27", "Idempotency-Key": "k-1"}
    body = {"model": "gpt-image-2", "prompt": "a fox"}

    first = api.client.post(SUBMIT, json=body, headers=headers).json()
    again = api.client.post(SUBMIT, json=body, headers=headers).json()

    (created,) = api.sandbox.submissions()
    data = {"id": created.task_id, "object": "generation.task", "status": "submitted"}
    assert first == again == {"code": 200, "request_id": first["request_id"], "data": data}
    plain = api.client.post(SUBMIT, json=body).json()
    assert plain["data"][0]["status"] == "submitted"


# Models and their schemas


def test_models_lists_the_served_models(api: Api) -> None:
    reply = api.client.get("/v1/models").json()

    assert reply["object"] == "list"
    ids = [model["id"] for model in reply["data"]]
    assert ids[0] == "gpt-image-2"
    assert "gpt-image-2-official" in ids


def test_model_schema_of_gpt_image_2(api: Api) -> None:
    reply = api.client.get("/v1/model-schema", params={"model": "gpt-image-2"}).json()

    assert (reply["model"], reply["operation"]) == ("gpt-image-2", "image_generation")
    schema = reply["input_schema"]
    assert schema["required"] == ["model", "prompt"]
    assert schema["properties"]["n"] == {"type": "integer", "minimum": 1, "maximum": 10}
    assert schema["properties"]["image_urls"]["maxItems"] == 16
    assert schema["properties"]["resolution"]["enum"] == ["1k", "2k", "4k"]


def test_model_schema_of_the_official_model_has_other_rules(api: Api) -> None:
    params = {"model": "gpt-image-2-official", "operation": "image_generation"}
    schema = api.client.get("/v1/model-schema", params=params).json()["input_schema"]

    properties = schema["properties"]
    assert properties["quality"]["enum"] == ["low", "medium", "high", "auto"]
    assert properties["output_format"]["enum"] == ["png", "jpeg", "webp"]
    assert (
        properties["output_compression"]["minimum"],
        properties["output_compression"]["maximum"],
    ) == (0, 100)
    assert properties["n"]["maximum"] == 4
    assert {"background", "moderation", "mask_url"} <= set(properties)
    assert properties["prompt"]["maxLength"] == 32000
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(("params", "status"), [({}, 400), ({"model": "dall-e-9"}, 404)])
def test_model_schema_of_no_model_or_an_unknown_one(
    api: Api, params: dict[str, str], status: int
) -> None:
    assert api.client.get("/v1/model-schema", params=params).status_code == status


OFFICIAL = {"model": "gpt-image-2-official", "prompt": "a fox"}


def test_official_model_accepts_its_own_fields(api: Api) -> None:
    body = {
        **OFFICIAL,
        "n": 4,
        "size": "1536x1024",
        "quality": "high",
        "background": "transparent",
        "output_format": "webp",
        "output_compression": 80,
        "moderation": "low",
        "mask_url": "https://x.test/mask.png",
    }

    reply = api.client.post(SUBMIT, json=body)

    assert reply.status_code == 200, reply.text
    task = api.client.get(f"/v1/tasks/{reply.json()['data'][0]['task_id']}").json()["data"]
    assert len(task["result"]["images"]) == 4


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"quality": "ultra"}, "quality must be one of low, medium, high, auto"),
        ({"n": 5}, "n must be at most 4"),
        ({"n": 0}, "n must be at least 1"),
        ({"n": "2"}, "n must be of type integer"),
        ({"n": True}, "n must be of type integer"),
        ({"output_compression": 101}, "output_compression must be at most 100"),
        ({"output_format": 1}, "output_format must be of type string"),
        ({"resolution": "8k"}, "resolution must be one of 1k, 2k, 4k"),
        ({"style": "vivid"}, "unknown field 'style'"),
        ({"prompt": "x" * 32001}, "prompt must be at most 32000 characters"),
        ({"image_urls": ["https://x.test/a.png"] * 17}, "image_urls exceeds max 16"),
        ({"image_urls": [1]}, "image_urls must be a list of strings"),
        ({"prompt": None}, "prompt must be of type string"),
    ],
)
def test_official_model_is_checked_by_its_schema(
    api: Api, fields: dict[str, Any], message: str
) -> None:
    reply = api.client.post(SUBMIT, json={**OFFICIAL, **fields})

    assert reply.status_code == 400
    assert message in reply.json()["error"]["message"]
    assert api.sandbox.submissions() == []


def test_a_required_field_missing_from_another_model(api: Api) -> None:
    reply = api.client.post(SUBMIT, json={"model": "gpt-image-2-official"})

    assert "prompt is required" in reply.json()["error"]["message"]


def test_gpt_image_2_still_accepts_fields_it_ignores(api: Api) -> None:
    body = {"model": "gpt-image-2", "prompt": "a fox", "style": "vivid", "response_format": "url"}

    assert api.client.post(SUBMIT, json=body).status_code == 200


# What is kept of large requests


def test_a_long_reference_is_recorded_by_its_start_and_length(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("apimart_cli.sandbox.service.RECORDED_STRING_CHARS", 100)
    reference = encode_png(300, 200, b"\x00" + bytes(900) * 200)
    uri = "data:image/png;base64," + base64.b64encode(reference).decode()
    body = {"model": "gpt-image-2", "prompt": "like this", "image_urls": [uri]}

    task_id = api.client.post(SUBMIT, json=body).json()["data"][0]["task_id"]

    (recorded,) = api.sandbox.submissions()
    assert recorded.json["prompt"] == "like this"
    assert recorded.json["image_urls"] == [f"{uri[:64]}…({len(uri)} characters)"]
    image = api.client.get(f"/v1/tasks/{task_id}").json()["data"]["result"]["images"][0]
    served = api.public.get(image["url"][0]).content
    assert served[16:24] == (300).to_bytes(4, "big") + (200).to_bytes(4, "big")  # read in full


def test_a_body_too_large_to_keep_is_413(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("apimart_cli.sandbox.server.MAX_KEPT_BODY_BYTES", 1000)
    body = {"model": "gpt-image-2", "prompt": "x" * 2000}

    reply = api.client.post(SUBMIT, json=body)

    assert reply.status_code == 413
    assert api.sandbox.submissions() == []
    assert api.sandbox.requests[-1].bytes == int(reply.request.headers["Content-Length"])
    assert api.client.get("/v1/balance").status_code == 200  # the connection goes on
