"""A request checked against a model's input schema, for the models other than gpt-image-2.

The service describes each model's body as a JSON Schema (`GET /v1/model-schema`).
Only what it says about each field is checked, before anything is sent: `type`,
`enum`, `minimum`/`maximum`, `minItems`/`maxItems`, `minLength`/`maxLength`,
`items`, `required`, and unknown fields where `additionalProperties` is false.
What the subset cannot judge (`anyOf`, `$ref`...) is left to the service.

The schema's `operation` says what the model makes, and so where it is sent:
`image_generation` to the images endpoint, `video_generation` to the videos
endpoint. A model that makes anything else is refused before anything is sent:
the tool cannot check and save what it would pay for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apimart_cli.constants import GENERATION_PATHS, IMAGE_OPERATION
from apimart_cli.errors import UsageError

if TYPE_CHECKING:
    from apimart_cli.cache import Cache
    from apimart_cli.client import Client

# Fields every body carries whatever the schema says: the model routes the request.
_ALWAYS_SENT = frozenset({"model"})
_TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
    "null": "null",
}


def input_schema(reply: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The JSON Schema of the body, from the service's `{model, operation, input_schema}`
    object (or from a reply that is the schema itself)."""
    if not isinstance(reply, Mapping):
        return None
    schema = reply.get("input_schema", reply if "properties" in reply else None)
    return schema if isinstance(schema, Mapping) else None


@dataclass(frozen=True)
class ModelSchema:
    """What `/v1/model-schema` says of a model: what it makes, and its body's schema."""

    operation: str | None  # None where the reply names none
    input_schema: Mapping[str, Any] | None

    def kept(self) -> dict[str, Any]:
        """What the cache keeps of it."""
        return {"operation": self.operation, "input_schema": self.input_schema}

    def checked_operation(self, model: str) -> str:
        """The operation, where the tool can save what it makes; else a UsageError (exit 2)."""
        operation = self.operation or IMAGE_OPERATION
        if operation not in GENERATION_PATHS:
            raise UsageError(
                f"The model {model} makes {_show(operation)}, which this tool cannot check "
                "and save; nothing was sent.",
                "`apimart models --type image` and `apimart models --type video` list the "
                "models it can use.",
            )
        return operation


def model_schema(reply: Mapping[str, Any] | None) -> ModelSchema | None:
    """The service's `{model, operation, input_schema}` object read; None if it holds nothing."""
    schema = input_schema(reply)
    operation = reply.get("operation") if isinstance(reply, Mapping) else None
    if schema is None and not isinstance(operation, str):
        return None
    return ModelSchema(operation if isinstance(operation, str) else None, schema)


def fetch_model(client: Client, cache: Cache, model: str) -> ModelSchema | None:
    """The model's operation and input schema, kept in the cache for a day; None where
    the service has no schema for it."""
    found, kept = cache.schema(client.base_url, model)
    # A kept entry without its operation is from before operations were kept: asked again.
    if found and (kept is None or "input_schema" in kept):
        return model_schema(kept)
    read = model_schema(client.model_schema(model))
    kept = None if read is None else read.kept()
    cache.remember_schema(client.base_url, model, kept)
    return read


