"""The generation request: check it against the API's limits, then stream its JSON body.

Everything the API page states as a limit is checked in `build_request`, before
anything is sent. The body's exact length is known in advance (for
Content-Length) and the body itself is produced piece by piece: each local file
is read and base64-encoded a chunk at a time, so 16 references of 15 MiB go out
with memory flat. Standard library only: this module is on the `generate` path.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from apimart_cli.constants import (
    DEFAULT_MODEL,
    IMAGE_OPERATION,
    MAX_IMAGES_PER_TASK,
    MAX_REFERENCE_BYTES,
    MAX_REFERENCES,
    MAX_REFERENCES_TOTAL_BYTES,
)
from apimart_cli.errors import UsageError
from apimart_cli.fields import OPTION_FIELDS, check_types
from apimart_cli.images import SNIFF_BYTES, sniff_mime
from apimart_cli.sizes import parse_resolution, parse_size

MIB = 1024 * 1024
# Raw bytes read from a file at a time. A multiple of 3, so each chunk's base64
# stands alone (padding only ever at the very end): 192 KiB in, 256 KiB out.
READ_CHUNK_BYTES = 3 * 64 * 1024
# Base64 characters of an inlined image kept in summaries (dry runs, history).
SUMMARY_CHARS = 16
# The longest piece of a user's value quoted back in an error message.
QUOTE_CHARS = 60
# The longest file name shown as typed in an error message (a longer one is quoted, cut).
NAME_CHARS = 400
# The longest model name: ids run to some 40 characters; a longer one is a mistake,
# and one of a megabyte does not fit in the query that asks for its schema.
MAX_MODEL_CHARS = 200

# What comes before the comma of a data URI we accept (the types the API takes).
_DATA_HEADER_RE = re.compile(r"data:(image/(?:png|jpeg|webp|gif));base64", re.IGNORECASE)
_URL_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_IMAGE_HINT = "Give a PNG, JPEG, WebP or GIF file, an http(s):// URL, or a data:image/... URI."


@dataclass(frozen=True)
class Reference:
    """One entry of image_urls: a URL, a data: URI, or a local file sent as a data URI."""

    source: str
    kind: Literal["url", "data", "file"]
    path: Path | None = None
    mime: str | None = None
    size: int = 0

    def encoded_length(self) -> int:
        """Bytes of the JSON string value (without quotes) this reference becomes."""
        if self.kind == "file":
            return len(self._data_prefix()) + 4 * ((self.size + 2) // 3)
        return len(_json_string(self.source))

    def iter_encoded(self, chunk_size: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
        """The bytes of `encoded_length`, streamed; a file is re-read on every call."""
        if self.kind == "file":
            yield self._data_prefix()
            yield from _iter_file_base64(self._file_path(), self.size, chunk_size)
            return
        step = max(1, chunk_size)
        for start in range(0, len(self.source), step):
            # JSON escaping is per character, so escaping slices escapes the whole.
            yield _json_string(self.source[start : start + step])

    def summary(self) -> str:
        """The URL, or the data URI shortened to its first base64 characters and size."""
        if self.kind == "url":
            return self.source
        if self.kind == "data":
            head = self.source.partition(",")[2][:SUMMARY_CHARS]
            return f"data:{self.mime};base64,{head}…({self.size} bytes)"
        return f"data:{self.mime};base64,{self._file_head()}…({self.size} bytes from {self.path})"

    def _data_prefix(self) -> bytes:
        return f"data:{self.mime};base64,".encode("ascii")

    def _file_path(self) -> Path:
        return self.path if self.path is not None else Path(self.source).expanduser()

    def _file_head(self) -> str:
        """The first base64 characters of the file, or nothing if it cannot be read now."""
        try:
            with self._file_path().open("rb") as file:
                head = file.read(SUMMARY_CHARS // 4 * 3)
        except OSError:
            return ""
        return base64.b64encode(head).decode("ascii")


def resolve_reference(text: str) -> Reference:
    """Read one `--image` value: an http(s) URL, a data: URI, or else a local path."""
    if not text.strip():
        raise UsageError("A reference image value is empty.", _IMAGE_HINT)
    _check_utf8(text, f"Reference image {_quote(text)}")
    if text[:5].lower() == "data:":
        return _data_reference(text)
    if _URL_SCHEME_RE.match(text):
        return _url_reference(text)
    return _file_reference(text)


def _url_reference(text: str) -> Reference:
    """An http(s) URL, passed through unchanged; any other scheme is refused."""
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        raise UsageError(
            f"Unsupported reference URL {_quote(text)}: only http:// and https:// are accepted.",
            "Download the image and give its path, or give an http(s):// URL.",
        )
    if not parts.netloc:
        raise UsageError(f"Reference URL {_quote(text)} has no host.", _IMAGE_HINT)
    if not text.isprintable() or any(char.isspace() for char in text):
        raise UsageError(
            f"Reference URL {_quote(text)} has spaces or control characters.",
            "Percent-encode them (a space is %20), or give the file's path.",
        )
    return Reference(text, "url")


def _data_reference(text: str) -> Reference:
    """A `data:image/<type>;base64,<data>` URI, passed through unchanged."""
    header, comma, data = text.partition(",")
    header_match = _DATA_HEADER_RE.fullmatch(header)
    if not comma or not header_match:
        raise UsageError(
            f"Invalid data URI {_quote(text)}.",
            "Use data:image/(png|jpeg|webp|gif);base64,<data>, or give the file's path.",
        )
    if not data or len(data) % 4 or not _BASE64_RE.fullmatch(data):
        raise UsageError(
            f"Invalid base64 in data URI {_quote(text)}.",
            "Encode the image with standard base64 (A-Z a-z 0-9 + /, '=' padding, no spaces).",
        )
    padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    size = len(data) // 4 * 3 - padding
    _check_image_size(size, f"The data URI {_quote(text)}")
    return Reference(text, "data", mime=header_match.group(1).lower(), size=size)


def _file_reference(text: str) -> Reference:
    """A local file: it must exist, be readable, fit the limit and be an image by its bytes."""
    name = _name(text)
    try:
        path = Path(text).expanduser()
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError, RuntimeError) as exc:
        raise UsageError(f"Reference image not found: {name}", _IMAGE_HINT) from exc
    except (OSError, ValueError) as exc:
        raise _unreadable(name, exc) from exc
    if stat.S_ISDIR(info.st_mode):
        raise UsageError(f"Reference image {name} is a directory.", _IMAGE_HINT)
    if not stat.S_ISREG(info.st_mode):
        raise UsageError(f"Reference image {name} is not a regular file.", _IMAGE_HINT)
    _check_image_size(info.st_size, f"Reference image {name}")
    try:
        with path.open("rb") as file:
            mime = sniff_mime(file.read(SNIFF_BYTES))
    except OSError as exc:
        raise _unreadable(name, exc) from exc
    if mime is None:
        raise UsageError(
            f"Reference image {name} is not a PNG, JPEG, WebP or GIF image (judged by its bytes).",
            "Convert it to PNG or JPEG, or give an http(s):// URL.",
        )
    return Reference(text, "file", path=path, mime=mime, size=info.st_size)


def _iter_file_base64(path: Path, size: int, chunk_size: int) -> Iterator[bytes]:
    """Base64 of a file read in multiples of 3 bytes; refuses a file no longer `size` long."""
    for chunk in iter_file(path, size, max(3, chunk_size - chunk_size % 3)):
        yield base64.b64encode(chunk)


def iter_file(path: Path, size: int, chunk_size: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
    """A file's bytes in chunks of `chunk_size`; refuses a file that is no longer `size` long."""
    step = max(1, chunk_size)
    try:
        with path.open("rb") as file:
            if os.fstat(file.fileno()).st_size != size:
                raise _changed(path, size)
            remaining = size
            while remaining:
                wanted = min(step, remaining)
                chunk = file.read(wanted)
                remaining -= wanted
                # Checked before the chunk goes out, so a changed file never
                # yields a body that agrees with Content-Length.
                if len(chunk) != wanted or (not remaining and file.read(1)):
                    raise _changed(path, size)
                yield chunk
    except OSError as exc:
        raise _unreadable(str(path), exc) from exc


