"""Progress on standard error: rich bars on a terminal, plain lines off it.

Off a terminal (a CI log, a pipe into a file) the user gets one line per state
change, a running download's bytes and rate at most every few seconds, and a
heartbeat at most every 30 s: no ANSI codes, no carriage returns. `--quiet`
silences all of it. Two displays share these rules: an `engine.Reporter` (a bar
per task) for `wait`, `download` and `generate --wait`, and a `BatchDisplay`
(one bar for the whole batch) for `batch`. With `console`, the only modules
that write to the terminal; the only ones that know rich.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from apimart_cli import console
from apimart_cli.constants import DOWNLOAD_NOTE_SECONDS, HEARTBEAT_SECONDS
from apimart_cli.errors import ExitCode
from apimart_cli.tasks import waiting_label as waiting_label

if TYPE_CHECKING:
    from apimart_cli.batch.tracker import BatchDisplay
    from apimart_cli.downloads import SavedFile
    from apimart_cli.engine import Outcome
    from apimart_cli.errors import ApimartError, HistoryError
    from apimart_cli.tasks import Task


def display_mode() -> Literal["silent", "rich", "plain"]:
    """Silent with --quiet, rich bars on a terminal, else plain lines.

    A terminal that cannot move its cursor (TERM=dumb, as in an editor's shell) gets
    the plain lines too: rich would draw its bars there only once, at the very end.
    """
    if console.is_quiet():
        return "silent"
    dumb = os.environ.get("TERM") in ("dumb", "unknown")
    return "rich" if console.is_terminal(sys.stderr) and not dumb else "plain"


def _progress_on_stderr(*columns: Any, view: Callable[[], Any] | None = None) -> Any:
    """A rich `Progress` drawn on standard error (not started); with `view`, what it
    draws is what `view()` returns, not a table of its own tasks."""
    from rich.console import Console  # only here: rich is slow to import
    from rich.progress import Progress

    class Viewed(Progress):
        def get_renderables(self) -> Any:
            assert view is not None
            yield view()

    return (Progress if view is None else Viewed)(
        *columns,
        console=Console(file=console.redacting(sys.stderr)),
        transient=False,
        # Data printed while the bars show goes above them, but only when standard output
        # is this terminal too: paths printed to a file or pipe must reach it.
        redirect_stdout=console.is_terminal(sys.stdout),
    )


def _print_above(progress: Any, text: str) -> None:
    """A line of text above the bars, as given (no markup: a path may hold brackets),
    with any secret cut out, as `console` does for every line."""
    progress.console.print(console.redact(text), markup=False, highlight=False)


# -- waiting for tasks: a bar per task -------------------------------------------------------


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB"):
        if count < 1024 or unit == "MiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} MiB"  # pragma: no cover - the loop always returns


class _Transfer:
    """One image downloading: when it started, and how much it had then."""

    def __init__(self, now: float, received: int) -> None:
        self.started = now
        self.first = received  # a resumed download starts past 0

    def rate(self, now: float, received: int) -> float:
        elapsed = now - self.started
        return (received - self.first) / elapsed if elapsed > 0 else 0.0


def _transfer_text(received: int, total: int | None, rate: float) -> str:
    size = f"{human_bytes(received)} of {human_bytes(total)}" if total else human_bytes(received)
    return f"downloading {size}, {human_bytes(rate)}/s"


class _TransferNotes:
    """Lines off a terminal for the images downloading: one line for all of them, at
    most every DOWNLOAD_NOTE_SECONDS, so a long download never looks frozen, and many
    images downloading at once never flood the log."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # Each image downloading, by key: its transfer, bytes so far and of how many.
        self._transfers: dict[tuple[object, int], tuple[_Transfer, int, int | None]] = {}
        self._names: dict[tuple[object, int], str] = {}
        self._last_note = 0.0

    def due(
        self, key: tuple[object, int], name: str, received: int, total: int | None
    ) -> str | None:
        """What to say of the downloads now (`name`: this one's, for a line of its own
        where it is the only one); None if it was said lately."""
        now = self._clock()
        with self._lock:
            if not self._transfers:  # the first download after a quiet spell
                self._last_note = now
            known = self._transfers.get(key)
            transfer = known[0] if known else _Transfer(now, received)
            self._transfers[key], self._names[key] = (transfer, received, total), name
            if now - self._last_note < DOWNLOAD_NOTE_SECONDS:
                return None
            self._last_note = now
            running = list(self._transfers.items())
        if len(running) == 1:
            (key, (transfer, received, total)), *_ = running
            rate = transfer.rate(now, received)
            return f"{self._names[key]}: {_transfer_text(received, total, rate)}"
        got = sum(received for _, received, _ in (item for _, item in running))
        totals = [total for _, (_, _, total) in running]
        whole = None if None in totals else sum(t or 0 for t in totals)
        rate = sum(t.rate(now, r) for _, (t, r, _) in running)
        return f"{len(running)} images: {_transfer_text(got, whole, rate)}"

    def done(self, key: tuple[object, int]) -> None:
        """This image's download is over (saved, or given up)."""
        with self._lock:
            self._transfers.pop(key, None)
            self._names.pop(key, None)

    def done_with(self, owner: object) -> None:
        """Every download of `owner` (a task id, a batch line) is over."""
        with self._lock:
            for key in [key for key in self._transfers if key[0] == owner]:
                del self._transfers[key]
                self._names.pop(key, None)


def _describe(task: Task, now: float | None = None) -> str:
    """A task's state for people; with `now` (wall time), how long it has taken so far
    against the service's estimate."""
    text = task.status
    if not task.known_status:
        text += " (a state this tool does not know; still waiting)"
    elif task.status == "processing" and task.progress is not None:
        text += f" {task.progress}%"
    if now is not None and not task.finished and task.created is not None:
        elapsed = max(now - task.created, 0)
        text += f", {elapsed:.0f} s"
        if task.estimated_time:
            text += f" of about {task.estimated_time:.0f} s"
    return text


class SilentReporter:
    """--quiet: no progress, only what must be said; the data on standard output.

    Standard output gets each saved path as it is saved, or with `--json` one
    object per task as it ends, or with `--no-download` each completed task's id.
    """

    def __init__(self, *, as_json: bool = False, download: bool = True) -> None:
        self._as_json = as_json
        self._download = download

    def added(self, task_id: str) -> None:
        pass

    def update(self, task: Task) -> None:
        pass

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        pass

    def saved(self, task: Task, index: int, saved: SavedFile) -> None:
        path = str(saved.path)
        if saved.kept_existing:
            console.warn(f"{task.task_id}: kept the existing {path} (use --force to replace it)")
        elif self._as_json or not console.is_terminal(sys.stdout):
            # Where the path goes to the same screen on standard output, once is enough.
            self._saved(task.task_id, path)
        if not self._as_json:
            console.data(path)

    def _saved(self, task_id: str, path: str) -> None:
        pass

    def image(self, escape: str) -> None:
        """An inline preview: only on a terminal, where the rich display is."""

    def failed(self, task_id: str | None, error: ApimartError) -> None:
        console.warn(f"{task_id}: {error.message}" if task_id else f"Error: {error.message}")

    def history_failed(self, error: HistoryError) -> None:
        console.warn(f"Warning: {error.message} The history is not updated further.")

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        if task.status != "completed":
            reason = task.error_message or "no reason given"
            console.warn(f"{task.task_id}: {task.status}: {reason}")
        if self._as_json:
            console.data_json({**task.raw, "files": [str(path) for path in files]})
        elif not self._download and task.status == "completed":
            console.data(task.task_id)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class PlainReporter(SilentReporter):
    """One line per state change, a download's progress at most every few seconds,
    and a heartbeat while nothing changes."""

    def __init__(
        self, *, as_json: bool = False, download: bool = True, clock: Any = time.monotonic
    ) -> None:
        super().__init__(as_json=as_json, download=download)
        self._clock = clock
        self._lock = threading.Lock()
        self._tasks: dict[str, Task | None] = {}
        self._notes = _TransferNotes(clock)
        self._last_line = clock()

    def _line(self, text: str) -> None:
        console.info(text)
        self._last_line = self._clock()

    def added(self, task_id: str) -> None:
        with self._lock:
            self._tasks.setdefault(task_id, None)

    def update(self, task: Task) -> None:
        with self._lock:
            before = self._tasks.get(task.task_id)
            self._tasks[task.task_id] = task
        if before is None or before.status != task.status:
            self._line(f"{task.task_id}: {_describe(task)}")

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        text = self._notes.due((task_id, index), f"{task_id}: image {index}", received, total)
        if text is not None:
            self._line(text)

    def saved(self, task: Task, index: int, saved: SavedFile) -> None:
        self._notes.done((task.task_id, index))
        super().saved(task, index, saved)

    def _saved(self, task_id: str, path: str) -> None:
        self._line(f"{task_id}: saved {path}")

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        self._notes.done_with(task.task_id)
        super().finished(task, files)

    def tick(self) -> None:
        if self._clock() - self._last_line < HEARTBEAT_SECONDS:
            return
        with self._lock:
            waiting = [t for t in self._tasks.values() if t is None or not t.finished]
        if not waiting:
            self._last_line = self._clock()
            return
        text = f"still waiting for {len(waiting)} task(s)"
        oldest = min(
            (t for t in waiting if t is not None and t.created), key=_created, default=None
        )
        if oldest is not None:
            text += f"; {oldest.task_id}: {_describe(oldest, time.time())}"
        self._line(text)


def _created(task: Task) -> float:
    return float(task.created or 0)


def clock_text(seconds: float) -> str:
    """0:01:05: the one clock each line shows, counting from the command's start."""
    whole = max(int(seconds), 0)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _amounts(received: int, total: int | None) -> str:
    """'1.5 of 12.0 MiB': both in the total's unit, so that the line stays short."""
    if not total:
        return human_bytes(received)
    size, unit = human_bytes(total).split(" ")
    scale = {"B": 1, "KiB": 1024, "MiB": 1024 * 1024}[unit]
    done = f"{received / scale:.0f}" if unit == "B" else f"{received / scale:.1f}"
    return f"{done} of {size} {unit}"


def _rate(rate: float) -> str:
    """'147 KiB/s', '1.2 MiB/s': few digits, the rate changes too often to read more."""
    for unit in ("B", "KiB"):
        if rate < 1024:
            return f"{rate:.0f} {unit}/s"
        rate /= 1024
    return f"{rate:.1f} MiB/s"


class _Row:
    """One line of the display: a task's wait, or one of its images' download. Drawn
    at every refresh, so its label and clock move between the events that change it."""

    def __init__(self, order: tuple[int, int], name: str) -> None:
        self.order, self.name = order, name
        self.ended: float | None = None  # monotonic; the clock stops there
        self.fixed: str | None = None  # a label that no longer moves
        self.fraction: float | None = 0.0  # the bar, 0-1; None to pulse

    def end(self, label: str, fraction: float | None = 1.0) -> None:
        if self.ended is None:
            self.ended = time.monotonic()
        self.fixed, self.fraction = label, fraction

    def label(self) -> str:
        return self.fixed or ""

    def bar(self) -> float | None:
        return self.fraction


class _TaskRow(_Row):
    def __init__(self, order: tuple[int, int], name: str) -> None:
        super().__init__(order, name)
        self.fixed = "submitted"
        self.task: Task | None = None
        self.seen = 0.0  # wall time of the last reply

    def _moving(self) -> tuple[str, float | None] | None:
        if self.fixed is not None or self.task is None:
            return None
        return waiting_label(self.task, now=time.time(), seen=self.seen)

    def label(self) -> str:
        moving = self._moving()
        return self.fixed or "" if moving is None else moving[0]

    def bar(self) -> float | None:
        moving = self._moving()
        return self.fraction if moving is None else moving[1]


class _ImageRow(_Row):
    def __init__(self, order: tuple[int, int], name: str) -> None:
        super().__init__(order, name)
        self.received = 0
        self.total: int | None = None
        self.transfer: _Transfer | None = None

    def label(self) -> str:
        if self.fixed is not None or self.transfer is None:
            return self.fixed or "downloading"
        rate = self.transfer.rate(time.monotonic(), self.received)
        return f"{_amounts(self.received, self.total)}, {_rate(rate)}"


def _clock_column() -> Any:
    """A rich column with the command's clock, stopped where its row ended."""
    from rich.progress import ProgressColumn
    from rich.table import Column

    class Clock(ProgressColumn):
        def render(self, task: Any) -> Any:
            return _clock_text(_row_clock(task.fields["row"]))

    return Clock(table_column=Column(no_wrap=True, justify="right"))


def _clock_text(clock: str) -> Any:
    from rich.text import Text

    return Text(clock, style="progress.elapsed")


def _row_clock(row: _Row) -> str:
    now = row.ended if row.ended is not None else time.monotonic()
    return clock_text(now - console.started())


# The narrowest label a row keeps beside its name, bar and clock; on a terminal too narrow
# for it, each row takes two lines: its name and clock, then its bar and label.
MIN_LABEL_WIDTH = 26
BAR_WIDTH = 8


class _RowsView:
    """The rows of a `RichReporter`, fitted to the terminal as it is at each refresh.

    Wide enough: a line a row, its name, bar, label (wrapping if it must) and clock.
    Narrower: two lines a row, so the label never shrinks to a column of letters and
    the task id is never cut. Taller than the terminal (which would hide the rows below
    behind an ellipsis): the tasks that have ended give way to one line that counts
    them, then the last rows to one that counts what is not shown. The final frame
    (`final`) shows every row, wherever it ends.
    """

    def __init__(self, rows: Callable[[], list[_Row]]) -> None:
        self._rows = rows
        self.final = False

    def __rich_console__(self, rich_console: Any, options: Any) -> Any:
        from rich.segment import Segment

        rows = sorted(self._rows(), key=lambda row: row.order)
        width = options.max_width
        clocks = {id(row): _row_clock(row) for row in rows}
        clock_width = max((len(text) for text in clocks.values()), default=7)
        name_width = max((len(row.name) for row in rows), default=0)
        room = width - name_width - BAR_WIDTH - clock_width - 3
        wide = room >= MIN_LABEL_WIDTH
        # The clocks line up right after the longest label, not at the far edge: a line
        # no longer than it must be is less often re-wrapped by a terminal made narrower.
        labels = {id(row): row.label() for row in rows}
        label_width = min(room, max((len(text) for text in labels.values()), default=0))

        def lines(renderable: Any) -> list[list[Any]]:
            rendered: list[list[Any]] = rich_console.render_lines(renderable, options, pad=False)
            return rendered

        def draw(row: _Row) -> Any:
            label, clock = labels[id(row)], clocks[id(row)]
            if wide:
                return self._line(row, label, clock, name_width, label_width)
            return self._two_lines(row, label, clock, width)

        drawn = [(row, lines(draw(row))) for row in rows]
        shown = drawn if self.final else self._fit(drawn, options.size.height, lines)
        for row_lines in (row_lines for _, row_lines in shown):
            for line in row_lines:
                yield from line
                yield Segment.line()

    @staticmethod
    def _bar(row: _Row) -> Any:
        from rich.progress_bar import ProgressBar

        fraction = row.bar()
        return ProgressBar(
            total=1.0, completed=fraction or 0.0, width=BAR_WIDTH, pulse=fraction is None
        )

    @classmethod
    def _line(cls, row: _Row, label: str, clock: str, name_width: int, label_width: int) -> Any:
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=name_width, no_wrap=True)
        grid.add_column(width=BAR_WIDTH, no_wrap=True)
        grid.add_column(width=label_width, overflow="fold")
        grid.add_column(no_wrap=True, justify="right")
        grid.add_row(Text(row.name), cls._bar(row), Text(label), _clock_text(clock))
        return grid

    @classmethod
    def _two_lines(cls, row: _Row, label: str, clock: str, width: int) -> Any:
        """The name (folded on a terminal narrower than an id, never cut) and the clock
        at the right; under it, indented, the bar and the label."""
        from rich.console import Group
        from rich.padding import Padding
        from rich.table import Table
        from rich.text import Text

        head = Table.grid(padding=(0, 1))
        head.add_column(width=max(width - len(clock) - 1, 1), overflow="fold")
        head.add_column(no_wrap=True, justify="right")
        head.add_row(Text(row.name), _clock_text(clock))
        indent = len(row.name) - len(row.name.lstrip()) + 2
        body = Table.grid(padding=(0, 1))
        body.add_column(width=BAR_WIDTH, no_wrap=True)
        body.add_column(width=max(width - indent - BAR_WIDTH - 1, 1), overflow="fold")
        body.add_row(cls._bar(row), Text(label))
        return Group(head, Padding(body, (0, 0, 0, indent)))

    @staticmethod
    def _fit(
        drawn: list[tuple[_Row, list[Any]]],
        height: int,
        lines: Callable[[Any], list[Any]],
    ) -> list[tuple[_Row | None, list[Any]]]:
        """The rows that fit in `height` lines, with a line for what gave way."""
        from rich.text import Text

        shown: list[tuple[_Row | None, list[Any]]] = list(drawn)
        if sum(len(row_lines) for _, row_lines in drawn) <= height:
            return shown
        # A task's group: its line and its images' lines. Over: every line of it ended.
        groups: dict[int, list[tuple[_Row, list[Any]]]] = {}
        for row, row_lines in drawn:
            groups.setdefault(row.order[0], []).append((row, row_lines))
        over = [k for k, group in groups.items() if all(r.ended is not None for r, _ in group)]
        head: list[tuple[_Row | None, list[Any]]] = []
        if over:
            head = [(None, lines(Text(f"{_count(len(over), 'task')} ended, listed at the end")))]
        rest = [item for key, group in groups.items() if key not in over for item in group]
        if sum(len(row_lines) for _, row_lines in [*head, *rest]) <= height:
            return [*head, *rest]
        budget = height - sum(len(row_lines) for _, row_lines in head) - 1
        kept: list[tuple[_Row | None, list[Any]]] = []
        for row, row_lines in rest:
            if len(row_lines) > budget:
                break
            kept.append((row, row_lines))
            budget -= len(row_lines)
        hidden = rest[len(kept) :]
        tasks = sum(isinstance(row, _TaskRow) for row, _ in hidden)
        images = len(hidden) - tasks
        more = [_count(tasks, "more task")] if tasks else []
        more += [_count(images, "more image")] if images else []
        tail = (None, lines(Text("… " + ", ".join(more) + " not shown")))
        return [*head, *kept, tail]


