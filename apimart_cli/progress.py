"""Progress on standard error: rich bars on a terminal, plain lines off it.

Off a terminal (a CI log, a pipe into a file) the user gets one line per state
change plus a heartbeat at most every 30 s: no ANSI codes, no carriage returns.
`--quiet` silences all of it.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from apimart_cli import console
from apimart_cli.constants import HEARTBEAT_SECONDS

if TYPE_CHECKING:
    from apimart_cli.models import Task


class Reporter(Protocol):
    """What the poller and downloader tell the user about."""

    def added(self, task_id: str) -> None: ...
    def update(self, task: Task) -> None: ...
    def saved(self, task_id: str, path: str) -> None: ...
    def message(self, text: str) -> None: ...
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
        waiting = [tid for tid, state in self._states.items() if state not in _FINAL]
        if waiting:
            self._line(f"still waiting for {len(waiting)} task(s)")
        else:
            self._last_line = self._clock()


_FINAL = frozenset({"completed", "failed", "cancelled"})


class RichReporter(SilentReporter):
    """A progress bar per task on a terminal."""

    def __init__(self) -> None:
        from rich.console import Console  # only here: rich is slow to import
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._lock = threading.Lock()
        self._progress = Progress(
            TextColumn("{task.fields[task_id]}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[state]}", markup=False),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
            # Paths printed to a file or pipe must reach it, not the bars' terminal.
            redirect_stdout=console.is_terminal(sys.stdout),
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
        self._progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self._progress.stop()


def make_reporter() -> Reporter:
    """The reporter for this run: silent with --quiet, bars on a terminal, else lines."""
    if console.is_quiet():
        return SilentReporter()
    if console.is_terminal(sys.stderr):
        return RichReporter()
    return PlainReporter()
