"""What the sandbox accepts: submissions checked as the API checks them, models and their schemas.

gpt-image-2 is checked by the API's own table (`apimart_cli.sizes`); the other
models by the JSON Schema `/v1/model-schema` serves for them, so a client that
reads the schema and the sandbox agree by construction.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from apimart_cli.constants import (
    DEFAULT_MODEL,
    IMAGE_OPERATION,
    MAX_IMAGES_PER_TASK,
    MAX_REFERENCES,
    VIDEO_OPERATION,
)
from apimart_cli.errors import UsageError
from apimart_cli.images import SNIFF_BYTES, image_dimensions
from apimart_cli.sizes import RATIOS, RESOLUTIONS, parse_size, pixels_for

DEFAULT_PIXELS = (1024, 1024)
OPERATION = IMAGE_OPERATION
# The sandbox's video model, and one that makes what no client can save (speech).
VIDEO_MODEL = "veo-3.1-fast"
SPEECH_MODEL = "sandbox-speech"
VIDEO_SECONDS = (4, 8)
VIDEO_PIXELS = {"16:9": (128, 72), "9:16": (72, 128)}
# The message of the 400 that refuses base64 references (`SandboxConfig.refuse_base64`),
# in the words of the vendor's upload page.
BASE64_REFUSED = (
    "image_requires_upload: we no longer support passing base64 image data directly in "
    "generation APIs. Please upload images with POST /v1/uploads/images and pass the URL."
)
_DATA_URI_RE = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)

_IMAGE_URLS = {"type": "array", "items": {"type": "string"}, "maxItems": MAX_REFERENCES}
SCHEMAS: dict[str, dict[str, Any]] = {
    DEFAULT_MODEL: {
        "type": "object",
        "properties": {
            "model": {"type": "string", "enum": [DEFAULT_MODEL]},
            "prompt": {"type": "string"},
            "n": {"type": "integer", "minimum": 1, "maximum": MAX_IMAGES_PER_TASK},
            "size": {"type": "string", "description": "auto, a ratio such as 16:9, or WxH"},
            "resolution": {"type": "string", "enum": list(RESOLUTIONS)},
            "image_urls": _IMAGE_URLS,
            "official_fallback": {"type": "boolean"},
        },
        "required": ["model", "prompt"],
    },
    # As the vendor's page for the model documents it: gpt-image-2's ratios, 1k/2k/4k.
    "gpt-image-2-official": {
        "type": "object",
        "properties": {
            "model": {"type": "string", "enum": ["gpt-image-2-official"]},
            "prompt": {"type": "string", "maxLength": 32000},
            "n": {"type": "integer", "minimum": 1, "maximum": 4},
            "size": {
                "type": "string",
                "enum": ["auto", *RATIOS, "1024x1024", "1536x1024", "1024x1536"],
            },
            "resolution": {"type": "string", "enum": list(RESOLUTIONS)},
            "quality": {"type": "string", "enum": ["low", "medium", "high", "auto"]},
            "background": {"type": "string", "enum": ["transparent", "opaque", "auto"]},
            "output_format": {"type": "string", "enum": ["png", "jpeg", "webp"]},
            "output_compression": {"type": "integer", "minimum": 0, "maximum": 100},
            "moderation": {"type": "string", "enum": ["low", "auto"]},
            "image_urls": _IMAGE_URLS,
            "mask_url": {"type": "string"},
        },
        "required": ["model", "prompt"],
        "additionalProperties": False,
    },
    "gemini-2.5-flash-image-preview": {
        "type": "object",
        "properties": {
            "model": {"type": "string", "enum": ["gemini-2.5-flash-image-preview"]},
            "prompt": {"type": "string", "maxLength": 8000},
            "n": {"type": "integer", "minimum": 1, "maximum": 1},
            "size": {"type": "string", "enum": list(RATIOS)},
            "image_urls": {**_IMAGE_URLS, "maxItems": 3},
        },
        "required": ["model", "prompt"],
        "additionalProperties": False,
    },
    "gemini-3.1-flash-image-preview": {
        "type": "object",
        "properties": {
            "model": {"type": "string", "enum": ["gemini-3.1-flash-image-preview"]},
            "prompt": {"type": "string", "maxLength": 8000},
            "n": {"type": "integer", "minimum": 1, "maximum": 4},
            "size": {"type": "string", "enum": [*RATIOS, "1:4", "4:1", "1:8", "8:1"]},
            "resolution": {"type": "string", "enum": ["0.5K", "1K", "2K", "4K"]},
            "image_urls": {**_IMAGE_URLS, "maxItems": 14},
        },
        "required": ["model", "prompt"],
        "additionalProperties": False,
    },
}
# How long a client may keep a model's docs (`cache_ttl_seconds` of `/v1/model-docs`).
DOCS_TTL_SECONDS = 3600

SCHEMAS[VIDEO_MODEL] = {
    "type": "object",
    "properties": {
        "model": {"type": "string", "enum": [VIDEO_MODEL]},
        "prompt": {"type": "string", "maxLength": 4000},
        "duration": {"type": "integer", "enum": list(VIDEO_SECONDS)},
        "aspect_ratio": {"type": "string", "enum": list(VIDEO_PIXELS)},
        "image_urls": {**_IMAGE_URLS, "maxItems": 1},
    },
    "required": ["model", "prompt"],
    "additionalProperties": False,
}
SCHEMAS[SPEECH_MODEL] = {
    "type": "object",
    "properties": {"model": {"type": "string"}, "prompt": {"type": "string"}},
    "required": ["model", "prompt"],
}
OPERATIONS = {VIDEO_MODEL: VIDEO_OPERATION, SPEECH_MODEL: "speech_generation"}
MODEL_CREATED = 1_767_225_600  # when the sandbox says its models appeared


def operation_of(model: object) -> str:
    """What a model makes, as its schema says."""
    return OPERATIONS.get(model, OPERATION) if isinstance(model, str) else OPERATION


def models_reply() -> dict[str, Any]:
    """`GET /v1/models`."""
    return {
        "object": "list",
        "data": [
            {
                "id": model,
                "object": "model",
                "created": MODEL_CREATED,
                "owned_by": "apimart",
                "operations": [operation_of(model)],
            }
            for model in SCHEMAS
        ],
    }


def docs_reply(model: str, base_url: str, now: float) -> dict[str, Any] | None:
    """`GET /v1/model-docs?model=ID` (unwrapped), its Markdown made from the model's
    schema; None for a model the sandbox does not serve."""
    schema = SCHEMAS.get(model)
    if schema is None:
        return None
    rows = []
    for name, rule in schema["properties"].items():
        allowed = ", ".join(map(str, rule["enum"])) if "enum" in rule else ""
        bounds = " to ".join(str(rule[k]) for k in ("minimum", "maximum") if k in rule)
        required = "yes" if name in schema.get("required", ()) else ""
        rows.append(f"| `{name}` | {rule.get('type', '')} | {required} | {allowed or bounds} |")
    markdown = "\n".join(
        [
            f"# {model}",
            "",
            f"`POST /v1/images/generations` with `model: {model}` (sandbox documentation).",
            "",
            "| field | type | required | values |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    return {
        "object": "model.documentation",
        "model": model,
        "doc_url": f"{base_url}/docs/{model}",
        "markdown_url": f"{base_url}/docs/{model}.md",
        "markdown": markdown,
        "fetched_at": int(now),
        "cache_ttl_seconds": DOCS_TTL_SECONDS,
        "stale": False,
    }


def schema_reply(model: str) -> dict[str, Any] | None:
    """`GET /v1/model-schema?model=ID`, or None for a model the sandbox does not serve."""
    schema = SCHEMAS.get(model)
    if schema is None:
        return None
    return {"model": model, "operation": operation_of(model), "input_schema": schema}


# --- Submissions ------------------------------------------------------------------------


def validate_submission(
    body: Any, refuse_base64: bool = False, operation: str = OPERATION
) -> str | None:
    """What is wrong with a submission's JSON body, sent to the endpoint of `operation`,
    in the API's words, or None."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    model = body.get("model")
    if isinstance(model, str) and model in SCHEMAS and operation_of(model) != operation:
        return f"unsupported_generation_model: {model} makes {operation_of(model)}, not {operation}"
    if operation == VIDEO_OPERATION and _has_data_uri(body):
        return "image_requires_upload: upload reference images and pass their URLs"
    if model == DEFAULT_MODEL:
        problem = _default_model_problem(body)
    elif isinstance(model, str) and model in SCHEMAS:
        problem = schema_problem(SCHEMAS[model], body)
    else:
        return f"model must be one of {', '.join(SCHEMAS)} (see GET /v1/models)"
    problem = problem or _image_urls_problem(body.get("image_urls", []))
    if problem is None and refuse_base64 and _has_data_uri(body):
        return BASE64_REFUSED
    return problem