class RichReporter(SilentReporter):
    """A line per task on a terminal: its state, the time left on the service's estimate,
    and a line under it per image downloading (bytes, rate, then saved). Every line has
    one clock, the command's, and every label moves between polls."""

    def __init__(self, *, as_json: bool = False, download: bool = True) -> None:
        super().__init__(as_json=as_json, download=download)
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, int], _Row] = {}  # (task id, -1) for the task's line
        self._order: dict[str, int] = {}
        self._view = _RowsView(self._all_rows)
        self._progress = _progress_on_stderr(view=lambda: self._view)
        self._progress.start()

    def _all_rows(self) -> list[_Row]:
        with self._lock:
            return list(self._rows.values())

    def _row(self, task_id: str, index: int = -1) -> _Row:
        with self._lock:
            row = self._rows.get((task_id, index))
            if row is None:
                order = (self._order.setdefault(task_id, len(self._order)), index)
                if index < 0:
                    row = _TaskRow(order, task_id)
                else:
                    row = _ImageRow(order, f"  image {index}")
                self._rows[(task_id, index)] = row
            return row

    def added(self, task_id: str) -> None:
        self._row(task_id)

    def update(self, task: Task) -> None:
        row = self._row(task.task_id)
        assert isinstance(row, _TaskRow)
        if task.status == "completed":
            count = len(task.images)
            what = "image" if count == 1 else "images"
            # Its clock runs on until its downloads are over (`finished`).
            row.fixed = f"completed, {count} {what}" if self._download else "completed"
            row.fraction = 1.0
            if not self._download:
                row.end(row.fixed)
            return
        if task.finished:
            row.end(task.status, fraction=row.bar())
            return
        row.task, row.seen, row.fixed = task, time.time(), None

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        row = self._row(task_id, index)
        assert isinstance(row, _ImageRow)
        if row.transfer is None:
            row.transfer = _Transfer(time.monotonic(), received)
        row.received, row.total = received, total
        row.fraction = received / total if total else None

    def saved(self, task: Task, index: int, saved: SavedFile) -> None:
        row = self._row(task.task_id, index)
        size = saved.path.stat().st_size if saved.path.is_file() else None
        if saved.kept_existing:
            row.end("kept the existing file")
        else:
            row.end("saved" if size is None else f"saved, {human_bytes(size)}")
        super().saved(task, index, saved)

    def _saved(self, task_id: str, path: str) -> None:
        _print_above(self._progress, f"saved {path}")

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        row = self._row(task.task_id)
        if task.status == "completed" and self._download:
            count = len(files)
            row.end(f"{count} image{'' if count == 1 else 's'} saved")
            with self._lock:
                images = [r for (t, i), r in self._rows.items() if t == task.task_id and i >= 0]
            for image in images:
                if image.ended is None:
                    image.end("not saved", fraction=image.fraction)
        elif task.status != "completed":
            row.end(task.status, fraction=row.bar())
        super().finished(task, files)

    def image(self, escape: str) -> None:
        """An inline image's escape sequence, drawn above the bars, then a new line."""
        self._progress.console.print(_Escape(escape), highlight=False)

    def close(self) -> None:
        self._view.final = True  # the last frame shows every row, however tall
        self._progress.stop()


