"""The gallery: `index.html`, one self-contained page of the images in a folder.

Inline CSS, no script, nothing from the network: it opens from a CI artifact as
it is. Each image is shown by its relative path with its prompt (escaped: a
prompt is user text), size, resolution, task id, cost and time; failed jobs
with their reason; newest first. What the page says of each image comes from
a batch manifest, the task history, or the provenance chunk in the image
(`entries_for_folder`); `write` puts the page in place atomically, never
through a link.
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from apimart_cli.history import History, TaskRecord

PAGE_NAME = "index.html"
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", *VIDEO_SUFFIXES)
# `<task_id>_<index>.<ext>`, the name every download gets first.
_STEM = re.compile(r"^([A-Za-z0-9_-]+)_(\d+)$")
_ENDED = ("completed", "failed", "cancelled", "unknown")


@dataclass(frozen=True)
class Entry:
    """One job on the page: its images (names relative to the folder), or why it failed."""

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


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def from_manifest_record(record: Mapping[str, Any]) -> Entry | None:
    """A batch manifest's latest record of a job, if it has come far enough to show."""
    state = str(record.get("state") or "")
    error = _text(record.get("error"))
    files = tuple(str(name) for name in record.get("files") or () if isinstance(name, str))
    if state not in _ENDED or (state == "completed" and not files and not error):
        return None  # not sent, or still on its way: the page shows it once it ends
    sent = record.get("fields")
    fields: Mapping[str, Any] = sent if isinstance(sent, Mapping) else {}
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
        state=state or "completed",
    )


