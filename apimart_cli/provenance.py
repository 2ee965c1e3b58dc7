"""Provenance in saved PNGs: what was asked for, kept inside the image itself.

A PNG is a signature and a list of chunks (length, type, data, CRC-32). The
provenance is one `iTXt` chunk with keyword `apimart` whose text is a JSON
object (`describe`). It goes right after `IHDR`, which the format requires to
come first; every byte of the server's image data stays as it was sent. A
download gets it as its bytes stream past the IHDR (`Stamper.chunk`, for
`downloads.Stamp`), so the image is written once; a file already saved can be
stamped by `embed_file`, through a new file that replaces it, so a killed run
never leaves a half-rewritten image. `read_file` finds the chunk again for
`apimart inspect` and the gallery, and trusts nothing in it: a chunk or its
inflated text larger than MAX_PROVENANCE_BYTES is refused, and what is read is
sanitised (`sanitised`) before anyone uses it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import struct
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from apimart_cli.images import IHDR_END, PNG_SIGNATURE, png_chunk, png_chunks

if TYPE_CHECKING:
    from apimart_cli.history import TaskRecord
    from apimart_cli.tasks import Task

KEYWORD = "apimart"
# The fields of a request that have their own key in the object; any other is a param.
_OWN_KEYS = ("size", "resolution", "n")
_REFERENCE_KEY = "image_urls"
# `payload.Reference.summary()` of a local file: "data:<mime>;base64,<head>…(<n> bytes from <path>)"
_FILE_SUMMARY = re.compile(r"^data:[^,]*,.*\((\d+) bytes from (.+)\)$", re.DOTALL)
_DATA_SUMMARY = re.compile(r"^data:([^;,]*)[;,].*?(?:\((\d+) bytes\))?$", re.DOTALL)


# The most bytes of provenance read, stored or inflated: a prompt is text, not a megabyte.
MAX_PROVENANCE_BYTES = 1024 * 1024
# The deepest nesting kept of what is stored: params are flat, and printing a deep value
# would run out of stack.
MAX_DEPTH = 32
# The latest time shown as a date: the end of year 9999.
_LATEST = 253402300799


class NotPNG(ValueError):
    """The file is not a PNG this module can read or write."""


class Unreadable(NotPNG):
    """The file cannot be read for its provenance (not a regular file, a chunk too large);
    the message says why."""


def describe(
    *,
    task_id: str,
    prompt: str | None,
    model: str | None,
    fields: Mapping[str, object],
    created: int | None,
    completed: int | None,
    cost: float | None,
    version: str,
) -> dict[str, Any]:
    """The provenance object: the task, the prompt and fields sent, times, cost, tool version.

    `fields` are the request's fields as the history keeps them (references
    already without their base64 data). References become file names or URLs.
    """
    params = {
        key: value
        for key, value in fields.items()
        if key not in (*_OWN_KEYS, _REFERENCE_KEY, "model", "prompt")
    }
    record: dict[str, Any] = {
        "task_id": task_id,
        "prompt": prompt,
        "model": model or fields.get("model"),
        **{key: fields.get(key) for key in _OWN_KEYS},
        "params": params,
        "references": [_reference(item) for item in _as_list(fields.get(_REFERENCE_KEY))],
        "created": created,
        "completed": completed,
        "cost": cost,
        "version": version,
    }
    return record


def _as_list(value: object) -> list[object]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _reference(item: object) -> str:
    """A reference as a file name or a URL: never its data."""
    text = str(item)
    if not text.startswith("data:"):
        return text  # a URL (an uploaded file's too)
    found = _FILE_SUMMARY.match(text)
    if found:
        return Path(found.group(2)).name
    found = _DATA_SUMMARY.match(text)
    mime = found.group(1) if found else ""
    size = f", {found.group(2)} bytes" if found and found.group(2) else ""
    return f"(a data: URI{', ' + mime if mime else ''}{size})"


def itxt_chunk(record: Mapping[str, Any], *, redact: Callable[[str], str] = str) -> bytes:
    """The `iTXt` chunk holding `record` as JSON: keyword, no compression, no language."""
    from apimart_cli.secrets import redact_data

    text = redact(json.dumps(redact_data(record), ensure_ascii=False, sort_keys=False))
    keyword = KEYWORD.encode("latin-1")
    # keyword \0, compression flag and method (0, 0), language tag \0, translated keyword \0
    data = keyword + b"\x00\x00\x00" + b"\x00" + b"\x00" + text.encode("utf-8")
    return png_chunk(b"iTXt", data)


def _check_head(head: bytes, where: object) -> None:
    if len(head) < IHDR_END or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise NotPNG(f"{where} is not a PNG")
    if struct.unpack(">I", head[8:12])[0] != 13:
        raise NotPNG(f"{where} has a malformed IHDR chunk")


def embed(png: bytes, record: Mapping[str, Any], *, redact: Callable[[str], str] = str) -> bytes:
    """`png` with the provenance chunk inserted right after IHDR."""
    _check_head(png[:IHDR_END], "the image")
    return png[:IHDR_END] + itxt_chunk(record, redact=redact) + png[IHDR_END:]


def embed_file(
    path: Path, record: Mapping[str, Any], *, redact: Callable[[str], str] = str
) -> None:
    """Insert the provenance chunk into the PNG at `path`, atomically.

    The new file, with the image's mode, replaces it (`safefiles.replacing`): at
    every moment `path` is either the image as it was or the image with its chunk.
    Raises NotPNG (leaving `path` untouched) if it is not a PNG.
    """
    from apimart_cli import safefiles

    with path.open("rb") as source:
        head = source.read(IHDR_END)
        _check_head(head, path)
        mode = stat.S_IMODE(os.fstat(source.fileno()).st_mode)
        with safefiles.replacing(path, mode) as target:
            target.write(head)
            target.write(itxt_chunk(record, redact=redact))
            shutil.copyfileobj(source, target)


def read(handle: IO[bytes], where: object = "the file") -> dict[str, Any] | None:
    """The provenance object in a PNG, sanitised, or None if it has none (or none that can
    be read). NotPNG if it is no PNG; Unreadable if its chunk is too large."""
    keyword = KEYWORD.encode("latin-1") + b"\x00"
    if handle.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
        raise NotPNG(f"{where} is not a PNG")
    for chunk_type, length in png_chunks(handle):
        if chunk_type != b"iTXt":
            continue
        if length > MAX_PROVENANCE_BYTES:  # read only enough to tell whose it is
            if handle.read(len(keyword)) == keyword:
                raise _too_large(where)
            continue
        data = handle.read(length)
        found = _parse_itxt(data, where)
        if found is not None:
            return found
    return None


def read_file(path: Path) -> dict[str, Any] | None:
    """`read` of the file at `path`. Unreadable, at once, if it is not a regular file
    (a FIFO would wait for a writer forever, a device never end)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        raise Unreadable(f"{path} is not a regular file.")
    with os.fdopen(descriptor, "rb") as handle:
        return read(handle, path)