class _Escape:
    """A terminal escape sequence that rich writes as it is, taking no room on the line."""

    def __init__(self, sequence: str) -> None:
        self.sequence = sequence

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.segment import ControlType, Segment

        # A control segment is written verbatim on a terminal and counts no cells,
        # so rich neither wraps nor crops the (long) sequence.
        yield Segment(self.sequence, None, [(ControlType.BELL,)])
        yield Segment.line()


def make_reporter(*, as_json: bool = False, download: bool = True) -> SilentReporter:
    """The reporter for this run: silent with --quiet, bars on a terminal, else lines."""
    mode = display_mode()
    if mode == "rich":
        return RichReporter(as_json=as_json, download=download)
    if mode == "plain":
        return PlainReporter(as_json=as_json, download=download)
    return SilentReporter(as_json=as_json, download=download)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def summary_line(outcome: Outcome, *, downloaded: bool = True) -> str:
    """The one line that ends a wait: images saved, tasks failed, cost if reported."""
    from apimart_cli.images import VIDEO_EXTENSIONS

    paths = [path for saved in outcome.files.values() for path in saved]
    videos = sum(path.suffix.lower() in VIDEO_EXTENSIONS.values() for path in paths)
    images = len(paths) - videos
    kinds = [_count(images, "image")] if images or not videos else []
    kinds += [_count(videos, "video")] if videos else []
    parts = [
        " and ".join(kinds) + " saved"
        if downloaded
        else _count(outcome.completed, "task") + " completed",
        _count(len(outcome.failed - outcome.not_completed), "task") + " failed",
    ]
    if outcome.not_completed:
        parts.append(f"{len(outcome.not_completed)} not completed yet")
    if outcome.timed_out and outcome.unfinished:
        parts.append(f"{len(outcome.unfinished)} unfinished")
    if outcome.costs:
        from apimart_cli.costs import cost_text

        parts.append(f"cost {cost_text(sum(outcome.costs.values()))}")
    return ", ".join(parts) + "."


