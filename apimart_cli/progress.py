"""Progress on standard error: rich bars on a terminal, plain lines off it.

Off a terminal (a CI log, a pipe into a file) the user gets one line per state
change plus a heartbeat at most every 30 s: no ANSI codes, no carriage returns.
`--quiet` silences all of it. Two displays share these rules: a `Reporter`
(a bar per task) for `wait` and `generate --wait`, and a `BatchDisplay` (one
bar for the whole batch) for `batch`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, Protocol

from apimart_cli import console
from apimart_cli.constants import HEARTBEAT_SECONDS
from apimart_cli.models import FINAL_STATES

if TYPE_CHECKING:
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
    """A line of text above the bars, as given (no markup: a path may hold brackets)."""
    progress.console.print(text, markup=False, highlight=False)


# -- waiting for tasks: a bar per task -------------------------------------------------------


class Reporter(Protocol):
    """What the poller and downloader tell the user about."""

    def added(self, task_id: str) -> None: ...
    def update(self, task: Task) -> None: ...
    def saved(self, task_id: str, path: str) -> None: ...
    def message(self, text: str) -> None: ...
    def image(self, escape: str) -> None: ...
    def tick(self) -> None: ...
    def close(self) -> None: ...


class SilentReporter:
    def added(self, task_id: str) -> None:
        pass

    def update(self, task: Task) -> None:
        pass

    def saved(self, task_id: str, path: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def image(self, escape: str) -> None:
        """An inline preview: only on a terminal, where the rich display is."""

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def _describe(task: Task) -> str:
    text = task.status
    if not task.known_status:
        text += " (a state this tool does not know; still waiting)"
    elif task.status == "processing" and task.progress is not None:
        text += f" {task.progress}%"
    return text


class PlainReporter(SilentReporter):
    """One line per state change, and a heartbeat while nothing changes."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, str] = {}
        self._last_line = clock()

    def _line(self, text: str) -> None:
        console.info(text)
        self._last_line = self._clock()

    def added(self, task_id: str) -> None:
        self._states.setdefault(task_id, "")

    def update(self, task: Task) -> None:
        if self._states.get(task.task_id) != task.status:
            self._states[task.task_id] = task.status
            self._line(f"{task.task_id}: {_describe(task)}")

    def saved(self, task_id: str, path: str) -> None:
        self._line(f"{task_id}: saved {path}")

    def message(self, text: str) -> None:
        self._line(text)

    def tick(self) -> None:
        if self._clock() - self._last_line < HEARTBEAT_SECONDS:
            return
        waiting = [tid for tid, state in self._states.items() if state not in FINAL_STATES]
        if waiting:
            self._line(f"still waiting for {len(waiting)} task(s)")
        else:
            self._last_line = self._clock()


class RichReporter(SilentReporter):
    """A progress bar per task on a terminal."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        self._lock = threading.Lock()
        self._progress = _progress_on_stderr(
            TextColumn("{task.fields[task_id]}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[state]}", markup=False),
            TimeElapsedColumn(),
        )
        self._bars: dict[str, Any] = {}
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
                self._bars[task.task_id], completed=completed, state=_describe(task)
            )

    def saved(self, task_id: str, path: str) -> None:
        from rich.text import Text

        # Text, not markup: a path may hold brackets, as in `-o "out[1]"`.
        self._progress.console.print(Text.assemble(("saved", "green"), f" {path}"), highlight=False)

    def message(self, text: str) -> None:
        _print_above(self._progress, text)

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


def make_reporter() -> Reporter:
    """The reporter for this run: silent with --quiet, bars on a terminal, else lines."""
    mode = display_mode()
    if mode == "rich":
        return RichReporter()
    return PlainReporter() if mode == "plain" else SilentReporter()


# -- a batch: one bar for all its jobs -------------------------------------------------------

# The stages a batch job goes through, as `batch.manifest.JobRun.stage()` names them.
BATCH_STAGES = ("queued", "submitted", "processing", "done", "failed")


class BatchDisplay(Protocol):
    """What a batch run tells the user about: its jobs (by line number), cost, events."""

    def start(self) -> None: ...
    def job(self, line: int, stage: str, note: str | None = None) -> None: ...
    def cost(self, total: float) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class SilentBatchDisplay:
    """--quiet: nothing."""

    def start(self) -> None:
        pass

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        pass

    def cost(self, total: float) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainBatchDisplay(SilentBatchDisplay):
    """A line per change of a job (its `note`), and each message."""

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        if note:
            console.info(f"line {line}: {note}")

    def message(self, text: str) -> None:
        console.info(text)


class RichBatchDisplay(SilentBatchDisplay):
    """One overall bar on a terminal, with how many jobs are at each stage and the cost."""

    def __init__(self, lines: Iterable[int]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn

        self._stages = dict.fromkeys(lines, "queued")
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
            self._refresh()

    def cost(self, total: float) -> None:
        with self._lock:
            self._cost = total
            self._refresh()

    def message(self, text: str) -> None:
        _print_above(self._progress, text)

    def close(self) -> None:
        self._progress.stop()

    def _counts(self) -> str:
        counts = {stage: 0 for stage in BATCH_STAGES}
        for stage in self._stages.values():
            counts[stage] += 1
        return " · ".join(f"{k} {v}" for k, v in counts.items()) + f" · cost {self._cost:.2f}"

    def _refresh(self) -> None:
        ended = sum(stage in ("done", "failed") for stage in self._stages.values())
        self._progress.update(self._bar, description=self._counts(), completed=ended)


def make_batch_display(lines: Iterable[int]) -> BatchDisplay:
    """The batch's display: silent with --quiet, one bar on a terminal, else lines."""
    mode = display_mode()
    if mode == "rich":
        return RichBatchDisplay(lines)
    return PlainBatchDisplay() if mode == "plain" else SilentBatchDisplay()