def check_body(body: Mapping[str, Any], schema: Mapping[str, Any], model: str) -> None:
    """Raise a UsageError (exit 2) naming the first field `schema` refuses, and what it takes."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, Mapping) else {}
    hint = f"`apimart models {model}` shows the fields the model takes."
    required = schema.get("required")
    for name in required if isinstance(required, list) else ():
        if isinstance(name, str) and name not in body:
            raise UsageError(f"The model {model} requires the field {_show(name)}.", hint)
    if schema.get("additionalProperties") is False:
        for name in body:
            if name not in properties and name not in _ALWAYS_SENT:
                known = _listed([_show(str(key))[1:-1] for key in sorted(properties)])
                raise UsageError(
                    f'The model {model} takes no field "{name}" (its fields: {known}).', hint
                )
    for name, value in body.items():
        rule = properties.get(name)
        if isinstance(rule, Mapping):
            problem = _problem(value, rule)
            if problem:
                raise UsageError(f'Field "{name}" for the model {model} {problem}.', hint)


def _problem(value: Any, rule: Mapping[str, Any]) -> str | None:
    """What is wrong with `value` under `rule`, as the end of a sentence; None if nothing."""
    expected = rule.get("type")
    types = [expected] if isinstance(expected, str) else expected
    if isinstance(types, list) and types and not any(_is_type(value, t) for t in types):
        names = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in types)
        return f"must be {names} (got {_show(value)})"
    enum = rule.get("enum")
    if isinstance(enum, list) and enum and value not in enum:
        return f"must be one of {_listed([_show(item) for item in enum])} (got {_show(value)})"
    if _is_number(value):
        low, high = rule.get("minimum"), rule.get("maximum")
        if (_is_number(low) and value < low) or (_is_number(high) and value > high):
            return f"must be {_range(low, high)} (got {_show(value)})"
    if isinstance(value, str):
        problem = _count_problem(len(value), rule, "minLength", "maxLength", "characters")
        if problem:
            return problem
    if isinstance(value, list):
        problem = _count_problem(len(value), rule, "minItems", "maxItems", "items")
        if problem:
            return problem
        items = rule.get("items")
        if isinstance(items, Mapping):
            for index, item in enumerate(value):
                problem = _problem(item, items)
                if problem:
                    return f"item {index + 1} {problem}"
    return None


def _count_problem(
    count: int, rule: Mapping[str, Any], low_key: str, high_key: str, unit: str
) -> str | None:
    low: Any = rule.get(low_key)
    high: Any = rule.get(high_key)
    if (_is_number(low) and count < low) or (_is_number(high) and count > high):
        return f"takes {_range(low, high)} {unit} (got {count})"
    return None


def _range(low: Any, high: Any) -> str:
    if _is_number(low) and _is_number(high):
        return f"{_show(low)} to {_show(high)}"
    return f"at least {_show(low)}" if _is_number(low) else f"at most {_show(high)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_type(value: Any, name: object) -> bool:
    if name == "integer":
        return _is_number(value) and float(value).is_integer()
    if name == "number":
        return _is_number(value)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "array":
        return isinstance(value, Sequence) and not isinstance(value, str)
    if name == "object":
        return isinstance(value, Mapping)
    if name == "null":
        return value is None
    return True  # a type this check does not know: the service judges it


# How many of a schema's fields or allowed values a message names (the service's schema
# may list thousands): the rest are counted.
_NAMED_ITEMS = 10


def _listed(items: Sequence[str]) -> str:
    """The first items, comma-separated, and how many more there are."""
    if not items:
        return "none listed"
    shown = ", ".join(items[:_NAMED_ITEMS])
    rest = len(items) - _NAMED_ITEMS
    return f"{shown} and {rest} more" if rest > 0 else shown


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:60] + "…"


def model_docs(client: Client, model: str, *, warn: Callable[[str], None]) -> Mapping[str, Any]:
    """The model's documentation (`GET /v1/model-docs`), kept in the cache for the
    `cache_ttl_seconds` its reply gives; exit 1 if the service has none."""
    import time

    from apimart_cli.cache import Cache
    from apimart_cli.errors import TaskError

    if not model.strip():
        raise UsageError("The model name is empty.", "`apimart models` lists them.")
    cache = Cache(warn=warn, deadline=client.deadline)
    kept = cache.note(client.base_url, f"docs:{model}")
    if isinstance(kept, dict):
        return kept
    docs = client.model_docs(model)
    if docs is None:
        raise TaskError(
            f"The service has no documentation for the model {model}.",
            "`apimart models` lists the models it serves.",
        )
    ttl = docs.get("cache_ttl_seconds")
    if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and 0 < ttl < 1e9:
        cache.remember_note(client.base_url, f"docs:{model}", dict(docs), time.time() + ttl)
    return docs


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable_markdown(docs: Mapping[str, Any]) -> str:
    """The docs' Markdown as it may go to a terminal: no control characters but line
    breaks and tabs (an escape sequence from the service would drive the terminal)."""
    return _CONTROL_RE.sub("", str(docs.get("markdown", ""))).rstrip("\n")


MODEL_KINDS = ("image", "video")
# The fields of a `/v1/models` entry that may say what a model makes.
_KIND_FIELDS = ("operations", "operation", "supported_endpoint_types", "category", "type")


def entry_kinds(entry: Mapping[str, Any]) -> set[str]:
    """What a `/v1/models` entry says its model makes ("image", "video"); empty if it
    says nothing."""
    words: list[str] = []
    for name in _KIND_FIELDS:
        value = entry.get(name)
        values = value if isinstance(value, list) else [value]
        words += [item.lower() for item in values if isinstance(item, str)]
    return {kind for kind in MODEL_KINDS for word in words if kind in word}


def models_of_kind(
    client: Client, models: Sequence[Mapping[str, Any]], kind: str, *, warn: Callable[[str], None]
) -> list[Mapping[str, Any]]:
    """The entries of `models` that make `kind`: by what each entry says, else by its
    schema's operation (asked once a day per model, as the checks ask)."""
    from apimart_cli.cache import Cache

    if kind not in MODEL_KINDS:
        raise UsageError(f"Unknown model type {kind[:40]!r}.", "Give --type image or --type video.")
    cache: Cache | None = None
    chosen = []
    for entry in models:
        kinds = entry_kinds(entry)
        if not kinds:
            cache = cache or Cache(warn=warn, deadline=client.deadline)
            found = fetch_model(client, cache, str(entry["id"]))
            operation = (found.operation if found else None) or IMAGE_OPERATION
            kinds = {operation.split("_", 1)[0]}
        if kind in kinds:
            chosen.append(entry)
    return chosen


def model_info(client: Client, model: str, *, warn: Callable[[str], None]) -> Mapping[str, Any]:
    """The model's input schema, fetched afresh (and kept for the checks); exit 1 if none."""
    from apimart_cli.cache import Cache
    from apimart_cli.errors import TaskError

    if not model.strip():
        raise UsageError("The model name is empty.", "`apimart models` lists them.")
    read = model_schema(client.model_schema(model))
    kept = None if read is None else read.kept()
    Cache(warn=warn, deadline=client.deadline).remember_schema(client.base_url, model, kept)
    if read is None or read.input_schema is None:
        raise TaskError(
            f"The service has no input schema for the model {model}.",
            "`apimart models` lists the models it serves.",
        )
    # The operation goes with it, so that one can see what the model makes.
    return {**read.input_schema, **({"operation": read.operation} if read.operation else {})}
