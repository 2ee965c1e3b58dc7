"""What the gallery shows: one `Entry` per job, gathered for a folder of images.

What the page says of each image comes from a batch manifest, the task history
(the newest rows only: `HISTORY_ROWS`), or the provenance chunk in the image
(`entries_for_folder`); a batch's own page also shows the jobs still on their
way (`from_manifest_record(..., live=True)`). Stored values are taken as they
come: one of the wrong type is shown as absent, never a crash.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from apimart_cli.history import TaskRecord

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", *VIDEO_SUFFIXES)
# `<task_id>_<index>.<ext>`, the name every download gets first.
_STEM = re.compile(r"^([A-Za-z0-9_-]+)_(\d+)$")
ENDED = ("completed", "failed", "cancelled", "unknown")
# How many of the newest history rows are read for the files they recorded in the folder
# (at least; more where the folder holds more images). An image named after its task is
# looked up by its id whatever its age, and one that carries its provenance needs neither.
HISTORY_ROWS = 2000


@dataclass(frozen=True)
class Entry:
    """One job on the page: its images (names relative to the folder), or why it failed,
    or, on a batch's page while it runs, how far it has come."""

    task_id: str | None
    prompt: str
    files: tuple[str, ...] = ()
    size: str | None = None
    resolution: str | None = None
    cost: float | None = None
    time: float | None = None  # Unix seconds: when it completed, else when it was sent
    error: str | None = None
    state: str = "completed"
    dimensions: dict[str, tuple[int, int]] = field(default_factory=dict)  # file -> pixels

    @property
    def failed(self) -> bool:
        return bool(self.error) or self.state in ("failed", "cancelled", "unknown")

    @property
    def in_flight(self) -> bool:
        """Not ended yet: queued, being sent, on its way at the service, or downloading."""
        if self.error:
            return False
        return not self.files if self.state == "completed" else self.state not in ENDED


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        return ()
    return tuple(name for name in value if isinstance(name, str))


def from_manifest_record(record: Mapping[str, Any], *, live: bool = False) -> Entry | None:
    """A batch manifest's latest record of a job, if it has come far enough to show:
    ended, or with `live` (a batch's page while it runs) at any state."""
    if not isinstance(record, Mapping):
        return None
    state = str(record.get("state") or "")
    error = _text(record.get("error"))
    files = _names(record.get("files"))
    ended = state in ENDED and not (state == "completed" and not files and not error)
    if not ended and not live:
        return None  # not sent, or still on its way: the page shows it once it ends
    fields = _mapping(record.get("fields"))
    return Entry(
        task_id=_text(record.get("task_id")),
        prompt=str(record.get("prompt") or ""),
        files=files,
        size=_text(fields.get("size")),
        resolution=_text(fields.get("resolution")),
        cost=_number(record.get("cost")),
        # When it was sent: a job resumed by a rerun keeps its place.
        time=_number(record.get("submitted_at")) or _number(record.get("time")),
        error=error,
        state=state or "queued",
    )


def from_history_record(record: TaskRecord, files: Sequence[str]) -> Entry:
    """A history record, with its files that are in the folder (relative names)."""
    fields = _mapping(record.fields)
    return Entry(
        task_id=record.task_id,
        prompt=str(record.prompt or ""),
        files=tuple(files),
        size=_text(fields.get("size")),
        resolution=_text(fields.get("resolution")),
        cost=_number(record.cost),
        time=_number(record.updated_at if record.finished else record.created_at),
        error=record.error if record.state != "completed" else None,
        state=record.state,
    )


def from_provenance(name: str, stored: Mapping[str, Any]) -> Entry:
    """An image that carries its own provenance chunk."""
    return Entry(
        task_id=_text(stored.get("task_id")),
        prompt=str(stored.get("prompt") or ""),
        files=(name,),
        size=_text(stored.get("size")),
        resolution=_text(stored.get("resolution")),
        cost=_number(stored.get("cost")),
        time=_number(stored.get("completed")) or _number(stored.get("created")),
    )


def images_in(folder: Path) -> list[str]:
    """Names of the image files directly in `folder`, sorted (a link that leads nowhere,
    or round in a loop, is none)."""
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries if _is_file(entry)]
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.lower().endswith(IMAGE_SUFFIXES))


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:  # a link in a loop (ELOOP), or gone meanwhile
        return False


def task_id_of(name: str) -> str | None:
    """The task id in a file name `<task_id>_<index>.<ext>`, if it is one."""
    stem = name.rpartition(".")[0] or name
    found = _STEM.match(stem)
    return found.group(1) if found else None


def newest_first(entries: Iterable[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda entry: entry.time or 0.0, reverse=True)


def entries_for_folder(
    folder: Path,
    *,
    manifest: Iterable[Mapping[str, Any]] = (),
    history: Callable[[str], TaskRecord | None] = lambda task_id: None,
    history_files: Iterable[TaskRecord] = (),
    provenance: Callable[[Path], Mapping[str, Any] | None] = lambda path: None,
    images: Sequence[str] | None = None,
) -> list[Entry]:
    """Every job the page should show for `folder`, newest first.

    A batch manifest's records come first (they know failed jobs and renamed
    files); then the history, by the files it recorded in this folder
    (`history_files`) or by the task id in a file's name (`history`); then an
    image's own provenance. An image none of them knows is left out. `images`:
    the folder's image names, where the caller has listed them already.
    """
    images = images_in(folder) if images is None else images
    present = set(images)
    entries: list[Entry] = []
    claimed: set[str] = set()
    tasks: set[str] = set()
    for record in manifest:
        entry = from_manifest_record(record)
        if entry is None:
            continue
        files = tuple(name for name in entry.files if name in present)
        if entry.files and not files and not entry.failed:
            continue  # its images were removed since
        entries.append(replace(entry, files=files))
        claimed.update(files)
        if entry.task_id:
            tasks.add(entry.task_id)
    inside = _Inside(folder)
    read: dict[str, TaskRecord] = {}  # the history's rows already read, by task id
    for task in history_files:
        if task.task_id:
            read.setdefault(task.task_id, task)
        if task.task_id in tasks:
            continue
        # Names as strings: a Path for each recorded file costs ten times as much.
        names = [
            os.path.basename(path)  # noqa: PTH119
            for path in task.files
            if os.path.basename(path) in present and inside(path)  # noqa: PTH119
        ]
        names = [name for name in names if name not in claimed]
        if names:
            entries.append(from_history_record(task, names))
            claimed.update(names)
            if task.task_id:
                tasks.add(task.task_id)
    by_task: dict[str, list[str]] = {}
    for name in images:
        task_id = task_id_of(name)
        if name not in claimed and task_id and task_id not in tasks:
            by_task.setdefault(task_id, []).append(name)
    for task_id, names in by_task.items():
        found = read.get(task_id) or history(task_id)
        if found is not None:
            entries.append(from_history_record(found, names))
            claimed.update(names)
    for name in images:
        if name in claimed:
            continue
        stored = provenance(folder / name)
        if stored is not None:
            entries.append(from_provenance(name, stored))
    return newest_first(entries)


class _Inside:
    """Whether a recorded path is in `folder`: each parent folder resolved once."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder.resolve()
        self._parents: dict[str, bool] = {}

    def __call__(self, path: str) -> bool:
        parent = os.path.dirname(os.path.join(os.getcwd(), path))  # noqa: PTH109, PTH118, PTH120
        found = self._parents.get(parent)
        if found is None:
            try:
                found = Path(parent).resolve() == self._folder
            except OSError:
                found = False
            self._parents[parent] = found
        return found
