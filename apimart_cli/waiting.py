"""Wait for tasks, download each as it completes, and say how it all ended.

This is what `wait`, `generate --wait` and `wait --pending` share: the poller
runs on the calling thread; each completed task's images download on a small
pool while the other tasks are still polled; each saved path is printed the
moment it is saved. The history is written from the calling thread only.
"""

from __future__ import annotations

import queue
import shlex
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apimart_cli import console
from apimart_cli.constants import DEFAULT_MAX_IN_FLIGHT, DEFAULT_POLL_INTERVAL
from apimart_cli.errors import ApimartError, ExitCode, HistoryError, TaskError
from apimart_cli.polling import Learned, Poller
from apimart_cli.workers import WorkerPool

if TYPE_CHECKING:
    from apimart_cli.client import Client
    from apimart_cli.downloads import Downloader
    from apimart_cli.history import History
    from apimart_cli.models import Task
    from apimart_cli.preview import Previewer
    from apimart_cli.progress import Reporter
    from apimart_cli.provenance import Stamper

DOWNLOAD_WORKERS = 8


@dataclass(frozen=True)
class WaitOptions:
    timeout: float
    interval: float = DEFAULT_POLL_INTERVAL
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    as_json: bool = False
    once: bool = False  # `download`: poll each task once, never wait


@dataclass
class WaitSummary:
    exit_code: ExitCode = ExitCode.OK
    unfinished: list[str] = field(default_factory=list)
    files: dict[str, list[str]] = field(default_factory=dict)
    timed_out: bool = False
    task_count: int = 0  # ids given or read, so "none at all" can be told apart
    costs: dict[str, float] = field(default_factory=dict)  # as the service reported them
    failed: set[str] = field(default_factory=set)  # tasks that failed, or whose images did not save
    completed: int = 0  # tasks completed (what --no-download counts)

    def fail(self, code: ExitCode) -> None:
        self.exit_code = max(self.exit_code, code)

    def line(self, *, downloaded: bool = True) -> str:
        """The one line that ends the run: images saved, tasks failed, cost if reported."""
        saved = sum(len(paths) for paths in self.files.values())
        parts = [
            _count(saved, "image") + " saved"
            if downloaded
            else _count(self.completed, "task") + " completed",
            _count(len(self.failed), "task") + " failed",
        ]
        if self.unfinished:
            parts.append(f"{len(self.unfinished)} unfinished")
        if self.costs:
            parts.append(f"cost {sum(self.costs.values()):.4g}")
        return ", ".join(parts) + "."


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