def _too_large(where: object) -> Unreadable:
    return Unreadable(
        f"{where} has an apimart provenance chunk larger than"
        f" {MAX_PROVENANCE_BYTES // (1024 * 1024)} MiB, the most read; refused."
    )


def _parse_itxt(data: bytes, where: object = "the file") -> dict[str, Any] | None:
    keyword, _, rest = data.partition(b"\x00")
    if keyword != KEYWORD.encode("latin-1") or len(rest) < 2:
        return None
    compressed, rest = rest[0], rest[2:]
    _language, _, rest = rest.partition(b"\x00")
    _translated, _, text = rest.partition(b"\x00")
    if compressed:
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(text, MAX_PROVENANCE_BYTES)
        except zlib.error:
            return None
        if inflater.unconsumed_tail:  # it inflates past the limit: stop there
            raise _too_large(where)
    try:
        value = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return sanitised(value) if isinstance(value, dict) else None


_TEXT_KEYS = ("task_id", "prompt", "model", "size", "resolution", "version")
_TIME_KEYS = ("created", "completed")


def sanitised(stored: Mapping[str, Any]) -> dict[str, Any] | None:
    """`stored` with what no version of the tool writes left out: known keys of the
    wrong type, times that are no date, costs that are no number, and any value nested
    deeper than MAX_DEPTH. None if the whole is nested too deep."""
    from apimart_cli.history import json_depth

    if json_depth(stored) > MAX_DEPTH:
        return None
    clean: dict[str, Any] = {}
    for key, value in stored.items():
        if key in _TEXT_KEYS:
            keep = isinstance(value, str)
        elif key == "n":
            keep = isinstance(value, int) and not isinstance(value, bool)
        elif key == "params":
            keep = isinstance(value, dict) and _finite(value)
        elif key == "references":
            keep = isinstance(value, list)
            value = [item for item in value if isinstance(item, str)] if keep else value
        elif key in _TIME_KEYS:
            keep = _number(value) and 0 <= value <= _LATEST
        elif key == "cost":
            keep = _number(value)
        else:
            keep = _finite(value)
        if keep or value is None:
            clean[key] = value
    return clean


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _finite(value: object) -> bool:
    """Whether `value` holds no NaN or infinity (which JSON cannot hold)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return False
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


_LABELS = (
    ("prompt", "prompt"),
    ("model", "model"),
    ("task_id", "task"),
    ("size", "size"),
    ("resolution", "resolution"),
    ("n", "n"),
    ("params", "params"),
    ("references", "references"),
    ("created", "created"),
    ("completed", "completed"),
    ("cost", "cost"),
    ("version", "made by"),
)


def readable(stored: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The stored object as labelled lines for people; what is absent is left out. Each
    line is printable: no control character read from the file reaches a terminal."""
    from datetime import datetime, timezone

    from apimart_cli.errors import printable

    lines = []
    for key, label in _LABELS:
        value = stored.get(key)
        if value is None or value == [] or value == {}:
            continue
        if key in _TIME_KEYS and _number(value) and 0 <= value <= _LATEST:
            text = datetime.fromtimestamp(value, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        elif key == "params" and isinstance(value, Mapping):
            text = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
        elif key == "references" and isinstance(value, list):
            text = " ".join(str(item) for item in value)
        elif key == "version":
            text = f"apimart {value}"
        else:
            text = str(value)
        lines.append((label, " ".join(text.split()) if key == "prompt" else text))
    known = {key for key, _ in _LABELS}
    lines += [
        (key, json.dumps(value, ensure_ascii=False))
        for key, value in stored.items()
        if key not in known
    ]
    return [(printable(label), printable(text)) for label, text in lines]


def inspect(path: Path) -> dict[str, Any]:
    """The provenance stored in the image at `path`; an ApimartError if it has none. A
    message names the file as printable text: a file name may hold escapes too."""
    from apimart_cli.errors import TaskError, UsageError, named, printable

    name = named(path)
    try:
        stored = read_file(path)
    except FileNotFoundError:
        raise UsageError(f"No such file: {name}") from None
    except IsADirectoryError:
        raise UsageError(f"{name} is a folder, not an image.") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {name}: {exc.strerror or exc}") from None
    except Unreadable as exc:
        raise UsageError(printable(str(exc))) from None
    except NotPNG:
        stored = None
        if _is_video(path):
            raise TaskError(
                f"{name} is a video: a video carries no provenance in the file.",
                "`apimart history --json` has what made it (its prompt and fields), and "
                "`batch --metadata` writes it in a JSON sidecar beside the video.",
            ) from None
    if stored is None:
        raise TaskError(
            f"{name} has no apimart provenance.",
            "Only PNGs saved by apimart without --no-metadata carry it.",
        )
    return stored


def _is_video(path: Path) -> bool:
    from apimart_cli.images import sniff_video

    try:
        with path.open("rb") as handle:
            return sniff_video(handle.read(64)) is not None
    except OSError:
        return False


def from_history(task_id: str) -> TaskRecord | None:
    """What the task history knows of a task: its own connection, so any thread may ask."""
    from apimart_cli.errors import HistoryError
    from apimart_cli.history import History

    try:
        with History.open() as history:
            return history.get(task_id)
    except HistoryError:
        return None  # the image still gets what the service said of the task


class Stamper:
    """Puts each task's provenance into its PNGs, as the downloader's last step.

    `step(task)` is the step for the downloader (`Downloader.download`'s finish):
    called on a download thread with each complete temp file before it takes its
    final name. What goes in is the prompt and fields the history recorded and
    the task's final state: given by `prepare` where the caller has the record,
    else looked up (`lookup`, once per task). A file that is not a PNG is left
    exactly as served.
    """

    def __init__(
        self,
        version: str,
        *,
        lookup: Callable[[str], TaskRecord | None] = from_history,
        redact: Callable[[str], str] = str,
    ) -> None:
        import threading

        self._version, self._lookup, self._redact = version, lookup, redact
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def prepare(self, task: Task, known: TaskRecord | None) -> None:
        """Describe the task now, from a history record the caller already has (no lookup)."""
        described = self._describe(task, known)
        with self._lock:
            self._records[task.task_id] = described

    def record(self, task: Task) -> dict[str, Any]:
        """What the task's images carry, described once per task."""
        with self._lock:
            found = self._records.get(task.task_id)
        if found is not None:
            return found
        described = self._describe(task, self._lookup(task.task_id))
        with self._lock:
            return self._records.setdefault(task.task_id, described)

    def _describe(self, task: Task, known: TaskRecord | None) -> dict[str, Any]:
        completed = task.raw.get("completed")
        return describe(
            task_id=task.task_id,
            prompt=known.prompt if known is not None else None,
            model=None,
            fields=known.fields if known is not None else {},
            created=task.created,
            completed=completed if isinstance(completed, int) else None,
            cost=task.cost,
            version=self._version,
        )

    def stamp(self, path: Path, task: Task) -> None:
        """Put the task's provenance into the PNG at `path` (anything else stays as it is)."""
        try:
            embed_file(path, self.record(task), redact=self._redact)
        except NotPNG:
            return  # JPEG or WebP: saved as served

    def chunk(self, task: Task) -> bytes:
        """The chunk the task's PNGs carry, for the downloader to put in as they stream."""
        return itxt_chunk(self.record(task), redact=self._redact)

    def step(self, task: Task) -> Callable[[Path], None]:
        """The downloader's last step for this task's images."""
        return lambda path: self.stamp(path, task)
