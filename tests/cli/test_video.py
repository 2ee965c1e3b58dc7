"""Video models: sent where their operation says, saved as videos, refused when unknown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.sandbox.videos import mp4_video
from tests.cli.conftest import API, AUTH, IMAGES, PNG, api_requests, expect_task, run

MODEL = "veo-sandbox"
VIDEOS_URL = f"{API}/v1/videos/generations"
SCHEMA_URL = f"{API}/v1/model-schema?model={MODEL}"
VIDEO = mp4_video(64, 64, 1, "waves at dusk")
INPUT = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string"},
        "duration": {"type": "integer", "enum": [4, 8]},
        "image_urls": {"type": "array", "items": {"type": "string"}},
    },
}


@pytest.fixture(autouse=True)
def _data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIMART_DATA_DIR", str(tmp_path / "data"))


def expect_schema(httpx_mock: HTTPXMock, operation: str | None = "video_generation") -> None:
    obj: dict[str, Any] = {"model": MODEL, "input_schema": INPUT}
    if operation is not None:
        obj["operation"] = operation
    httpx_mock.add_response(method="GET", url=SCHEMA_URL, match_headers=AUTH, json=obj)


def accepted(task_id: str = "task_v1") -> dict[str, Any]:
    return {"code": 200, "data": [{"status": "submitted", "task_id": task_id}]}


def test_a_video_model_is_sent_to_the_videos_endpoint(api: str, httpx_mock: HTTPXMock) -> None:
    expect_schema(httpx_mock)
    sent = {"model": MODEL, "prompt": "waves at dusk", "duration": 4}
    httpx_mock.add_response(
        method="POST", url=VIDEOS_URL, match_headers=AUTH, match_json=sent, json=accepted()
    )
    result = run("generate", "waves at dusk", "--model", MODEL, "--param", "duration=4")
    assert result.exit_code == 0, result.output
    assert result.stdout == "task_v1\n"


def test_a_video_field_its_schema_refuses_sends_nothing(api: str, httpx_mock: HTTPXMock) -> None:
    expect_schema(httpx_mock)
    result = run("generate", "waves", "--model", MODEL, "--param", "duration=5")
    assert result.exit_code == 2
    assert '"duration"' in result.stderr and "4, 8" in result.stderr
    assert all(r.method == "GET" for r in api_requests(httpx_mock))


@pytest.mark.parametrize("operation", ["audio_generation", "image_to_3d"])
def test_an_operation_the_tool_cannot_save_is_refused_before_anything_is_sent(
    api: str, httpx_mock: HTTPXMock, operation: str
) -> None:
    expect_schema(httpx_mock, operation)
    result = run("generate", "a song", "--model", MODEL)
    assert result.exit_code == 2
    assert MODEL in result.stderr and operation in result.stderr
    assert "nothing was sent" in result.stderr
    assert "Traceback" not in result.stderr
    assert [r.method for r in api_requests(httpx_mock)] == ["GET"]  # the schema only


def test_a_model_without_a_schema_goes_to_the_images_endpoint_with_a_note(
    api: str, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="GET", url=SCHEMA_URL, status_code=404, json={})
    httpx_mock.add_response(
        method="POST",
        url=f"{API}/v1/images/generations",
        match_json={"model": MODEL, "prompt": "x"},
        json=accepted(),
    )
    result = run("generate", "x", "--model", MODEL)
    assert result.exit_code == 0, result.output
    assert "no schema" in result.stderr and "images endpoint" in result.stderr


def test_a_video_models_local_references_are_uploaded_whatever_refs_says(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    still = tmp_path / "still.png"
    still.write_bytes(PNG)
    expect_schema(httpx_mock)
    httpx_mock.add_response(
        method="POST",
        url=f"{API}/v1/uploads/images",
        json={"url": "https://cdn.test/still.png", "created_at": 4_000_000_000},
    )
    sent = {"model": MODEL, "prompt": "move", "image_urls": ["https://cdn.test/still.png"]}
    httpx_mock.add_response(method="POST", url=VIDEOS_URL, match_json=sent, json=accepted())
    result = run("generate", "move", "--model", MODEL, "-i", str(still), "--refs", "inline")
    assert result.exit_code == 0, result.output
    assert "makes videos" in result.stderr and "uploading" in result.stderr


def test_wait_saves_the_video_and_says_so(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    expect_schema(httpx_mock)
    httpx_mock.add_response(method="POST", url=VIDEOS_URL, json=accepted())
    url = f"{IMAGES}/v/task_v1.mp4"
    data = {
        "id": "task_v1",
        "status": "completed",
        "cost": 0.4,
        "result": {"videos": [{"url": [url], "expires_at": 4_102_444_800}], "duration": 4},
    }
    expect_task(httpx_mock, data)
    httpx_mock.add_response(
        method="GET", url=url, content=VIDEO, headers={"Content-Type": "video/mp4"}
    )
    out = tmp_path / "out"
    result = run("generate", "waves", "--model", MODEL, "--wait", "-o", str(out))
    assert result.exit_code == 0, result.output
    saved = out / "task_v1_0.mp4"
    assert result.stdout == f"{saved}\n"
    assert saved.read_bytes() == VIDEO  # as served: no provenance chunk in a video
    assert "1 video saved, 0 tasks failed, cost 0.4." in result.stderr
    status = run("history", "--json")
    (record,) = [json.loads(line) for line in status.stdout.splitlines()]
    assert record["fields"]["operation"] == "video_generation"


def test_a_model_without_a_schema_whose_result_holds_a_video_has_it_saved(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    httpx_mock.add_response(method="GET", url=SCHEMA_URL, status_code=404, json={})
    httpx_mock.add_response(method="POST", url=f"{API}/v1/images/generations", json=accepted())
    url = f"{IMAGES}/v/clip"
    data = {"id": "task_v1", "status": "completed", "result": {"videos": [{"url": url}]}}
    expect_task(httpx_mock, data)
    httpx_mock.add_response(
        method="GET", url=url, content=VIDEO, headers={"Content-Type": "application/octet-stream"}
    )
    out = tmp_path / "out"
    result = run("generate", "x", "--model", MODEL, "--wait", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert (out / "task_v1_0.mp4").read_bytes() == VIDEO


def test_status_and_download_of_a_video_task(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    url = f"{IMAGES}/v/task_v1.mp4"
    data = {
        "id": "task_v1",
        "status": "completed",
        "result": {"videos": [{"url": url, "duration": 8}]},
    }
    expect_task(httpx_mock, data, reusable=True)
    status = run("status", "task_v1")
    assert status.exit_code == 0, status.output
    assert status.stdout == "task_v1\tcompleted\t\t1 video(s), 8 s\n"
    httpx_mock.add_response(
        method="GET", url=url, content=VIDEO, headers={"Content-Type": "video/mp4"}
    )
    out = tmp_path / "out"
    download = run("download", "task_v1", "-o", str(out))
    assert download.exit_code == 0, download.output
    assert download.stdout == f"{out / 'task_v1_0.mp4'}\n"
    assert "1 video saved" in download.stderr
