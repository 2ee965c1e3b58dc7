"""`apimart models`: the list, one model's schema, both reply shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from tests.cli.conftest import API, AUTH, KEY, run

MODELS = [{"id": "gpt-image-2", "object": "model"}, {"id": "flux-2-pro", "object": "model"}]
SCHEMA = {"type": "object", "properties": {"prompt": {"type": "string"}}}


@pytest.mark.parametrize(
    "reply",
    [
        {"object": "list", "data": MODELS},
        {"code": 200, "data": MODELS},
        {"code": 200, "data": {"object": "list", "data": MODELS}},
    ],
    ids=["list", "wrapped", "wrapped-list"],
)
def test_lists_one_id_per_line(api: str, httpx_mock: HTTPXMock, reply: dict[str, Any]) -> None:
    httpx_mock.add_response(method="GET", url=f"{API}/v1/models", match_headers=AUTH, json=reply)
    result = run("models")
    assert result.exit_code == 0, result.output
    assert result.stdout == "gpt-image-2\nflux-2-pro\n"


def test_json_prints_one_object_per_line(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="GET", url=f"{API}/v1/models", json={"object": "list", "data": MODELS}
    )
    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stdout.splitlines()] == MODELS


def test_a_list_that_is_not_a_list_exits_5(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{API}/v1/models", json={"data": "nope"})
    result = run("models")
    assert result.exit_code == 5
    assert "not a list" in result.stderr


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_model_prints_its_input_schema(api: str, httpx_mock: HTTPXMock, wrapped: bool) -> None:
    obj = {"model": "flux-2-pro", "operation": "image_generation", "input_schema": SCHEMA}
    httpx_mock.add_response(
        method="GET",
        url=f"{API}/v1/model-schema?model=flux-2-pro",
        match_headers=AUTH,
        json={"code": 200, "data": obj} if wrapped else obj,
    )
    result = run("models", "flux-2-pro")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**SCHEMA, "operation": "image_generation"}


def test_a_model_without_a_schema_exits_1(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="GET", url=f"{API}/v1/model-schema?model=nope", status_code=404, json={}
    )
    result = run("models", "nope")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "no input schema for the model nope" in result.stderr


def test_type_filters_by_what_each_entry_says_else_by_its_schema(
    api: str, httpx_mock: HTTPXMock, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_DATA_DIR", str(tmp_path / "data"))
    listed = [
        {"id": "gpt-image-2", "operations": ["image_generation"]},
        {"id": "veo-3.1-fast", "supported_endpoint_types": ["video-generation"]},
        {"id": "mystery"},  # says nothing: its schema is asked, once
    ]
    httpx_mock.add_response(
        method="GET", url=f"{API}/v1/models", json={"data": listed}, is_reusable=True
    )
    httpx_mock.add_response(
        method="GET",
        url=f"{API}/v1/model-schema?model=mystery",
        json={"model": "mystery", "operation": "video_generation", "input_schema": SCHEMA},
    )
    videos = run("models", "--type", "video")
    assert videos.exit_code == 0, videos.output
    assert videos.stdout == "veo-3.1-fast\nmystery\n"
    images = run("models", "--type", "image")
    assert images.stdout == "gpt-image-2\n"


def test_an_unknown_type_is_refused_with_nothing_sent(api: str, httpx_mock: HTTPXMock) -> None:
    result = run("models", "--type", "audio")
    assert result.exit_code == 2
    assert "'audio'" in result.stderr and "--type image or --type video" in result.stderr
    assert httpx_mock.get_requests() == []


def test_the_listed_ids_are_kept_for_shell_completion(api: str, httpx_mock: HTTPXMock) -> None:
    from apimart_cli.cache import MODELS_FILE, default_path

    weird = {"id": "$(rm -rf ~)", "object": "model"}  # read by shell scripts: left out
    httpx_mock.add_response(
        method="GET", url=f"{API}/v1/models", json={"object": "list", "data": [*MODELS, weird]}
    )
    assert run("models").exit_code == 0
    kept = default_path().with_name(MODELS_FILE).read_text()
    assert kept == "gpt-image-2\nflux-2-pro\n"


def test_a_model_id_that_echoes_the_key_is_never_kept_for_completion(
    api: str, httpx_mock: HTTPXMock
) -> None:
    """`models.txt` is no home of the key: an id holding it, whole or in part, is left out."""
    from apimart_cli.cache import MODELS_FILE, default_path

    echoed = [{"id": KEY}, {"id": f"m-{KEY[4:]}"}]
    httpx_mock.add_response(
        method="GET", url=f"{API}/v1/models", json={"object": "list", "data": [*MODELS, *echoed]}
    )
    result = run("models")
    assert result.exit_code == 0
    assert KEY[4:12] not in result.stdout
    kept = default_path().with_name(MODELS_FILE).read_text()
    assert kept == "gpt-image-2\nflux-2-pro\n"


def test_a_model_id_with_escape_sequences_is_printed_without_them(
    api: str, httpx_mock: HTTPXMock
) -> None:
    hostile = {"id": "gpt\x1b[2J\x1b]0;owned\x07\x9b31m\nnext"}
    httpx_mock.add_response(
        method="GET", url=f"{API}/v1/models", json={"object": "list", "data": [hostile]}
    )
    result = run("models")
    assert result.exit_code == 0
    assert not any(char in result.stdout for char in "\x1b\x07\x9b")
    assert len(result.stdout.splitlines()) == 1
