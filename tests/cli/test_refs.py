"""generate with --refs, --param and another model: transcripts against strict replies."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from tests.cli.conftest import API, AUTH, PNG, SUBMIT_URL, api_requests, body, expect_submit, run

UPLOAD_URL = f"{API}/v1/uploads/images"
DATA_URI = "data:image/png;base64," + base64.b64encode(PNG).decode()
SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "prompt": {"type": "string"},
        "n": {"type": "integer", "minimum": 1, "maximum": 4},
        "size": {"type": "string", "enum": ["1:1", "1:4", "4:1"]},
        "quality": {"type": "string", "enum": ["low", "medium", "high"]},
    },
    "required": ["prompt"],
    "additionalProperties": False,
}


def expect_upload(httpx_mock: HTTPXMock, url: str = "https://cdn.test/ref.png") -> None:
    httpx_mock.add_response(
        method="POST",
        url=UPLOAD_URL,
        match_headers=AUTH,
        json={"url": url, "created_at": 4_102_444_800, "bytes": len(PNG)},
    )


def expect_schema(httpx_mock: HTTPXMock, model: str, reply: Any = None, status: int = 200) -> None:
    httpx_mock.add_response(
        method="GET",
        url=f"{API}/v1/model-schema?model={model}",
        match_headers=AUTH,
        status_code=status,
        json={"model": model, "input_schema": SCHEMA} if reply is None else reply,
    )


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    path = tmp_path / "ref.png"
    path.write_bytes(PNG)
    return path


# -- --param ---------------------------------------------------------------------------------


def test_params_are_sent_as_extra_fields_read_as_json_where_they_parse(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_submit(
        httpx_mock, body(seed=42, style={"a": 1}, note="hello world", flag=True), ["task_1"]
    )
    result = run(
        "generate", "a red fox",
        "--param", "seed=42",
        "--param", 'style={"a": 1}',
        "--param", "note=hello world",
        "--param", "flag=true",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == "task_1\n"


def test_params_show_in_the_dry_run(api: str) -> None:
    result = run("generate", "a red fox", "--param", "seed=7", "--dry-run")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == body(seed=7)


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("model=x", 'The field "model" cannot be given as an extra field: --model sets it.'),
        ("prompt=x", 'The field "prompt" cannot be given as an extra field: the prompt'),
        ("size=1:1", 'The field "size" cannot be given as an extra field: -s/--size sets it.'),
        ("image_urls=[]", 'The field "image_urls" cannot be given as an extra field: -i/--image'),
        ("seed", "Invalid --param 'seed': expected KEY=VALUE."),
        ("=3", "Invalid --param '=3': expected KEY=VALUE."),
    ],
)
def test_a_param_an_option_sets_is_refused_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, param: str, message: str
) -> None:
    result = run("generate", "a red fox", "--param", param)
    assert result.exit_code == 2
    assert message in result.stderr
    assert api_requests(httpx_mock) == []


# -- another model ---------------------------------------------------------------------------


def test_another_model_takes_its_own_fields_and_sizes(api: str, httpx_mock: HTTPXMock) -> None:
    expect_schema(
        httpx_mock, "m-1", {"code": 200, "data": {"model": "m-1", "input_schema": SCHEMA}}
    )
    sent = {"model": "m-1", "prompt": "a fox", "n": 4, "size": "1:4", "quality": "high"}
    expect_submit(httpx_mock, sent, ["task_1"])
    args = (
        "generate",
        "a fox",
        "--model",
        "m-1",
        "-n",
        "4",
        "-s",
        "1:4",
        "--param",
        "quality=high",
    )
    result = run(*args)
    assert result.exit_code == 0, result.output
    # The schema is kept a day: the second run asks only to submit.
    expect_submit(httpx_mock, sent, ["task_2"])
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert [r.url.path for r in api_requests(httpx_mock)] == [
        "/v1/model-schema",
        "/v1/images/generations",
        "/v1/images/generations",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--param", "quality=ultra"),
            'Field "quality" for the model m-1 must be one of "low", "medium", "high" '
            '(got "ultra").',
        ),
        (("-n", "5"), 'Field "n" for the model m-1 must be 1 to 4 (got 5).'),
        (
            ("-s", "16:9"),
            'Field "size" for the model m-1 must be one of "1:1", "1:4", "4:1" (got "16:9").',
        ),
        (("--param", "seed=1"), 'The model m-1 takes no field "seed"'),
    ],
)
def test_another_model_refuses_what_its_schema_refuses(
    api: str, httpx_mock: HTTPXMock, args: tuple[str, ...], message: str
) -> None:
    expect_schema(httpx_mock, "m-1")
    result = run("generate", "a fox", "--model", "m-1", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "apimart models m-1" in result.stderr
    assert httpx_mock.get_requests(url=SUBMIT_URL) == []


def test_gpt_image_2_is_checked_offline_with_no_schema_request(
    api: str, httpx_mock: HTTPXMock
) -> None:
    bad = run("generate", "a fox", "-s", "1:4")
    assert bad.exit_code == 2
    expect_submit(httpx_mock, body("a fox", quality="high"), ["task_1"])
    good = run("generate", "a fox", "--param", "quality=high")
    assert good.exit_code == 0, good.output
    assert [r.url.path for r in api_requests(httpx_mock)] == ["/v1/images/generations"]


def test_a_model_without_a_schema_is_sent_as_given_with_a_note(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_schema(httpx_mock, "m-2", {"error": {"message": "not found"}}, status=404)
    expect_submit(httpx_mock, {"model": "m-2", "prompt": "a fox", "size": "7:3"}, ["task_1"])
    result = run("generate", "a fox", "--model", "m-2", "-s", "7:3")
    assert result.exit_code == 0, result.output
    assert "Note: the service has no schema for the model m-2" in result.stderr


# -- --refs ----------------------------------------------------------------------------------


def test_refs_upload_uploads_once_and_sends_the_url(
    api: str, httpx_mock: HTTPXMock, ref: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect_upload(httpx_mock)
    expect_submit(httpx_mock, body(image_urls=["https://cdn.test/ref.png"]), ["task_1"])
    result = run("generate", "a red fox", "-i", str(ref), "--refs", "upload")
    assert result.exit_code == 0, result.output
    # The same bytes again, from the environment's setting: the remembered URL, no upload.
    expect_submit(httpx_mock, body(image_urls=["https://cdn.test/ref.png"]), ["task_2"])
    monkeypatch.setenv("APIMART_REFERENCES", "upload")
    again = run("generate", "a red fox", "-i", str(ref))
    assert again.exit_code == 0, again.output
    assert [r.url.path for r in api_requests(httpx_mock)] == [
        "/v1/uploads/images",
        "/v1/images/generations",
        "/v1/images/generations",
    ]


def test_refs_inline_is_the_default(api: str, httpx_mock: HTTPXMock, ref: Path) -> None:
    expect_submit(httpx_mock, body(image_urls=[DATA_URI]), ["task_1"])
    result = run("generate", "a red fox", "-i", str(ref))
    assert result.exit_code == 0, result.output


def test_an_unknown_refs_value_exits_2(api: str, httpx_mock: HTTPXMock, ref: Path) -> None:
    result = run("generate", "a red fox", "-i", str(ref), "--refs", "carrier-pigeon")
    assert result.exit_code == 2
    assert "references must be auto, inline or upload, not 'carrier-pigeon'." in result.stderr
    assert api_requests(httpx_mock) == []


def test_a_base64_refusal_uploads_and_resends_once(
    api: str, httpx_mock: HTTPXMock, ref: Path
) -> None:
    expect_submit(
        httpx_mock,
        body(image_urls=[DATA_URI]),
        status_code=400,
        reply={
            "error": {
                "code": "image_requires_upload",
                "message": "base64 images are not supported; upload them",
            }
        },
    )
    expect_upload(httpx_mock)
    expect_submit(httpx_mock, body(image_urls=["https://cdn.test/ref.png"]), ["task_1"])
    result = run("generate", "a red fox", "-i", str(ref))
    assert result.exit_code == 0, result.output
    assert result.stdout == "task_1\n"
    assert "refused base64 references" in result.stderr
    assert "Later commands upload first" in result.stderr
    first, second = httpx_mock.get_requests(url=SUBMIT_URL)
    assert first.headers["Idempotency-Key"] != second.headers["Idempotency-Key"]


def test_another_400_is_not_taken_for_a_base64_refusal(
    api: str, httpx_mock: HTTPXMock, ref: Path
) -> None:
    expect_submit(
        httpx_mock,
        body(image_urls=[DATA_URI]),
        status_code=400,
        reply={"error": {"message": "prompt rejected by moderation"}},
    )
    result = run("generate", "a red fox", "-i", str(ref))
    assert result.exit_code == 1
    assert "moderation" in result.stderr
    assert len(api_requests(httpx_mock)) == 1