class _TaskFiles:
    """Collects one task's saved images; the last one to finish emits the JSON line."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.paths: list[str | None] = [None] * len(task.images)
        self.remaining = len(task.images)


class TaskWaiter:
    """Poll, download, print, record: one run of `apimart wait`."""

    def __init__(
        self,
        client: Client,
        downloader: Downloader | None,
        options: WaitOptions,
        reporter: Reporter,
        history: History | None = None,
        *,
        stamper: Stamper | None = None,
        previewer: Previewer | None = None,
    ) -> None:
        self._client = client
        self._downloader = downloader
        self._stamper = stamper  # the provenance for each task's PNGs
        self._previewer = previewer
        self._options = options
        self._reporter = reporter
        self._history = history
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self._results: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._hints: dict[str, None] = {}  # what to do, each said once after the errors
        self.summary = WaitSummary()
        self._poller = Poller(
            client.get_task,
            interval=options.interval,
            max_in_flight=options.max_in_flight,
            timeout=options.timeout,
            on_update=self._on_update,
            on_finished=self._on_finished,
            on_idle=self._drain,
            once=options.once,
            learned=_learned(history),
        )
        self._pool = WorkerPool(DOWNLOAD_WORKERS, "download")
        self._downloading: dict[str, None] = {}  # completed tasks whose images are not all saved

    # -- the run -------------------------------------------------------------------

    def run(
        self, task_ids: Iterable[str] = (), *, stream: Iterable[str] | None = None
    ) -> WaitSummary:
        """Wait for `task_ids`, and for ids arriving on `stream` (e.g. standard input)."""
        self._owner = threading.get_ident()
        for task_id in task_ids:
            self._add(task_id)
        if stream is not None:
            self._poller.open_input()
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()
        try:
            outcome = self._poller.run()
            self._pool.join()
        finally:
            self._pool.close()
            self._drain()
            self._reporter.close()
        for task_id, error in outcome.errors.items():
            self._fail(task_id, error)
        for hint in self._hints:
            console.warn(hint)
        if outcome.timed_out:
            self.summary.timed_out = True
            self.summary.unfinished = outcome.unfinished
            self.summary.fail(ExitCode.TIMEOUT)
        return self.summary

    def unfinished(self) -> list[str]:
        """The ids to resume after Ctrl-C: not yet finished, or not yet saved."""
        with self._lock:
            downloading = list(self._downloading)
        return list(dict.fromkeys([*self._poller.unfinished(), *downloading]))

    def _add(self, task_id: str) -> None:
        with self._lock:
            self.summary.task_count += 1
        self._reporter.added(task_id)
        self._poller.add(task_id)

    def _read(self, stream: Iterable[str]) -> None:
        """Feed ids to the poller as their lines arrive; a bad line is reported, not fatal."""
        from apimart_cli.models import validate_task_id

        try:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    self._add(validate_task_id(line))
                except ApimartError as error:
                    console.warn(f"Error: {error.message}")
                    with self._lock:
                        self.summary.fail(error.exit_code)
        finally:
            self._poller.close_input()

    # -- callbacks (poll loop thread) -----------------------------------------------

    def _on_update(self, task: Task) -> None:
        from apimart_cli.history import task_changes  # loaded already: the history is open

        self._reporter.update(task)
        self._record(task.task_id, **task_changes(task))

    def _on_finished(self, task: Task) -> None:
        if task.cost is not None:
            with self._lock:
                self.summary.costs[task.task_id] = task.cost
        if task.status != "completed":
            reason = task.error_message or "no reason given"
            console.warn(f"{task.task_id}: {task.status}: {reason}")
            self._record(task.task_id, error=reason)
            with self._lock:
                self.summary.fail(ExitCode.FAILED)
                self.summary.failed.add(task.task_id)
            self._emit_json(task, [])
            return
        with self._lock:
            self.summary.completed += 1
        if self._downloader is None:  # --no-download
            if not self._options.as_json:
                console.data(task.task_id)
            self._emit_json(task, [])
            return
        if not task.images:
            self._fail(task.task_id, TaskError(f"Task {task.task_id} completed with no images."))
            return
        files = _TaskFiles(task)
        with self._lock:
            self._downloading[task.task_id] = None
        for index in range(len(task.images)):
            self._pool.submit(self._download, files, index)

    def _download(self, files: _TaskFiles, index: int) -> None:
        """On a download thread: `_save`, where even a bug fails the task, never silently."""
        try:
            self._save(files, index)
        except Exception as exc:
            self._fail(files.task.task_id, ApimartError(f"Internal error while saving: {exc!r}"))

    def _save(self, files: _TaskFiles, index: int) -> None:
        """Save one image, print its path, maybe the task's JSON."""
        assert self._downloader is not None
        task = files.task
        try:
            finish = self._stamper.step(task) if self._stamper is not None else None
            saved = self._downloader.download(task.task_id, index, task.images[index], finish)
        except Exception as exc:
            # Even a bug below must fail the task, not vanish with this thread's future.
            error = exc if isinstance(exc, ApimartError) else _internal(index, exc)
            self._fail(task.task_id, error)
            with self._lock:
                files.remaining -= 1
                done = files.remaining == 0
        else:
            path = str(saved.path)
            if saved.kept_existing:
                console.warn(
                    f"{task.task_id}: kept the existing {path} (use --force to replace it)"
                )
            else:
                self._reporter.saved(task.task_id, path)
                self._show(saved.path)
            if not self._options.as_json:
                console.data(path)
            with self._lock:
                files.paths[index] = path
                files.remaining -= 1
                done = files.remaining == 0
        if done:
            with self._lock:
                self._downloading.pop(task.task_id, None)
            paths = [path for path in files.paths if path is not None]
            self.summary.files[task.task_id] = paths
            self._results.put((task.task_id, {"files": paths}))
            self._emit_json(task, paths)

    def _show(self, path: Path) -> None:
        """The inline preview of a saved image, where the terminal can draw one."""
        if self._previewer is None:
            return
        escape = self._previewer.escape(path)
        if escape is not None:
            self._reporter.image(escape)

    def _fail(self, task_id: str, error: ApimartError) -> None:
        """On any thread: say what went wrong now, and keep what to do for the end."""
        console.warn(f"{task_id}: {error.message}")
        with self._lock:
            self.summary.fail(error.exit_code)
            self.summary.failed.add(task_id)
            if error.hint:
                self._hints.setdefault(error.hint)

    def _emit_json(self, task: Task, paths: list[str]) -> None:
        if self._options.as_json:
            console.data_json({**task.raw, "files": paths})

    # -- history (poll loop thread only: SQLite connections stay on their thread) ---

    def _record(self, task_id: str, **changes: Any) -> None:
        self._results.put((task_id, changes))
        self._drain()

    def _drain(self) -> None:
        self._reporter.tick()
        if threading.get_ident() != self._owner:
            return
        while True:
            try:
                task_id, changes = self._results.get_nowait()
            except queue.Empty:
                return
            if self._history is None:
                continue
            try:
                self._history.update(task_id, **changes)
            except HistoryError as error:  # the history mirrors the server: keep waiting
                console.warn(f"Warning: {error.message} The history is not updated further.")
                self._history = None


def _learned(history: History | None) -> Learned | None:
    """How long this user's recent tasks took, to aim the polls; nothing if unreadable."""
    if history is None:
        return None
    try:
        return history.learned()
    except HistoryError:  # the history only helps here; the wait goes on without it
        return None


def _internal(index: int, exc: Exception) -> ApimartError:
    return ApimartError(f"Internal error while saving image {index}: {exc!r}")


def resume_hint(
    task_ids: list[str],
    output: Path | None,
    *,
    base_url: str | None = None,
    download: bool = True,
    as_json: bool = False,
) -> str:
    """The command that picks up where an interrupted wait stopped, ready to paste."""
    words = ["apimart"]
    if base_url:
        words += ["--base-url", base_url]
    words.append("wait")
    if output is not None and str(output) != ".":
        words += ["-o", str(output)]
    if not download:
        words.append("--no-download")
    if as_json:
        words.append("--json")
    return " ".join(shlex.quote(word) for word in [*words, *task_ids])
