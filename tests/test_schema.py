"""Checking a body against a model's input schema: each rule, and the message it gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.cache import Cache
from apimart_cli.client import Client
from apimart_cli.errors import ExitCode, UsageError
from apimart_cli.schema import check_body, fetch_model, input_schema
from tests.helpers.clocks import FakeClock

BASE = "https://api.test"
KEY = "sk-schema-0123456789"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "prompt": {"type": "string", "maxLength": 20},
        "n": {"type": "integer", "minimum": 1, "maximum": 4},
        "quality": {"type": "string", "enum": ["low", "medium", "high"]},
        "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
        "background": {"type": ["string", "null"]},
        "image_urls": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
        "mask_url": {"type": "string", "minLength": 8},
        "strength": {"type": "number", "exclusiveMinimum": 0},
    },
    "required": ["prompt"],
    "additionalProperties": False,
}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m-1", "prompt": "a fox", **fields}


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"n": 4, "quality": "high", "output_compression": 0},
        {"background": None},
        {"image_urls": ["https://x.test/a.png", "https://x.test/b.png"]},
        {"n": 2.0},  # a whole number written as a float is still an integer
        {"strength": 0.5},  # a rule the check does not know is left to the service
    ],
)
def test_a_body_the_schema_accepts_passes(fields: dict[str, Any]) -> None:
    check_body(body(**fields), SCHEMA, "m-1")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"quality": "ultra"},
            'Field "quality" for the model m-1 must be one of "low", "medium", "high" '
            '(got "ultra").',
        ),
        ({"n": 5}, 'Field "n" for the model m-1 must be 1 to 4 (got 5).'),
        ({"n": 0}, 'Field "n" for the model m-1 must be 1 to 4 (got 0).'),
        ({"n": "2"}, 'Field "n" for the model m-1 must be a whole number (got "2").'),
        ({"n": True}, 'Field "n" for the model m-1 must be a whole number (got true).'),
        (
            {"output_compression": 101},
            'Field "output_compression" for the model m-1 must be 0 to 100 (got 101).',
        ),
        (
            {"background": 3},
            'Field "background" for the model m-1 must be a string or null (got 3).',
        ),
        (
            {"image_urls": ["a", "b", "c"]},
            'Field "image_urls" for the model m-1 takes at most 2 items (got 3).',
        ),
        (
            {"image_urls": [1]},
            'Field "image_urls" for the model m-1 item 1 must be a string (got 1).',
        ),
        (
            {"prompt": "x" * 21},
            'Field "prompt" for the model m-1 takes at most 20 characters (got 21).',
        ),
        (
            {"mask_url": "short"},
            'Field "mask_url" for the model m-1 takes at least 8 characters (got 5).',
        ),
        (
            {"seed": 42},
            'The model m-1 takes no field "seed" (its fields: background, image_urls, '
            "mask_url, model, n, output_compression, prompt, quality, strength).",
        ),
    ],
)
def test_a_body_the_schema_refuses_names_the_field_and_what_it_takes(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        check_body(body(**fields), SCHEMA, "m-1")
    assert caught.value.message == message
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.hint == "`apimart models m-1` shows the fields the model takes."


def test_a_missing_required_field_is_named() -> None:
    schema = {**SCHEMA, "required": ["prompt", "mask_url"]}
    with pytest.raises(UsageError) as caught:
        check_body(body(), schema, "m-1")
    assert caught.value.message == 'The model m-1 requires the field "mask_url".'


def test_unknown_fields_pass_where_the_schema_allows_others() -> None:
    check_body(body(seed=42), {**SCHEMA, "additionalProperties": True}, "m-1")
    check_body(
        body(seed=42), {k: v for k, v in SCHEMA.items() if k != "additionalProperties"}, "m-1"
    )


def test_model_is_never_an_unknown_field() -> None:
    schema = {"properties": {"prompt": {"type": "string"}}, "additionalProperties": False}
    check_body(body(), schema, "m-1")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"model": "m-1", "operation": "image_generation", "input_schema": SCHEMA}, SCHEMA),
        (SCHEMA, SCHEMA),  # the schema itself
        ({"model": "m-1"}, None),
        (None, None),
    ],
)
def test_the_input_schema_is_found_in_either_shape(reply: Any, expected: Any) -> None:
    assert input_schema(reply) == expected


@pytest.mark.parametrize("wrapped", [False, True])
def test_the_schema_is_fetched_once_a_day(
    httpx_mock: HTTPXMock, tmp_path: Path, wrapped: bool
) -> None:
    obj = {"model": "m-1", "operation": "image_generation", "input_schema": SCHEMA}
    httpx_mock.add_response(
        method="GET",
        url=f"{BASE}/v1/model-schema?model=m-1",
        match_headers={"Authorization": f"Bearer {KEY}"},
        json={"code": 200, "data": obj} if wrapped else obj,
    )
    clock = FakeClock(1_800_000_000.0)
    cache = Cache(tmp_path / "cache.sqlite3", clock=clock)

    def fetch_schema(client: Client) -> object:
        found = fetch_model(client, cache, "m-1")
        return None if found is None else found.input_schema

    with Client(BASE, KEY) as client:
        assert fetch_schema(client) == SCHEMA
        clock.time += 23 * 3600
        assert fetch_schema(client) == SCHEMA  # from the cache
        assert len(httpx_mock.get_requests()) == 1
        clock.time += 2 * 3600  # more than a day: asked again
        httpx_mock.add_response(
            method="GET", url=f"{BASE}/v1/model-schema?model=m-1", status_code=404
        )
        assert fetch_schema(client) is None
        assert fetch_schema(client) is None  # "none" is remembered too
    assert len(httpx_mock.get_requests()) == 2


HOSTILE_LONG = 1_000


@pytest.mark.parametrize(
    ("schema", "sent"),
    [
        ({"properties": {"d": {"enum": list(range(100_000))}}}, {"d": -1}),
        (
            {"properties": {f"f{i:06d}": {} for i in range(50_000)}, "additionalProperties": False},
            {"other": 1},
        ),
        ({"properties": {}, "required": ["r" * 100_000]}, {}),
        ({"properties": {"d": {"enum": ["e" * 100_000] * 50}}}, {"d": 1}),
    ],
    ids=["huge-enum", "huge-properties", "huge-required-name", "huge-items"],
)
def test_a_hostile_schema_cannot_flood_the_message(schema: dict[str, Any], sent: Any) -> None:
    """A schema from the service with 100,000 allowed values, 50,000 fields or names a
    megabyte long: the message names a few of them and says how many more."""
    with pytest.raises(UsageError) as caught:
        check_body({"model": "m-1", **sent}, {"type": "object", **schema}, "m-1")
    assert len(caught.value.message) < HOSTILE_LONG


def test_a_long_list_of_values_names_the_first_and_counts_the_rest() -> None:
    with pytest.raises(UsageError) as caught:
        check_body(body(d=-1), {"properties": {"d": {"enum": list(range(1000))}}}, "m-1")
    assert "must be one of 0, 1, 2" in caught.value.message
    assert "and 990 more" in caught.value.message