@dataclass(frozen=True)
class GenerationRequest:
    """A checked generation request; `build_request` makes one."""

    prompt: str
    model: str = DEFAULT_MODEL
    size: str | None = None
    resolution: str | None = None
    n: int | None = None
    references: tuple[Reference, ...] = ()
    official_fallback: bool = False
    params: tuple[tuple[str, object], ...] = ()  # extra fields (--param), sent after the rest
    notes: tuple[str, ...] = ()
    # What the model makes (its schema's `operation`), which picks the endpoint; not sent.
    operation: str = IMAGE_OPERATION

    def fields(self) -> dict[str, object]:
        """What is sent, except prompt and model, references as summaries (no base64)."""
        return {k: v for k, v in self.dry_run().items() if k not in ("model", "prompt")}

    def body_length(self) -> int:
        """The exact length in bytes of `iter_body()`."""
        return sum(
            part.encoded_length() if isinstance(part, Reference) else len(part)
            for part in self._parts()
        )

    def iter_body(self) -> Iterator[bytes]:
        """The JSON body, streamed; each call starts afresh (a retry re-reads the files)."""
        for part in self._parts():
            if isinstance(part, Reference):
                yield from part.iter_encoded()
            else:
                yield part

    def dry_run(self) -> dict[str, object]:
        """The body as a dict, each inlined image shortened by `Reference.summary`."""
        return {
            key: [ref.summary() for ref in self.references] if key == "image_urls" else value
            for key, value in self._items()
        }

    def _items(self) -> list[tuple[str, object]]:
        """The fields sent, in order; a field the user did not set is left out."""
        items: list[tuple[str, object]] = [
            ("model", self.model),
            ("prompt", self.prompt),
            ("n", self.n),
            ("size", self.size),
            ("resolution", self.resolution),
            ("image_urls", self.references or None),
            ("official_fallback", self.official_fallback or None),
        ]
        return [(key, value) for key, value in items if value is not None] + list(self.params)

    def _parts(self) -> Iterator[bytes | Reference]:
        """The body as literal JSON bytes and references, as `json.dumps` would lay it out."""
        yield b"{"
        for index, (key, value) in enumerate(self._items()):
            yield (b", " if index else b"") + _json_value(key) + b": "
            if key != "image_urls":
                yield _json_value(value)
                continue
            yield b"["
            for position, ref in enumerate(self.references):
                yield b', "' if position else b'"'
                yield ref
                yield b'"'
            yield b"]"
        yield b"}"