def _default_model_problem(body: dict[str, Any]) -> str | None:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return "prompt is required and must be a non-empty string"
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES_PER_TASK:
        return f"n must be an integer from 1 to {MAX_IMAGES_PER_TASK}"
    if "size" in body and not _valid_size(body["size"]):
        return f"invalid size {body['size']!r}: use auto, a ratio such as 16:9, or WxH"
    if body.get("resolution", "1k") not in RESOLUTIONS:
        return f"resolution must be one of {', '.join(RESOLUTIONS)}"
    if not isinstance(body.get("official_fallback", False), bool):
        return "official_fallback must be a boolean"
    return None


def _valid_size(size: Any) -> bool:
    if not isinstance(size, str):
        return False
    try:
        # Exact spelling: "auto", "16:9", "1536x864"; a tiny size is the client's to refuse.
        return parse_size(size, force=True).value == size
    except UsageError:
        return False


def _image_urls_problem(urls: Any) -> str | None:
    if not isinstance(urls, list):
        return "image_urls must be a list of strings"
    if len(urls) > MAX_REFERENCES:
        return f"image_urls exceeds max {MAX_REFERENCES}"
    for i, url in enumerate(urls):
        is_url = isinstance(url, str) and (
            url.startswith(("http://", "https://")) or _DATA_URI_RE.match(url)
        )
        if not is_url:
            return f"image_urls[{i}] must be an http(s) URL or a data:image/...;base64, URI"
    return None