def from_history_record(record: TaskRecord, files: Sequence[str]) -> Entry:
    """A history record, with its files that are in the folder (relative names)."""
    return Entry(
        task_id=record.task_id,
        prompt=record.prompt,
        files=tuple(files),
        size=_text(record.fields.get("size")),
        resolution=_text(record.fields.get("resolution")),
        cost=record.cost,
        time=record.updated_at if record.finished else record.created_at,
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
    """Names of the image files directly in `folder`, sorted."""
    try:
        names = [entry.name for entry in os.scandir(folder) if entry.is_file()]
    except FileNotFoundError:
        return []
    return sorted(name for name in names if name.lower().endswith(IMAGE_SUFFIXES))


def task_id_of(name: str) -> str | None:
    """The task id in a file name `<task_id>_<index>.<ext>`, if it is one."""
    found = _STEM.match(Path(name).stem)
    return found.group(1) if found else None


def entries_for_folder(
    folder: Path,
    *,
    manifest: Iterable[Mapping[str, Any]] = (),
    history: Callable[[str], TaskRecord | None] = lambda task_id: None,
    history_files: Iterable[TaskRecord] = (),
    provenance: Callable[[Path], Mapping[str, Any] | None] = lambda path: None,
) -> list[Entry]:
    """Every job the page should show for `folder`, newest first.

    A batch manifest's records come first (they know failed jobs and renamed
    files); then the history, by the files it recorded in this folder
    (`history_files`) or by the task id in a file's name (`history`); then an
    image's own provenance. An image none of them knows is left out.
    """
    images = images_in(folder)
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
    here = folder.resolve()
    for task in history_files:
        if task.task_id in tasks:
            continue
        names = [
            Path(path).name
            for path in task.files
            if _inside(Path(path), folder, here) and Path(path).name in present
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
        found = history(task_id)
        if found is not None:
            entries.append(from_history_record(found, names))
            claimed.update(names)
    for name in images:
        if name in claimed:
            continue
        stored = provenance(folder / name)
        if stored is not None:
            entries.append(from_provenance(name, stored))
    return sorted(entries, key=lambda entry: entry.time or 0.0, reverse=True)


def _inside(path: Path, folder: Path, resolved: Path) -> bool:
    parent = path.parent if path.is_absolute() else (Path.cwd() / path).parent
    try:
        return parent.resolve() == resolved
    except OSError:
        return False


# -- the page ---------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light dark;--bg:#f6f6f4;--card:#fff;--ink:#1d1d1f;--dim:#6b6b70;
--line:#e3e3e0;--bad:#b3261e;--badbg:#fdecea;--thumb:#ebebe8}
@media (prefers-color-scheme:dark){:root{--bg:#141416;--card:#1f1f23;--ink:#ececef;
--dim:#9a9aa2;--line:#2e2e34;--bad:#ffb4ab;--badbg:#3b1d1b;--thumb:#0d0d0f}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{padding:24px 28px 8px}
h1{margin:0;font-size:22px;font-weight:650;letter-spacing:-.01em}
header p{margin:4px 0 0;color:var(--dim)}
main{display:grid;gap:20px;padding:16px 28px 40px;
grid-template-columns:repeat(auto-fill,minmax(min(100%,300px),1fr))}
figure{margin:0;background:var(--card);border:1px solid var(--line);border-radius:12px;
overflow:hidden;display:flex;flex-direction:column}
.shots{display:grid;gap:2px;aspect-ratio:4/3;overflow:hidden;background:var(--thumb);
grid-template:minmax(0,1fr)/minmax(0,1fr)}
.shots a{display:block;min-width:0;min-height:0}
.shots img,.shots video{display:block;width:100%;height:100%;object-fit:contain}
figcaption{padding:12px 14px 14px;display:flex;flex-direction:column;gap:8px}
.prompt{margin:0;white-space:pre-wrap;overflow-wrap:anywhere;font-weight:500}
dl{margin:0;display:grid;grid-template-columns:auto 1fr;gap:2px 10px;font-size:12.5px;
color:var(--dim)}
dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.failed{border-color:var(--bad)}
.reason{margin:0;padding:10px 14px;background:var(--badbg);color:var(--bad);font-weight:600;
overflow-wrap:anywhere}
.missing{aspect-ratio:4/3;display:flex;align-items:center;justify-content:center;
background:var(--badbg)}
.missing .reason{text-align:center;padding:16px 24px}
footer{padding:0 28px 28px;color:var(--dim);font-size:12px}
@media (max-width:520px){header{padding:16px 16px 4px}main{padding:12px 16px 28px;gap:14px}
footer{padding:0 16px 20px}}
"""


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _cost(value: float | None) -> str:
    from apimart_cli.costs import cost_text

    return "—" if value is None else cost_text(value)


def _card(entry: Entry) -> str:
    e = html.escape
    shots = "".join(
        # A video plays in place (the browser's own controls: still no script).
        f'<video controls preload="metadata" src="{e(quote(name))}" title="{e(entry.prompt)}">'
        f"</video>"
        if name.lower().endswith(VIDEO_SUFFIXES)
        else f'<a href="{e(quote(name))}"><img src="{e(quote(name))}" alt="{e(entry.prompt)}"'
        f"{_dimensions(entry, name)}></a>"
        for name in entry.files
    )
    pixels = sorted({f"{w}×{h}" for w, h in entry.dimensions.values()})
    rows = [
        ("size", e(entry.size or "default") + (f" · {', '.join(pixels)}" if pixels else "")),
        ("resolution", e(entry.resolution or "default")),
        ("task", f"<code>{e(entry.task_id or '—')}</code>"),
        ("cost", e(_cost(entry.cost))),
        ("time", e(_when(entry.time))),
    ]
    details = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows)
    reason = ""
    if entry.failed:
        reason = f'<p class="reason">{e(entry.state)}: {e(_reason(entry))}</p>'
    classes = ' class="failed"' if entry.failed else ""
    if shots:
        body = f'<div class="shots"{_layout(len(entry.files))}>{shots}</div>{reason}'
    else:  # the reason takes the picture's place, so the grid stays even
        body = f'<div class="missing">{reason}</div>'
    return (
        f"<figure{classes}>{body}<figcaption>"
        f'<p class="prompt">{e(entry.prompt) or "<em>(no prompt)</em>"}</p>'
        f"<dl>{details}</dl></figcaption></figure>"
    )


def _reason(entry: Entry) -> str:
    """Why the job failed, without the "task <id> failed: " the card already says."""
    why = entry.error or "no reason given"
    if entry.task_id:
        prefix = f"task {entry.task_id} {entry.state}: "
        if why.lower().startswith(prefix.lower()):
            why = why[len(prefix) :]
    return why


def _layout(count: int) -> str:
    """Several images of one task share the picture area in a near-square grid."""
    if count <= 1:
        return ""
    columns = 2 if count <= 4 else 3 if count <= 9 else 4
    rows = -(-count // columns)
    return f' style="grid-template:repeat({rows},minmax(0,1fr))/repeat({columns},minmax(0,1fr))"'


def _dimensions(entry: Entry, name: str) -> str:
    size = entry.dimensions.get(name)
    return f' width="{size[0]}" height="{size[1]}"' if size else ""


def render(entries: Sequence[Entry], title: str) -> str:
    """The page for `entries` (in the order given), titled `title`."""
    images = sum(len(entry.files) for entry in entries)
    failed = sum(entry.failed for entry in entries)
    costs = [entry.cost for entry in entries if entry.cost is not None]
    summary = [f"{images} image{'s' if images != 1 else ''}"]
    if failed:
        summary.append(f"{failed} failed")
    if costs:
        summary.append(f"cost {_cost(sum(costs))}")
    cards = "\n".join(_card(entry) for entry in entries)
    empty = "" if entries else "<p>No images yet.</p>"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        # No script, no network: nothing but this file and the images beside it.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<header><h1>{html.escape(title)}</h1><p>{' · '.join(summary)}</p></header>\n"
        f"<main>\n{cards}\n</main>{empty}\n"
        "<footer>Made by apimart. Newest first.</footer>\n"
        "</body></html>\n"
    )


def with_dimensions(
    folder: Path, entries: Sequence[Entry], known: dict[str, tuple[int, int]] | None = None
) -> list[Entry]:
    """Entries with each PNG's pixel size, read from its header, so the grid does not jump.

    `known` caches the sizes by name between calls.
    """
    from apimart_cli.preview import png_size

    known = {} if known is None else known
    result = []
    for entry in entries:
        for name in entry.files:
            if name in known:
                continue
            try:
                with (folder / name).open("rb") as handle:
                    found = png_size(handle.read(24))
            except OSError:
                found = None
            if found:
                known[name] = found
        sizes = {name: known[name] for name in entry.files if name in known}
        result.append(replace(entry, dimensions=sizes))
    return result


def write(
    folder: Path,
    entries: Sequence[Entry],
    *,
    title: str | None = None,
    redact: Callable[[str], str] = str,
    sizes: dict[str, tuple[int, int]] | None = None,
) -> Path:
    """Write `index.html` in `folder` atomically, never through a link; its path."""
    title = title or f"apimart · {folder.resolve().name or folder}"
    from apimart_cli.secrets import redact as hidden

    page = hidden(redact(render(with_dimensions(folder, entries, sizes), title)))
    target = folder / PAGE_NAME
    temporary = folder / f".{PAGE_NAME}.{os.getpid()}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    temporary.unlink(missing_ok=True)
    try:
        descriptor = os.open(temporary, flags, 0o644)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(page)
            handle.flush()
            os.fsync(handle.fileno())
        # os.replace swaps the name itself: a link planted at index.html is replaced, not followed.
        temporary.replace(target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def manifest_records(folder: Path) -> list[dict[str, Any]]:
    """The latest record of each job in the folder's batch manifest, if there is one."""
    from apimart_cli.batch.manifest import Manifest

    return list(Manifest(folder).read())


def build(
    folder: Path, history: History | None, *, redact: Callable[[str], str] = str
) -> tuple[Path, int]:
    """Write the gallery of `folder` from its manifest, the history and the images' own
    provenance; its path and how many images it shows. UsageError if there is no folder."""
    from apimart_cli.errors import UsageError
    from apimart_cli.provenance import NotPNG, read_file

    if not folder.is_dir():
        raise UsageError(
            f"No folder {folder}." if not folder.exists() else f"{folder} is not a folder.",
            "Name the folder of images: apimart gallery out/",
        )

    def own(path: Path) -> Mapping[str, Any] | None:
        try:
            return read_file(path)
        except (OSError, NotPNG):
            return None

    entries = entries_for_folder(
        folder,
        manifest=manifest_records(folder),
        history=history.get if history is not None else lambda task_id: None,
        history_files=history.list() if history is not None else (),
        provenance=own,
    )
    try:
        path = write(folder, entries, redact=redact)
    except OSError as exc:
        raise UsageError(
            f"Cannot write the gallery in {folder}: {exc.strerror or exc}",
            "Check the folder's permissions and free space.",
        ) from None
    return path, sum(len(entry.files) for entry in entries)


class Keeper:
    """Keeps a batch's `index.html` current: rewritten as each job ends.

    The pixel sizes of the images are read once each, not at every rewrite.
    A page that cannot be written is said once and the run goes on.
    """

    def __init__(
        self, folder: Path, *, warn: Callable[[str], None], redact: Callable[[str], str] = str
    ) -> None:
        self.folder = folder
        self._warn, self._redact = warn, redact
        self._sizes: dict[str, tuple[int, int]] = {}
        self._broken = False

    def update(self, records: Iterable[Mapping[str, Any]]) -> None:
        if self._broken:
            return
        entries = [e for e in map(from_manifest_record, records) if e is not None]
        entries.sort(key=lambda entry: entry.time or 0.0, reverse=True)
        try:
            write(self.folder, entries, redact=self._redact, sizes=self._sizes)
        except OSError as exc:
            self._broken = True
            self._warn(
                f"Warning: cannot write {self.folder / PAGE_NAME}: {exc.strerror or exc}. "
                "`apimart gallery` can make it later."
            )