def build_request(
    prompt: str,
    *,
    model: str = DEFAULT_MODEL,
    size: str | None = None,
    resolution: str | None = None,
    n: int | None = None,
    images: Sequence[str] = (),
    official_fallback: bool = False,
    params: Mapping[str, object] | None = None,
    force_size: bool = False,
) -> GenerationRequest:
    """Check every field against the API's limits and return the request to send.

    ``force_size`` lets a pixel size under 64 a side through (`--force-size`).

    gpt-image-2's own rules (its sizes, resolutions, n) are checked here, offline.
    Another model's body is checked against its schema before sending
    (`schema.check_body`), so here only what every model shares is.
    """
    if not prompt.strip():
        raise UsageError("The prompt is empty.", "Give the prompt as an argument or on stdin.")
    _check_utf8(prompt, "The prompt")
    check_model(model)
    notes: list[str] = []
    size_value = None
    resolution_value = resolution
    if model != DEFAULT_MODEL:
        _check_whole_number(n)
        for name, value in (("size", size), ("resolution", resolution)):
            if value is not None and not value.strip():
                raise UsageError(f"The {name} is empty.", f"Leave it out, or give a {name}.")
        size_value = None if size is None else size.strip()
        resolution_value = None if resolution is None else resolution.strip()
    else:
        _check_n(n)
        if size is not None:
            parsed = parse_size(size, force=force_size)
            size_value = parsed.value
            if not parsed.in_table:
                notes.append(f"size {size_value} is not in the API's table; sent as given")
        if resolution is not None:
            resolution_value = parse_resolution(resolution)
    return GenerationRequest(
        prompt=prompt,
        model=model,
        size=size_value,
        resolution=resolution_value,
        n=n,
        references=_resolve_references([images] if isinstance(images, str) else images),
        official_fallback=official_fallback,
        params=_check_params(params or {}),
        notes=tuple(notes),
    )