def show_ending(
    outcome: Outcome,
    *,
    timeout: float,
    resume: Callable[[list[str]], str] | None,
    downloaded: bool = True,
    as_json: bool = False,
) -> None:
    """After a wait: what to do, the summary line, then what is unfinished and the
    command that resumes it (`resume` None: nothing can resume it, as under --sandbox);
    with `as_json`, how it ended as one error object too."""
    for hint in outcome.hints:
        console.warn(hint)
    if outcome.interrupted:
        how = "Terminated" if outcome.exit_code == ExitCode.TERMINATED else "Interrupted"
        _unfinished(how, outcome.unfinished, resume)
    else:
        console.info(summary_line(outcome, downloaded=downloaded))
        if outcome.timed_out:
            _unfinished(f"Timed out after {timeout:g} s", outcome.unfinished, resume)
    error = outcome.as_error(resume(outcome.unfinished) if resume and outcome.unfinished else None)
    if as_json and error is not None:
        console.error_json(error)


def _unfinished(
    reason: str, task_ids: list[str], resume: Callable[[list[str]], str] | None
) -> None:
    if not task_ids:
        console.warn(f"{reason}.")
        return
    console.warn(f"{reason}; {len(task_ids)} task(s) unfinished: {' '.join(task_ids)}")
    if resume is None:
        console.warn("They ended with the sandbox; there is nothing to resume.")
    else:
        console.warn(f"Resume with: {resume(task_ids)}")


