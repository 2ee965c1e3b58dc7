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

import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from apimart_cli import console
from apimart_cli.constants import DOWNLOAD_NOTE_SECONDS, HEARTBEAT_SECONDS
from apimart_cli.errors import ExitCode

if TYPE_CHECKING:
    from apimart_cli.downloads import SavedFile
    from apimart_cli.engine import Outcome, SaveHooks
    from apimart_cli.errors import ApimartError, HistoryError
    from apimart_cli.models import Task


def display_mode() -> Literal["silent", "rich", "plain"]:
    """Silent with --quiet, rich bars on a terminal, else plain lines."""
    if console.is_quiet():
        return "silent"
    return "rich" if console.is_terminal(sys.stderr) else "plain"


def _progress_on_stderr(*columns: Any) -> Any:
    """A rich `Progress` drawn on standard error (not started)."""
    from rich.console import Console  # only here: rich is slow to import
    from rich.progress import Progress

    return Progress(
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
    """One image downloading: when it started, and when it was last told of."""

    def __init__(self, now: float, received: int) -> None:
        self.started = now
        self.first = received  # a resumed download starts past 0
        self.last_note = now

    def rate(self, now: float, received: int) -> float:
        elapsed = now - self.started
        return (received - self.first) / elapsed if elapsed > 0 else 0.0


def _transfer_text(received: int, total: int | None, rate: float) -> str:
    size = f"{human_bytes(received)} of {human_bytes(total)}" if total else human_bytes(received)
    return f"downloading {size}, {human_bytes(rate)}/s"


class _TransferNotes:
    """Lines off a terminal for the images downloading: each at most every
    DOWNLOAD_NOTE_SECONDS, so a long download never looks frozen, nor floods."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._transfers: dict[tuple[object, int], _Transfer] = {}

    def due(self, key: tuple[object, int], received: int, total: int | None) -> str | None:
        """What to say of this image's download now; None if it was said lately."""
        now = self._clock()
        with self._lock:
            transfer = self._transfers.setdefault(key, _Transfer(now, received))
            if now - transfer.last_note < DOWNLOAD_NOTE_SECONDS:
                return None
            transfer.last_note = now
        return _transfer_text(received, total, transfer.rate(now, received))


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
        text = self._notes.due((task_id, index), received, total)
        if text is not None:
            self._line(f"{task_id}: image {index}: {text}")

    def _saved(self, task_id: str, path: str) -> None:
        self._line(f"{task_id}: saved {path}")

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


class RichReporter(SilentReporter):
    """A progress bar per task on a terminal: its state, how long it has taken against
    the service's estimate, then its download's bytes and rate."""

    def __init__(self, *, as_json: bool = False, download: bool = True) -> None:
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        super().__init__(as_json=as_json, download=download)
        self._lock = threading.Lock()
        self._progress = _progress_on_stderr(
            TextColumn("{task.fields[task_id]}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[state]}", markup=False),
            TimeElapsedColumn(),
        )
        self._bars: dict[str, Any] = {}
        self._transfers: dict[tuple[str, int], _Transfer] = {}
        self._progress.start()

    def added(self, task_id: str) -> None:
        with self._lock:
            if task_id not in self._bars:
                self._bars[task_id] = self._progress.add_task(
                    "", total=100, task_id=task_id, state="submitted"
                )

    def update(self, task: Task) -> None:
        self.added(task.task_id)
        with self._lock:
            completed = 100 if task.status == "completed" else task.progress
            self._progress.update(
                self._bars[task.task_id], completed=completed, state=_describe(task, time.time())
            )

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        self.added(task_id)
        now = time.monotonic()
        with self._lock:
            transfer = self._transfers.setdefault((task_id, index), _Transfer(now, received))
            text = _transfer_text(received, total, transfer.rate(now, received))
            self._progress.update(self._bars[task_id], state=f"image {index}: {text}")

    def _saved(self, task_id: str, path: str) -> None:
        from rich.text import Text

        # Text, not markup: a path may hold brackets, as in `-o "out[1]"`.
        self._progress.console.print(Text.assemble(("saved", "green"), f" {path}"), highlight=False)

    def image(self, escape: str) -> None:
        """An inline image's escape sequence, drawn above the bars, then a new line."""
        self._progress.console.print(_Escape(escape), highlight=False)

    def close(self) -> None:
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


def save_hooks(reporter: SilentReporter | None, *, stamp: bool, preview: bool = False) -> SaveHooks:
    """The steps around each saved image that the settings ask for: the provenance
    chunk in each PNG (`stamp`), and an inline preview drawn above the progress
    (`preview`, on a terminal that can show one; a --verbose note says why not)."""
    from apimart_cli.engine import SaveHooks

    stamper = None
    if stamp:
        from apimart_cli import __version__
        from apimart_cli.provenance import Stamper

        stamper = Stamper(__version__, redact=console.redact)
    shows = None
    if preview and reporter is not None:
        from apimart_cli.preview import previewer

        wanted = not console.is_quiet()
        shows = previewer(wanted, is_terminal=console.is_terminal(sys.stderr), note=console.debug)

    def show(path: Path, task: Task, index: int) -> None:
        assert shows is not None and reporter is not None
        escape = shows.escape(path)
        if escape is not None:
            reporter.image(escape)

    return SaveHooks(
        completed=None if stamper is None else stamper.prepare,
        stamp=None if stamper is None else stamper.chunk,
        after_save=None if shows is None else show,
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def summary_line(outcome: Outcome, *, downloaded: bool = True) -> str:
    """The one line that ends a wait: images saved, tasks failed, cost if reported."""
    saved = sum(len(paths) for paths in outcome.files.values())
    parts = [
        _count(saved, "image") + " saved"
        if downloaded
        else _count(outcome.completed, "task") + " completed",
        _count(len(outcome.failed), "task") + " failed",
    ]
    if outcome.timed_out and outcome.unfinished:
        parts.append(f"{len(outcome.unfinished)} unfinished")
    if outcome.costs:
        parts.append(f"cost {sum(outcome.costs.values()):.4g}")
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


class BatchDisplay(Protocol):
    """What a batch run tells the user about: its jobs (by line number), cost, events;
    what must be said even under --quiet (`warning`); its data (`output`)."""

    def start(self) -> None: ...
    def job(self, line: int, stage: str, note: str | None = None) -> None: ...
    def transferred(self, line: int, index: int, received: int, total: int | None) -> None: ...
    def cost(self, total: float) -> None: ...
    def message(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def output(self, line: str) -> None: ...
    def close(self) -> None: ...


class SilentBatchDisplay:
    """--quiet: only warnings, and the data on standard output."""

    def start(self) -> None:
        pass

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        pass

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
        if note:
            console.info(f"line {line}: {note}")

    def transferred(self, line: int, index: int, received: int, total: int | None) -> None:
        text = self._notes.due((line, index), received, total)
        if text is not None:
            console.info(f"line {line}: image {index}: {text}")

    def message(self, text: str) -> None:
        console.info(text)


class RichBatchDisplay(SilentBatchDisplay):
    """One overall bar on a terminal, with how many jobs are at each stage, the images
    downloading and their rate, and the cost."""

    def __init__(self, lines: Iterable[int]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

        self._stages = dict.fromkeys(lines, "queued")
        self._transfers: dict[tuple[int, int], tuple[_Transfer, float]] = {}  # with its rate
        self._cost = 0.0
        self._lock = threading.Lock()
        self._progress = _progress_on_stderr(
            TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn()
        )
        self._bar = self._progress.add_task(self._counts(), total=len(self._stages))

    def start(self) -> None:
        self._progress.start()

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        with self._lock:
            self._stages[line] = stage
            if stage in ("done", "failed"):  # its downloads are over
                for key in [key for key in self._transfers if key[0] == line]:
                    del self._transfers[key]
            self._refresh()

    def transferred(self, line: int, index: int, received: int, total: int | None) -> None:
        now = time.monotonic()
        with self._lock:
            transfer = self._transfers.get((line, index), (_Transfer(now, received), 0.0))[0]
            self._transfers[(line, index)] = (transfer, transfer.rate(now, received))
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
        text = " · ".join(f"{k} {v}" for k, v in counts.items())
        if self._transfers:
            rate = sum(rate for _, rate in self._transfers.values())
            count = len(self._transfers)
            text += (
                f" · {count} image{'s' if count != 1 else ''} downloading, {human_bytes(rate)}/s"
            )
        return text + f" · cost {self._cost:.2f}"

    def _refresh(self) -> None:
        ended = sum(stage in ("done", "failed") for stage in self._stages.values())
        self._progress.update(self._bar, description=self._counts(), completed=ended)


def make_batch_display(lines: Iterable[int]) -> BatchDisplay:
    """The batch's display: silent with --quiet, one bar on a terminal, else lines."""
    mode = display_mode()
    if mode == "rich":
        return RichBatchDisplay(lines)
    return PlainBatchDisplay() if mode == "plain" else SilentBatchDisplay()