def check_model(model: str) -> None:
    """A UsageError for a model name no service has: empty, too long to send in a
    query, or holding spaces or control characters."""
    if not model.strip():
        raise UsageError("The model name is empty.", f"Leave it out to use {DEFAULT_MODEL}.")
    if len(model) > MAX_MODEL_CHARS or not model.isprintable() or " " in model:
        raise UsageError(
            f"Invalid model name {_quote(model)}.", "`apimart models` lists the service's models."
        )


def request_from(fields: Mapping[str, object]) -> GenerationRequest:
    """A request from fields as JSON gives them (a batch line, an agent's call): each
    of the type its row in `fields.FIELDS` says, then checked as `build_request` does."""
    given = check_types(fields)
    prompt = given.pop("prompt")
    return build_request(prompt, **given)


def parse_params(texts: Sequence[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs (`--param`), each VALUE read as JSON where it parses, else a string."""
    params: dict[str, object] = {}
    for text in texts:
        key, equals, raw = text.partition("=")
        key = key.strip()
        if not equals or not key:
            raise UsageError(
                f"Invalid --param {_quote(text)}: expected KEY=VALUE.",
                "For example --param quality=high, --param seed=42 or --param style='{\"a\": 1}'.",
            )
        try:
            value: object = json.loads(raw, parse_constant=_no_constant)
        except _NotANumber as constant:
            raise UsageError(
                f"--param {_quote(key)}: {constant} is not a number JSON can carry.",
                f"Give a finite number, or a string in quotes: --param {key}='\"{constant}\"'.",
            ) from None
        except ValueError:
            value = raw
        except RecursionError:  # `[[[[...` too deep to read: no field the API takes
            raise UsageError(f"--param {_quote(key)}: JSON nested too deeply to read.") from None
        _check_param_value(key, value)
        params[key] = value
    return params


# No field any model takes nests deeper, or holds a number past 64 bits: beyond them a
# value is a mistake, and checking or printing it would recurse or overflow.
MAX_PARAM_DEPTH = 32
_MAX_PARAM_INT = 2**63


class _NotANumber(ValueError):
    """`NaN`, `Infinity` or `-Infinity`, which Python's JSON reads and no JSON holds."""


def _no_constant(name: str) -> object:
    raise _NotANumber(name)


def _check_param_value(key: str, value: object) -> None:
    """A UsageError for an extra field's value nested too deep, or holding a number out
    of range (`1e999` reads as infinity; a 400-digit integer fits no field)."""
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_PARAM_DEPTH:
            raise UsageError(
                f"The field {_quote(key)} is nested more than {MAX_PARAM_DEPTH} levels deep."
            )
        if isinstance(item, dict):
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise UsageError(
                f"The field {_quote(key)} holds a number too large for JSON to carry.",
                "Give a finite number.",
            )
        elif isinstance(item, int) and not isinstance(item, bool) and abs(item) >= _MAX_PARAM_INT:
            raise UsageError(
                f"The field {_quote(key)} holds an integer ({len(str(abs(item)))} digits) out "
                "of range for any field.",
                f"Give a number under 2^63 ({_MAX_PARAM_INT - 1}).",
            )


def _check_params(params: Mapping[str, object]) -> tuple[tuple[str, object], ...]:
    """Extra fields, refused where an option (or the prompt) already sets the field."""
    for key in params:
        if not isinstance(key, str) or not key.strip():
            raise UsageError(
                "An extra field has an empty name.", "Give each one a name: KEY=VALUE."
            )
        if key in OPTION_FIELDS:
            raise UsageError(
                f'The field "{key}" cannot be given as an extra field: '
                f"{OPTION_FIELDS[key]} sets it.",
                f"Use {OPTION_FIELDS[key]} instead.",
            )
        _check_utf8(key, f"The field name {_quote(key)}")
        _check_param_value(key, params[key])  # a jobs file's or an agent's, as --param's
    try:
        json.dumps(dict(params), ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise UsageError(f"An extra field cannot be sent as JSON: {exc}.") from None
    return tuple(params.items())


def _check_whole_number(n: int | None) -> None:
    """Another model's n: a whole number of at least 1 (its schema says how many)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise UsageError(f"Invalid n {n!r}: ask for at least 1 image.")


def _check_n(n: int | None) -> None:
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_IMAGES_PER_TASK:
        raise UsageError(
            f"Invalid n {n!r}: the API makes 1 to {MAX_IMAGES_PER_TASK} images per task.",
            f"Ask for 1 to {MAX_IMAGES_PER_TASK} images, or submit more tasks.",
        )


def _resolve_references(images: Sequence[str]) -> tuple[Reference, ...]:
    """Resolve each reference, then check the count and the total against the limits."""
    if len(images) > MAX_REFERENCES:
        raise UsageError(
            f"{len(images)} reference images given; the API takes at most {MAX_REFERENCES}.",
            f"Give at most {MAX_REFERENCES} reference images.",
        )
    references = tuple(resolve_reference(text) for text in images)
    total = sum(ref.size for ref in references)
    if total > MAX_REFERENCES_TOTAL_BYTES:
        raise UsageError(
            f"Reference images total {_mib(total)}; the API takes at most "
            f"{MAX_REFERENCES_TOTAL_BYTES // MIB} MiB in all.",
            "Use fewer or smaller images, or give some as http(s):// URLs.",
        )
    return references


def _check_image_size(size: int, what: str) -> None:
    if size > MAX_REFERENCE_BYTES:
        raise UsageError(
            f"{what} is {_mib(size)}; the API takes at most {MAX_REFERENCE_BYTES // MIB} MiB "
            "per image.",
            "Shrink or recompress it (JPEG is smaller), or give it as an http(s):// URL.",
        )


def _check_utf8(text: str, what: str) -> None:
    """Refuse text that cannot be sent as UTF-8 (undecodable bytes from the shell)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(
            f"{what} contains bytes that are not valid UTF-8 (at position {exc.start}).",
            "Re-save the text as UTF-8.",
        ) from exc


def _unreadable(name: str, exc: OSError | ValueError) -> UsageError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return UsageError(
        f"Cannot read reference image {name}: {reason}.",
        "Check the path and the file's permissions.",
    )


def _changed(path: Path, size: int) -> UsageError:
    return UsageError(
        f"Reference image {path} changed while being sent (it was {size} bytes).",
        "Leave the file alone until the command finishes, then run it again.",
    )


def _json_value(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _json_string(text: str) -> bytes:
    """The UTF-8 bytes of a JSON string's contents, without its quotes."""
    return _json_value(text)[1:-1]


def _mib(size: int) -> str:
    return f"{size / MIB:.1f} MiB ({size} bytes)"


def _name(text: str) -> str:
    """A file name for an error message: as typed where it is plain, else quoted (its
    line breaks, escapes and direction marks shown as such) and cut short."""
    return text if text.isprintable() and len(text) <= NAME_CHARS else _quote(text)


def _quote(text: str) -> str:
    """A user's value for an error message, cut short if long (a data URI can be MBs)."""
    return repr(text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…")
