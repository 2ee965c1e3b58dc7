"""The gallery page: `index.html`, one self-contained page of the images in a folder.

Inline CSS, no script, nothing from the network: it opens from a CI artifact as
it is. Each image is shown by its relative path with its prompt (escaped: a
prompt is user text), size, resolution, task id, cost and time; failed jobs
with their reason; newest first. Every image loads lazily and decodes off the
main thread, with its width and height from its header, so a page of ten
thousand full-size images opens at once and does not jump as they arrive. A
batch's page, while the batch runs, also shows the jobs on their way and reloads
itself (`live`). `write` puts the page in place atomically, never through a link,
and never over an `index.html` it did not write (the folder's own page).
"""

from __future__ import annotations

import html
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from apimart_cli import safefiles
from apimart_cli.gallery.gather import VIDEO_SUFFIXES, Entry

PAGE_NAME = "index.html"
# What marks a page as this tool's, near its start (and, on pages from before the mark,
# the footer at its end): any other `index.html` is the user's, and is never replaced.
_MARK = '<meta name="generator" content="apimart">'
_OLD_MARK = "<footer>Made by apimart."
_MARK_WITHIN = 4096  # bytes read at each end of a page to find its mark
# How often a batch's page reloads itself while the batch runs (seconds).
REFRESH_SECONDS = 3
# The pixel size given for an image whose header cannot be read: the API's default.
UNKNOWN_SIZE = (1024, 1024)
# The header bytes read for an image's size: a PNG's or GIF's is in the first 32, a
# JPEG's or WebP's may come after its metadata.
_SHORT_HEAD, _LONG_HEAD = 32, 64 * 1024
# A file name that needs neither percent-encoding in a URL nor escaping in HTML.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")

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
.pending{aspect-ratio:4/3;display:flex;align-items:center;justify-content:center;
background:var(--thumb);color:var(--dim);font-weight:600;text-transform:capitalize}
footer{padding:0 28px 28px;color:var(--dim);font-size:12px}
@media (max-width:520px){header{padding:16px 16px 4px}main{padding:12px 16px 28px;gap:14px}
footer{padding:0 16px 20px}}
"""


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    try:
        return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):  # a time no calendar holds
        return "—"


def _cost(value: float | None) -> str:
    from apimart_cli.costs import cost_text

    return "—" if value is None else cost_text(value)


def _url(name: str) -> str:
    if _PLAIN_NAME.fullmatch(name):  # most names (`<task_id>_<i>.png`): nothing to encode
        return name
    # A name the file system gave undecodable bytes keeps them, percent-encoded.
    return html.escape(quote(name, errors="surrogateescape"))


def _card(entry: Entry, sizes: Mapping[str, tuple[int, int]]) -> str:
    e = html.escape
    alt = e(entry.prompt)
    measured = {name: sizes.get(name) or entry.dimensions.get(name) for name in entry.files}
    shots = "".join(
        # A video plays in place (the browser's own controls: still no script).
        f'<video controls preload="metadata" src="{url}" title="{alt}"></video>'
        if name.lower().endswith(VIDEO_SUFFIXES)
        else f'<a href="{url}"><img src="{url}" alt="{alt}" loading="lazy" decoding="async"'
        ' width="{}" height="{}"></a>'.format(*(measured[name] or UNKNOWN_SIZE))
        for name, url in ((name, _url(name)) for name in entry.files)
    )
    pixels = sorted({f"{w}×{h}" for w, h in filter(None, measured.values())})
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
    elif entry.in_flight:  # on its way: its state where the picture will be
        state = "downloading" if entry.state == "completed" else entry.state
        body = f'<div class="pending"><p>{e(state)}</p></div>'
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


def render(
    entries: Sequence[Entry],
    title: str,
    *,
    live: bool = False,
    sizes: Mapping[str, tuple[int, int]] | None = None,
) -> str:
    """The page for `entries` (in the order given), titled `title`; `live`: a batch's
    page while it runs, which reloads itself every REFRESH_SECONDS. `sizes`: the
    images' pixel sizes by name, where not in the entries' own `dimensions`."""
    sizes = {} if sizes is None else sizes
    files = [name for entry in entries for name in entry.files]
    videos = sum(name.lower().endswith(VIDEO_SUFFIXES) for name in files)
    images = len(files) - videos
    failed = sum(entry.failed for entry in entries)
    waiting = sum(entry.in_flight for entry in entries)
    costs = [entry.cost for entry in entries if entry.cost is not None]
    summary = [f"{images} image{'s' if images != 1 else ''}"] if images or not videos else []
    if videos:
        summary.append(f"{videos} video{'s' if videos != 1 else ''}")
    if failed:
        summary.append(f"{failed} failed")
    if waiting:
        summary.append(f"{waiting} on the way")
    if costs:
        summary.append(f"cost {_cost(sum(costs))}")
    cards = "\n".join(_card(entry, sizes) for entry in entries)
    empty = "" if entries else "<p>No images yet.</p>"
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if live else ""
    footer = "Made by apimart. Newest first." + (
        f" The batch is running: this page reloads every {REFRESH_SECONDS} s." if live else ""
    )
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{_MARK}'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"{refresh}"
        # No script, no network: nothing but this file and the images beside it.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        f"<header><h1>{html.escape(title)}</h1><p>{' · '.join(summary)}</p></header>\n"
        f"<main>\n{cards}\n</main>{empty}\n"
        f"<footer>{footer}</footer>\n"
        "</body></html>\n"
    )


def image_size(path: str | Path) -> tuple[int, int] | None:
    """An image's width and height from its header; None where it cannot be read."""
    from apimart_cli.images import image_dimensions

    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        head = os.read(descriptor, _SHORT_HEAD)
        found = image_dimensions(head)
        if found is None and len(head) == _SHORT_HEAD:
            found = image_dimensions(head + os.read(descriptor, _LONG_HEAD - _SHORT_HEAD))
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return found


