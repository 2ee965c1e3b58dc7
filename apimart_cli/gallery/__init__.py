"""The gallery: `index.html`, one self-contained page of the images in a folder.

Two halves: `gather` finds what to show (one `Entry` per job, from a batch
manifest, the task history read with a bound, and the images' own provenance),
and `page` writes the page. `build` is `apimart gallery`; `Keeper` keeps a
batch's page, from the batch's start to its end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apimart_cli.errors import named
from apimart_cli.gallery.gather import (
    HISTORY_ROWS,
    IMAGE_SUFFIXES,
    Entry,
    entries_for_folder,
    from_history_record,
    from_manifest_record,
    from_provenance,
    images_in,
    newest_first,
    task_id_of,
)
from apimart_cli.gallery.page import (
    PAGE_NAME,
    REFRESH_SECONDS,
    ForeignPage,
    render,
    with_dimensions,
    write,
)

if TYPE_CHECKING:
    from apimart_cli.history import History

__all__ = [
    "HISTORY_ROWS",
    "IMAGE_SUFFIXES",
    "PAGE_NAME",
    "REFRESH_SECONDS",
    "Entry",
    "ForeignPage",
    "Keeper",
    "build",
    "entries_for_folder",
    "from_history_record",
    "from_manifest_record",
    "from_provenance",
    "images_in",
    "render",
    "task_id_of",
    "with_dimensions",
    "write",
]

Records = Callable[[], Iterable[Mapping[str, Any]]]


def build(
    folder: Path,
    history: History | None,
    manifest: Iterable[Mapping[str, Any]] = (),
    *,
    redact: Callable[[str], str] = str,
) -> tuple[Path, int]:
    """Write the gallery of `folder` from its batch manifest's records, the history and
    the images' own provenance; its path and how many images it shows. UsageError if
    there is no folder.

    The history is read by the task ids in the images' names, and its newest
    rows (HISTORY_ROWS, or as many as the images where there are more) for files
    saved under other names: never all of it.
    """
    from apimart_cli.errors import UsageError
    from apimart_cli.provenance import NotPNG, read_file

    name = named(folder)
    if not folder.is_dir():
        raise UsageError(
            f"No folder {name}." if not folder.exists() else f"{name} is not a folder.",
            "Name the folder of images: apimart gallery out/",
        )

    def own(path: Path) -> Mapping[str, Any] | None:
        try:
            return read_file(path)
        except (OSError, NotPNG):
            return None

    images = images_in(folder)
    bound = max(HISTORY_ROWS, len(images))
    entries = entries_for_folder(
        folder,
        manifest=list(manifest),
        history=history.get if history is not None else lambda task_id: None,
        history_files=history.list(limit=bound) if history is not None else (),
        provenance=own,
        images=images,
    )
    try:
        path = write(folder, entries, redact=redact)
    except ForeignPage as exc:
        raise UsageError(
            f"{named(exc.path)} is a page apimart did not make; it is kept.",
            "Move it away to make the gallery there, or keep the images in a folder of their own.",
        ) from None
    except IsADirectoryError:
        raise UsageError(
            f"{named(folder / PAGE_NAME)} is a folder, where the gallery is to be written.",
            "Move it away, or name another folder.",
        ) from None
    except OSError as exc:
        raise UsageError(
            f"Cannot write the gallery in {name}: {exc.strerror or exc}",
            "Check the folder's permissions and free space.",
        ) from None
    return path, sum(len(entry.files) for entry in entries)


class Keeper:
    """Keeps a batch's `index.html`: there from the batch's start, with every job in its
    state (those on their way too), reloading itself while the batch runs, and no longer
    once it has ended (`close`).

    While the batch runs the page is rewritten at most once every `every` seconds
    (it reloads itself less often than that), on a thread of its own: the caller
    only takes a snapshot of the records, under its own lock, and goes on; the
    page for 1,000 jobs takes tens of milliseconds to render and sync, which the
    batch's submissions must not wait for. `close` writes the last page itself.
    The pixel sizes of the images are read once each, not at every rewrite. A
    page that cannot be written is said once and the run goes on.
    """

    def __init__(
        self,
        folder: Path,
        *,
        warn: Callable[[str], None],
        redact: Callable[[str], str] = str,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.folder = folder
        self._warn, self._redact = warn, redact
        self._every, self._clock = every, clock
        self._sizes: dict[str, tuple[int, int]] = {}
        self._broken = False
        self._written: float | None = None  # when a page was last due
        self._closed = False
        self._changed = threading.Condition()
        self._pending: list[Mapping[str, Any]] | None = None  # the next page's records
        self._busy = False  # the writer is writing a page
        self._writer: threading.Thread | None = None

    def update(self, records: Records) -> None:
        """The jobs moved on: the page, if it is due (`records` is asked only then)."""
        now = self._clock()
        if self._closed or (self._written is not None and now - self._written < self._every):
            return
        self._written = now
        snapshot = list(records())
        with self._changed:
            self._pending = snapshot
            self._changed.notify_all()
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_pages, name="gallery", daemon=True)
            self._writer.start()

    def close(self, records: Records) -> None:
        """The batch has ended: the page as it ends, which no longer reloads itself."""
        snapshot = list(records())
        with self._changed:
            self._closed, self._pending = True, None
            self._changed.notify_all()
            while self._busy:  # a live page being written must not land after this one
                self._changed.wait()
        self._write(snapshot, live=False)

    def settle(self) -> None:
        """Wait until the page due has been written (for tests)."""
        with self._changed:
            while self._busy or self._pending is not None:
                self._changed.wait()

    def _write_pages(self) -> None:
        while True:
            with self._changed:
                while self._pending is None and not self._closed:
                    self._changed.wait()
                if self._closed:
                    return
                snapshot, self._pending, self._busy = self._pending, None, True
            assert snapshot is not None
            try:
                self._write(snapshot, live=True)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _write(self, records: Iterable[Mapping[str, Any]], *, live: bool) -> None:
        if self._broken:
            return
        entries = [e for e in (from_manifest_record(r, live=True) for r in records) if e]
        try:
            write(
                self.folder,
                newest_first(entries),
                redact=self._redact,
                sizes=self._sizes,
                live=live,
            )
        except ForeignPage as exc:
            self._broken = True
            self._warn(
                f"Warning: {named(exc.path)} is a page apimart did not make; it is "
                "kept, and this batch writes no gallery."
            )
        except OSError as exc:
            self._broken = True
            self._warn(
                f"Warning: cannot write {named(self.folder / PAGE_NAME)}: "
                f"{exc.strerror or exc}. `apimart gallery` can make it later."
            )