# -- a batch: one bar for all its jobs -------------------------------------------------------

# The stages a batch job goes through, as `batch.manifest.JobRun.stage()` names them.
BATCH_STAGES = ("queued", "submitted", "processing", "done", "failed")


class SilentBatchDisplay:
    """--quiet: only warnings, and the data on standard output."""

    def start(self) -> None:
        pass

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        pass

    def saved(self, line: int, index: int, path: str) -> None:
        """An image of the job is saved (its path goes to standard output as data)."""

    def transferred(self, line: int, index: int, received: int, total: int | None) -> None:
        pass

    def cost(self, total: float) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def warning(self, text: str) -> None:
        console.warn(text)

    def output(self, line: str) -> None:
        console.data(line)

    def close(self) -> None:
        pass


class PlainBatchDisplay(SilentBatchDisplay):
    """A line per change of a job (its `note`), a download's progress at most every few
    seconds, and each message."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._notes = _TransferNotes(clock)

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        if stage in ("done", "failed"):
            self._notes.done_with(line)
        if note:
            console.info(f"line {line}: {note}")

    def transferred(self, line: int, index: int, received: int, total: int | None) -> None:
        text = self._notes.due((line, index), f"line {line}: image {index}", received, total)
        if text is not None:
            console.info(text)

    def saved(self, line: int, index: int, path: str) -> None:
        self._notes.done((line, index))
        console.info(f"line {line}: saved {path}")

    def message(self, text: str) -> None:
        console.info(text)


# How far along the bar a job counts at each stage before it ends; a job downloading
# counts the rest by the bytes it has.
_STAGE_SHARE = {"queued": 0.0, "submitted": 0.05, "processing": 0.25}


class RichBatchDisplay(SilentBatchDisplay):
    """One overall bar on a terminal, with how many jobs are at each stage, the images
    downloading and their rate, the cost, and the command's clock. The bar counts each
    job's stage and download bytes, so it moves while jobs process, not only as they end."""

    def __init__(self, lines: Iterable[int]) -> None:
        from rich.progress import BarColumn, TextColumn
        from rich.table import Column

        self._stages = dict.fromkeys(lines, "queued")
        # Each image downloading: its transfer, its rate, and its share done (0-1).
        self._transfers: dict[tuple[int, int], tuple[_Transfer, float, float]] = {}
        self._cost = 0.0
        self._lock = threading.Lock()
        clock = _clock_column()  # the command's clock, as on every other display

        class OnlyOnTheBar(BarColumn):  # the second line (downloads, cost) has no bar
            def render(self, task: Any) -> Any:
                return "" if task.fields.get("plain") else super().render(task)

        class Count(TextColumn):
            def render(self, task: Any) -> Any:
                return "" if task.fields.get("plain") else super().render(task)

        class Clock(type(clock)):  # type: ignore[misc]
            def render(self, task: Any) -> Any:
                return "" if task.fields.get("plain") else super().render(task)

        self._progress = _progress_on_stderr(
            TextColumn("{task.description}", markup=False, table_column=Column(overflow="fold")),
            OnlyOnTheBar(bar_width=8),
            Count("{task.fields[ended]}/{task.total:.0f}", markup=False),
            Clock(table_column=clock.get_table_column()),
        )
        self._bar = self._progress.add_task(
            self._counts(), total=len(self._stages), ended=0, row=_Row((0, 0), "")
        )
        # A second line, while images download or once there is a cost.
        self._extra = self._progress.add_task(
            "", total=None, visible=False, plain=True, ended=0, row=_Row((0, 1), "")
        )

    def start(self) -> None:
        self._progress.start()

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        with self._lock:
            self._stages[line] = stage
            if stage in ("done", "failed"):  # its downloads are over
                for key in [key for key in self._transfers if key[0] == line]:
                    del self._transfers[key]
            self._refresh()

    def saved(self, line: int, index: int, path: str) -> None:
        # On a terminal the path is on standard output already, right above the bar;
        # said here only where standard output goes elsewhere.
        if not console.is_terminal(sys.stdout):
            _print_above(self._progress, f"line {line}: saved {path}")

    def transferred(self, line: int, index: int, received: int, total: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            known = self._transfers.get((line, index))
            transfer = known[0] if known else _Transfer(now, received)
            share = received / total if total else 0.0
            self._transfers[(line, index)] = (transfer, transfer.rate(now, received), share)
            self._refresh()

    def cost(self, total: float) -> None:
        with self._lock:
            self._cost = total
            self._refresh()

    def message(self, text: str) -> None:
        _print_above(self._progress, text)

    def warning(self, text: str) -> None:
        _print_above(self._progress, text)

    def close(self) -> None:
        self._progress.stop()

    def _counts(self) -> str:
        counts = {stage: 0 for stage in BATCH_STAGES}
        for stage in self._stages.values():
            counts[stage] += 1
        return " · ".join(f"{k} {v}" for k, v in counts.items() if v or k == "done")

    def _downloads(self) -> str:
        """The second line: the images downloading and their rate, and the cost."""
        from apimart_cli.costs import cost_text

        parts = []
        if self._transfers:
            rate = sum(rate for _, rate, _ in self._transfers.values())
            count = len(self._transfers)
            parts.append(f"{count} image{'s' if count != 1 else ''} downloading, {_rate(rate)}")
        if self._cost:
            parts.append(f"cost {cost_text(self._cost)}")
        return " · ".join(parts)

    def _done(self) -> float:
        """How many jobs' worth of work is done: those ended, and a share of the rest."""
        shares: dict[int, list[float]] = {}
        for (line, _), (_, _, share) in self._transfers.items():
            shares.setdefault(line, []).append(share)
        done = 0.0
        for line, stage in self._stages.items():
            if stage in ("done", "failed"):
                done += 1
            elif line in shares:
                done += 0.25 + 0.75 * sum(shares[line]) / len(shares[line])
            else:
                done += _STAGE_SHARE.get(stage, 0.0)
        return done

    def _refresh(self) -> None:
        ended = sum(stage in ("done", "failed") for stage in self._stages.values())
        self._progress.update(
            self._bar, description=self._counts(), completed=self._done(), ended=ended
        )
        extra = self._downloads()
        self._progress.update(self._extra, description=extra, visible=bool(extra))


def make_batch_display(lines: Iterable[int]) -> BatchDisplay:
    """The batch's display: silent with --quiet, one bar on a terminal, else lines."""
    mode = display_mode()
    if mode == "rich":
        return RichBatchDisplay(lines)
    return PlainBatchDisplay() if mode == "plain" else SilentBatchDisplay()