def measure(
    folder: Path, entries: Sequence[Entry], known: dict[str, tuple[int, int]] | None = None
) -> dict[str, tuple[int, int]]:
    """Each image's pixel size by name, read from its header, so the grid does not jump.
    `known` caches the sizes between calls (a batch's page is written many times)."""
    known = {} if known is None else known
    base = os.fspath(folder)
    for entry in entries:
        for name in entry.files:
            if name not in known:
                found = image_size(os.path.join(base, name))  # noqa: PTH118 - 10,000 of them
                if found:
                    known[name] = found
    return known


def with_dimensions(
    folder: Path, entries: Sequence[Entry], known: dict[str, tuple[int, int]] | None = None
) -> list[Entry]:
    """Entries with each image's pixel size in their `dimensions`."""
    sizes = measure(folder, entries, known)
    return [
        replace(entry, dimensions={name: sizes[name] for name in entry.files if name in sizes})
        for entry in entries
    ]


class ForeignPage(Exception):
    """An `index.html` this tool did not write sits where the page goes: it is kept."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is a page apimart did not make")
        self.path = path


def _foreign(path: Path) -> bool:
    """Whether `path` holds a file that is not a page this tool wrote, read never
    through a link (a link there is replaced by the rename, not read)."""
    import errno
    import stat

    try:
        descriptor = safefiles.open_no_follow(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise
        return False  # nothing there, or a link: the rename replaces it
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            return False  # a FIFO or socket planted there: replaced, never read
        head = os.pread(descriptor, _MARK_WITHIN, 0)
        tail = os.pread(descriptor, _MARK_WITHIN, max(0, info.st_size - _MARK_WITHIN))
    finally:
        os.close(descriptor)
    return _MARK.encode() not in head and _OLD_MARK.encode() not in tail


def write(
    folder: Path,
    entries: Sequence[Entry],
    *,
    title: str | None = None,
    redact: Callable[[str], str] = str,
    sizes: dict[str, tuple[int, int]] | None = None,
    live: bool = False,
) -> Path:
    """Write `index.html` in `folder` atomically, never through a link; its path.

    ForeignPage, with nothing written, where an `index.html` that this tool did not
    write is there: a folder's own page is never replaced by the gallery."""
    target = folder / PAGE_NAME
    if _foreign(target):
        raise ForeignPage(target)
    title = title or f"apimart · {folder.resolve().name or folder}"
    known = measure(folder, entries, sizes)
    from apimart_cli.secrets import redact as hidden

    page = hidden(redact(render(entries, title, live=live, sizes=known)))
    # A stored text with a lone surrogate is written as "?", not a crash.
    content = page.encode("utf-8", errors="replace")
    # The name itself is replaced: a link planted at index.html is not followed.
    safefiles.write_atomic(target, content, mode=safefiles.usual_mode(0o644))
    return target