def _has_data_uri(body: dict[str, Any]) -> bool:
    urls = [*body.get("image_urls", []), body.get("mask_url")]
    return any(isinstance(url, str) and _DATA_URI_RE.match(url) for url in urls)


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def schema_problem(schema: dict[str, Any], body: dict[str, Any]) -> str | None:
    """What is wrong with `body` by a model's schema (the subset `/v1/model-schema` uses)."""
    for name in schema.get("required", []):
        if name not in body:
            return f"{name} is required"
    properties: dict[str, Any] = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(body) - set(properties))
        if unknown:
            return f"unknown field {unknown[0]!r}: this model accepts {', '.join(properties)}"
    for name, value in body.items():
        rule = properties.get(name)
        problem = _value_problem(name, rule, value) if rule else None
        if problem:
            return problem
    return None


def _value_problem(name: str, rule: dict[str, Any], value: Any) -> str | None:
    kind = rule.get("type")
    if kind and not _is_type(value, kind):
        return f"{name} must be of type {kind}"
    if "enum" in rule and value not in rule["enum"]:
        return f"{name} must be one of {', '.join(map(str, rule['enum']))}"
    if "minimum" in rule and value < rule["minimum"]:
        return f"{name} must be at least {rule['minimum']}"
    if "maximum" in rule and value > rule["maximum"]:
        return f"{name} must be at most {rule['maximum']}"
    if "maxLength" in rule and len(value) > rule["maxLength"]:
        return f"{name} must be at most {rule['maxLength']} characters"
    if "maxItems" in rule and len(value) > rule["maxItems"]:
        return f"{name} exceeds max {rule['maxItems']}"
    item_kind = rule.get("items", {}).get("type")
    if item_kind and any(not _is_type(item, item_kind) for item in value):
        return f"{name} must be a list of {item_kind}s"
    return None


def _is_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "boolean":
        return False
    return isinstance(value, _JSON_TYPES.get(kind, (object,)))


def output_pixels(body: dict[str, Any]) -> tuple[int, int]:
    """The pixels a valid submission's images get."""
    references = body.get("image_urls") or []
    if "size" not in body and references:
        return _data_uri_dimensions(references[0]) or DEFAULT_PIXELS
    try:
        return pixels_for(body.get("size"), body.get("resolution")) or DEFAULT_PIXELS
    except (UsageError, KeyError):  # another model's size ("auto" pixels, a ratio of its own)
        return DEFAULT_PIXELS


def _data_uri_dimensions(url: str) -> tuple[int, int] | None:
    match = _DATA_URI_RE.match(url)
    if not match:
        return None
    # Enough base64 for SNIFF_BYTES of image, cut to a multiple of four characters.
    encoded = url[match.end() : match.end() + SNIFF_BYTES * 4 // 3 // 4 * 4]
    try:
        return image_dimensions(base64.b64decode(encoded))
    except (binascii.Error, ValueError):
        return None


class TokenBucket:
    """Allows `rate` submissions per second on average, in bursts of up to `rate`."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0 if one was there, else the seconds until one will be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
