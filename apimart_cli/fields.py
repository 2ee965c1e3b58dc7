"""gpt-image-2's request fields, each declared once.

A row says what a field is called (the keyword `payload.build_request` takes, the
key of a batch line, the argument of the MCP `generate` tool), what JSON type it
takes, the body field it sets, the `generate` option that sets it, and its help.
From this table come the type check every request gets (`check_types`), the
fields `--param` may not set, batch's job keys and the MCP tool's schema; the
`generate` options are tested against it. Adding an option is a row here and
its value check in `payload.build_request`, and the option on `generate`.

Standard library only: this module is on the `generate` path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apimart_cli.constants import DEFAULT_MODEL, MAX_IMAGES_PER_TASK, MAX_REFERENCES
from apimart_cli.errors import UsageError
from apimart_cli.sizes import RATIOS


@dataclass(frozen=True)
class RequestField:
    name: str
    type: type  # what its JSON value must be: str, int, bool, list (of str) or dict
    option: str  # the `generate` option (or argument) that sets it
    help: str
    body: str | None = None  # the body field it sets; None: it shapes how others are read
    default: Any = None  # None: not sent unless given


FIELDS: tuple[RequestField, ...] = (
    RequestField("prompt", str, "the prompt argument", "What to draw.", body="prompt"),
    RequestField(
        "size",
        str,
        "-s/--size",
        f"auto, a ratio ({' '.join(RATIOS)}) or pixels WxH.",
        body="size",
    ),
    RequestField("resolution", str, "-r/--resolution", "1k, 2k or 4k.", body="resolution"),
    RequestField("n", int, "-n/--n", f"Images to make, 1 to {MAX_IMAGES_PER_TASK}.", "n"),
    RequestField(
        "images",
        list,
        "-i/--image",
        "Reference images: local files, http(s) URLs or data: URIs "
        f"(image-to-image). At most {MAX_REFERENCES}.",
        body="image_urls",
    ),
    RequestField(
        "official_fallback",
        bool,
        "--official-fallback",
        "Let the service fall back to the official channel.",
        body="official_fallback",
        default=False,
    ),
    RequestField(
        "force_size",
        bool,
        "--force-size",
        "Send a pixel size under 64 a side (as 16x9) as given.",
        default=False,
    ),
    RequestField(
        "model",
        str,
        "--model",
        "The model; another than gpt-image-2 is checked against its schema.",
        body="model",
        default=DEFAULT_MODEL,
    ),
    RequestField(
        "params",
        dict,
        "--param",
        'Extra body fields the model accepts (see its schema), e.g. {"quality": "high"}.',
    ),
)
BY_NAME = {field.name: field for field in FIELDS}
# Body fields a field sets, and the option to use instead of an extra field (--param).
OPTION_FIELDS = {field.body: field.option for field in FIELDS if field.body is not None}

_TYPE_NAMES = {
    str: "a string",
    int: "a whole number",
    list: "a list",
    bool: "true or false",
    dict: "an object",
}


def check_types(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Fields as JSON gives them (a batch line, an agent's call), each of the type its
    row says; a null is a field not given. UsageError naming the first that is not."""
    given = {key: value for key, value in fields.items() if value is not None}
    unknown = sorted(set(given) - set(BY_NAME))
    if unknown:
        known = ", ".join(BY_NAME)
        raise UsageError(f"unknown field {', '.join(map(repr, unknown))} (the fields are {known})")
    if "prompt" not in given:
        raise UsageError('no "prompt"')
    for key, value in given.items():
        expected = BY_NAME[key].type
        if not isinstance(value, expected) or isinstance(value, bool) is not (expected is bool):
            raise UsageError(f'"{key}" must be {_TYPE_NAMES[expected]}, not {json.dumps(value)}')
    if not all(isinstance(image, str) for image in given.get("images", [])):
        raise UsageError('"images" must be a list of strings')
    return given
