"""The one engine: wait for tasks, download each as it completes, record it all.

`wait`, `generate --wait`, `download` and `batch` all run their tasks through
an `Engine`. Task ids come in as they arrive (given at once, read from a
stream, or `add`ed by another thread, as batch's submit workers do); the
`polling.Poller` polls them on the calling thread; each completed task's
images download on a pool of daemon threads while the others are still
polled; the history is written from the calling thread only (SQLite
connections stay on their thread). Everything the user sees goes through the
`Reporter`; what the run came to is the returned `Outcome`.

Time is bounded by the `Deadline` the engine is given (the command's
`--timeout`, the same one the client has): the engine stops at it, never
joining a worker past it. A download cut short keeps its part file, which the
next run resumes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from apimart_cli.constants import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_POLL_INTERVAL,
    DOWNLOAD_WORKERS,
    FILES_BESIDES_POLLS,
)
from apimart_cli.errors import (
    ApimartError,
    ExitCode,
    HistoryError,
    NotCompleted,
    TaskError,
    WaitTimeout,
    interrupted_code,
)
from apimart_cli.queries import fetch_task
from apimart_cli.queries import query_tasks as query_tasks  # `status`'s, kept apart from here
from apimart_cli.tasks import Task
from apimart_cli.workers import WorkerPool

if TYPE_CHECKING:
    from apimart_cli.client import Client
    from apimart_cli.deadline import Deadline
    from apimart_cli.downloads import Downloader, Finish, OnProgress, SavedFile
    from apimart_cli.history import History, TaskRecord
    from apimart_cli.polling import Learned

# How long the calling thread sleeps at most while downloads finish, between ticks.
_TICK_SECONDS = 0.5


class Reporter(Protocol):
    """What the engine tells the user about, from any of its threads.

    The display layer (`progress`) draws it for `wait`, `download` and
    `generate --wait`; batch's tracker turns it into manifest records.
    """

    def added(self, task_id: str) -> None:
        """An id to wait for."""

    def update(self, task: Task) -> None:
        """Every poll's reply (its `task_id` always the id polled)."""

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        """A download's progress: bytes on disk so far, of `total` where the host said."""

    def saved(self, task: Task, index: int, saved: SavedFile) -> None:
        """An image is on disk (`saved.kept_existing`: it was there already, and kept)."""

    def failed(self, task_id: str | None, error: ApimartError) -> None:
        """Something went wrong with a task (or, with no id, with a line of input)."""

    def history_failed(self, error: HistoryError) -> None:
        """The history could not be written: the run goes on without it."""

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        """A task is done with: failed or cancelled (`task.status`, `task.error_message`
        say why), or completed and its downloads over (`files` the images saved, in
        order; fewer than its images if some failed, each said by `failed`)."""

    def tick(self) -> None:
        """Called often from the calling thread, for heartbeats and redraws."""

    def close(self) -> None:
        """The run is over."""


# Saving one image: `(task, index, on_progress, before_rename)`. The default saves it as
# `<task_id>_<index>`; batch names it after its `--name`.
Save = Callable[["Task", int, "OnProgress", "Finish | None"], "SavedFile"]


@dataclass(frozen=True)
class SaveHooks:
    """Steps around a task's images. `completed(task, record)` when it completes, on the
    calling thread, with what the history knows of it (None if nothing), before its
    downloads start; then on the download threads `before_rename(part, task, index)` on
    each complete part file before it takes its name (one that replaces the file syncs
    what it puts there: the part file itself is synced only where it was left), and
    `after_save(path, task, index)` once it has (not for a file that was there already).
    `stamp(task)`, where given, is the chunk each PNG of the task carries, put in as its
    bytes stream past the IHDR (the provenance; instead of `before_rename`)."""

    completed: Callable[[Task, TaskRecord | None], None] | None = None
    before_rename: Callable[[Path, Task, int], None] | None = None
    stamp: Callable[[Task], bytes] | None = None
    after_save: Callable[[Path, Task, int], None] | None = None


@dataclass
class Outcome:
    """How a run ended: its exit code (the highest wins), and what is left to do."""

    exit_code: ExitCode = ExitCode.OK
    unfinished: list[str] = field(default_factory=list)  # ids to resume
    timed_out: bool = False
    interrupted: bool = False
    task_count: int = 0  # ids given or read, so "none at all" can be told apart
    hints: list[str] = field(default_factory=list)  # what to do, each once, after the errors
    files: dict[str, list[Path]] = field(default_factory=dict)  # each task's images on disk
    completed: int = 0  # tasks completed (what --no-download counts)
    failed: set[str] = field(default_factory=set)  # tasks failed, or whose images did not save
    not_completed: set[str] = field(default_factory=set)  # of those, still running (download)
    costs: dict[str, float] = field(default_factory=dict)  # as the service reported them
    refused: ApimartError | None = None  # the first line of input that was no task id

    def fail(self, code: ExitCode) -> None:
        self.exit_code = max(self.exit_code, code)

    def as_error(self, hint: str | None = None) -> ApimartError | None:
        """How the run ended, as one error with the tasks it concerns (None if it ended
        well): what `--json` adds to standard error, and what an agent is told."""
        if self.exit_code == ExitCode.OK:
            return None
        if self.timed_out or self.interrupted:
            how = "Timed out" if self.timed_out else "Interrupted"
            if self.exit_code == ExitCode.TERMINATED:
                how = "Terminated"
            message = f"{how}; {len(self.unfinished)} task(s) unfinished."
            task_ids = list(self.unfinished)
        else:
            task_ids = sorted(self.failed)
            message = f"{len(task_ids)} task(s) did not end with their images."
        return ApimartError(message, hint, exit_code=self.exit_code, task_ids=task_ids)


class _TaskFiles:
    """One completed task's images while they download."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.paths: list[Path | None] = [None] * len(task.images)
        self.remaining = len(task.images)


class Engine:
    """Poll, download, record, report: one run over any number of tasks."""

    def __init__(
        self,
        client: Client,
        *,
        deadline: Deadline,
        reporter: Reporter,
        downloader: Downloader | None = None,
        history: History | None = None,
        interval: float = DEFAULT_POLL_INTERVAL,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        once: bool = False,
        save: Save | None = None,
        hooks: SaveHooks | None = None,
    ) -> None:
        """`downloader` None: only wait (`--no-download`). `once`: poll each task once;
        one not finished is an error (`download`)."""
        self._client = client
        self._deadline = deadline
        self._reporter = reporter
        self._downloader = downloader
        self._history = history
        self._save = save or self._save_as_task_image
        self._hooks = hooks or SaveHooks()
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self._changes: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._hints: dict[str, None] = {}
        self._downloading: dict[str, None] = {}  # completed tasks whose images are not all saved
        self._pending = 0  # images still downloading
        self._downloads_done = threading.Condition(self._lock)
        self._closed = False  # the run is over: late results from workers are dropped
        self._out_of_time = False  # a download ran into the deadline
        self.outcome = Outcome()
        from apimart_cli.polling import Poller  # here: `status` needs the engine, not a poller

        self._poller = Poller(
            self._fetch,
            interval=interval,
            max_in_flight=polls_within_open_files(max_in_flight),
            timeout=deadline.remaining(),
            on_update=self._on_update,
            on_finished=self._on_finished,
            on_idle=self._drain,
            learned=_learned(history),
            describe=self._describe,
            once=once,
        )
        client.on_rate_limited(self._poller.rate_limited)  # polls slow down on a 429
        self._pool: WorkerPool | None = None

    # -- feeding ids (any thread) ---------------------------------------------------

    def add(self, task_id: str) -> None:
        """Wait for this task too (ids already validated)."""
        with self._lock:
            self.outcome.task_count += 1
        self._reporter.added(task_id)
        self._poller.add(task_id)

    def open_input(self) -> None:
        """More ids will come through `add` (from another thread) until `close_input`."""
        self._poller.open_input()

    def close_input(self) -> None:
        self._poller.close_input()

    # -- the run ----------------------------------------------------------------------

    def run(self, task_ids: Iterable[str] = (), *, stream: Iterable[str] | None = None) -> Outcome:
        """Wait for `task_ids`, for ids arriving on `stream` (lines, e.g. standard input),
        and for those `add`ed, until each is done with, the deadline, or Ctrl-C."""
        self._owner = threading.get_ident()
        self._pool = WorkerPool(DOWNLOAD_WORKERS, "download")  # daemons: never waited for
        try:
            for task_id in task_ids:
                self.add(task_id)
            if stream is not None:
                self.open_input()
                threading.Thread(target=self._read, args=(stream,), daemon=True).start()
            polled = self._poller.run()
            downloads_done = self._wait_for_downloads()
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (143)
            self._close()
            self.outcome.interrupted = True
            self.outcome.unfinished = self.unfinished()
            self.outcome.fail(interrupted_code(interrupt))
            return self.outcome
        finally:
            self._pool.close()
            self._drain()
            self._reporter.close()
        for task_id, error in polled.errors.items():
            if isinstance(error, NotCompleted):
                self.outcome.not_completed.add(task_id)
            self._fail(task_id, error)
        unfinished = self.unfinished()
        self._close()
        with self._lock:
            self.outcome.hints = list(self._hints)
        if polled.timed_out or not downloads_done or self._out_of_time:
            self.outcome.timed_out = True
            self.outcome.unfinished = unfinished
            self.outcome.fail(ExitCode.TIMEOUT)
        return self.outcome

    def unfinished(self) -> list[str]:
        """The ids to resume: not yet finished, or finished and not yet saved."""
        with self._lock:
            downloading = list(self._downloading)
        return list(dict.fromkeys([*self._poller.unfinished(), *downloading]))

    def _close(self) -> None:
        with self._lock:
            self._closed = True

    def _wait_for_downloads(self) -> bool:
        """Wait for the downloads still running, until the deadline; False if it came first."""
        while True:
            with self._downloads_done:
                if not self._pending:
                    return True
                left = self._deadline.remaining()
                if left is not None and left <= 0:
                    return False
                self._downloads_done.wait(
                    _TICK_SECONDS if left is None else min(left, _TICK_SECONDS)
                )
            self._drain()

    def _read(self, stream: Iterable[str]) -> None:
        """Feed ids to the poller as their lines arrive; a bad line is reported, not fatal."""
        from apimart_cli.tasks import validate_task_id

        try:
            for line in stream:
                if not line.strip():
                    continue
                try:
                    task_id = validate_task_id(line)
                except ApimartError as error:
                    self._reporter.failed(None, error)
                    with self._lock:
                        self.outcome.fail(error.exit_code)
                        self.outcome.refused = self.outcome.refused or error
                    continue
                self.add(task_id)
        finally:
            self.close_input()

    # -- polling (pool threads, then the calling thread's callbacks) -------------------

    def _fetch(self, task_id: str) -> Task:
        return fetch_task(self._client, task_id)

    def _describe(self, task_id: str) -> tuple[float | None, str | None]:
        """When a task was submitted and its kind, from the history (the poller's thread,
        which is the calling one): the poller aims its first polls with them."""
        from apimart_cli.polling import task_kind

        record = self._history_record(task_id)
        if record is None:
            return None, None
        return record.created_at, task_kind(
            record.fields.get("size"), record.fields.get("resolution")
        )

    def _on_update(self, task: Task) -> None:
        from apimart_cli.history import task_changes  # loaded already where there is a history

        self._reporter.update(task)
        self._record(task.task_id, **task_changes(task))

    def _on_finished(self, task: Task) -> None:
        with self._lock:
            if task.cost is not None:
                self.outcome.costs[task.task_id] = task.cost
            if task.status == "completed":
                self.outcome.completed += 1
        if task.status != "completed":  # the reporter says why, from the task (and the history)
            with self._lock:
                self.outcome.fail(ExitCode.FAILED)
                self.outcome.failed.add(task.task_id)
            self._reporter.finished(task, [])
            return
        if self._downloader is None:  # only waiting
            self._reporter.finished(task, [])
            return
        if not task.images:
            self._fail(
                task.task_id, TaskError(f"Task {task.task_id} completed with no images or videos.")
            )
            return
        if self._hooks.completed is not None:
            self._hooks.completed(task, self._history_record(task.task_id))
        files = _TaskFiles(task)
        with self._lock:
            self._downloading[task.task_id] = None
            self._pending += len(task.images)
        assert self._pool is not None
        for index in range(len(task.images)):
            self._pool.submit(self._download, files, index)

    # -- downloading (pool threads) ------------------------------------------------------

    def _download(self, files: _TaskFiles, index: int) -> None:
        """Save one image and report it; whatever happens, count it as no longer pending."""
        task = files.task
        path: Path | None = None
        try:
            saved = self._save_one(task, index)
            path = saved.path
            if not self._closed:
                self._reporter.saved(task, index, saved)
        except WaitTimeout:  # out of time: the part file stays for the resume
            with self._downloads_done:
                self._out_of_time = True  # the task stays unfinished
                self._pending -= 1
                self._downloads_done.notify_all()
            return
        except ApimartError as error:
            self._fail(task.task_id, error)
        except Exception as exc:  # even a bug must fail the task, never silently
            self._fail(task.task_id, ApimartError(f"Internal error while saving: {exc!r}"))
        with self._downloads_done:
            files.paths[index] = path
            files.remaining -= 1
            last = files.remaining == 0
            if last:
                self._downloading.pop(task.task_id, None)
            self._pending -= 1
            self._downloads_done.notify_all()
            closed = self._closed
        if last and not closed:
            paths = [p for p in files.paths if p is not None]
            with self._lock:
                self.outcome.files[task.task_id] = paths
            self._changes.put((task.task_id, {"files": [str(p) for p in paths]}))
            self._reporter.finished(task, paths)

    def _save_one(self, task: Task, index: int) -> SavedFile:
        def progress(received: int, total: int | None) -> None:
            self._reporter.transferred(task.task_id, index, received, total)

        before, stamp = self._hooks.before_rename, self._hooks.stamp
        finish: Finish | None = None
        if stamp is not None:
            from apimart_cli.downloads import Stamp

            finish = Stamp(lambda: stamp(task))
        elif before is not None:
            finish = lambda part: before(part, task, index)  # noqa: E731
        saved = self._save(task, index, progress, finish)
        if self._hooks.after_save is not None and not saved.kept_existing:
            self._hooks.after_save(saved.path, task, index)
        return saved

    def _save_as_task_image(
        self, task: Task, index: int, on_progress: OnProgress, before_rename: Finish | None
    ) -> SavedFile:
        assert self._downloader is not None
        return self._downloader.download(
            task.task_id,
            index,
            task.images[index],
            before_rename,
            on_progress=on_progress,
        )

    # -- failures and the history ----------------------------------------------------------

    def _fail(self, task_id: str, error: ApimartError) -> None:
        """On any thread: say what went wrong now; keep what to do for the end.
        Once the run is over, a worker's late failure is not news (the resume finds it)."""
        with self._lock:
            if self._closed:
                return
            self.outcome.fail(error.exit_code)
            self.outcome.failed.add(task_id)
            if error.hint:
                self._hints.setdefault(error.hint)
        self._reporter.failed(task_id, error)

    def _history_record(self, task_id: str) -> TaskRecord | None:
        """What the history knows of a task (calling thread only), for the hooks."""
        if self._history is None:
            return None
        try:
            return self._history.get(task_id)
        except HistoryError:
            return None

    def _record(self, task_id: str, **changes: Any) -> None:
        self._changes.put((task_id, changes))
        self._drain()

    def _drain(self) -> None:
        """Write the queued changes to the history (on the calling thread only)."""
        self._reporter.tick()
        if threading.get_ident() != self._owner:
            return
        while True:
            try:
                task_id, changes = self._changes.get_nowait()
            except queue.Empty:
                return
            if self._history is None:
                continue
            try:
                self._history.update(task_id, **changes)
            except HistoryError as error:  # the history mirrors the server: keep waiting
                self._reporter.history_failed(error)
                self._history = None


def polls_within_open_files(most: int) -> int:
    """`most` polls in flight, fewer where the process may not have that many files open
    besides what the downloads and the history keep (`ulimit -n`): past it, a poll's
    connection or a download's file fails with "Too many open files"."""
    try:
        import resource
    except ImportError:  # no such limit to read here (Windows)
        return most
    allowed, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if allowed == resource.RLIM_INFINITY:
        return most
    return max(1, min(most, allowed - FILES_BESIDES_POLLS))


def _learned(history: History | None) -> Learned | None:
    """How long this user's recent tasks took, to aim the polls; nothing if unreadable."""
    if history is None:
        return None
    try:
        return history.learned()
    except HistoryError:  # the history only helps here; the wait goes on without it
        return None


@dataclass(frozen=True)
class WaitPlan:
    """What a wait is to do: until when, and where the images go (`folder` None: only
    wait, as `--no-download`)."""

    deadline: Deadline
    folder: Path | None = None
    force: bool = False  # replace images already there
    interval: float = DEFAULT_POLL_INTERVAL
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    once: bool = False  # poll each task once (`download`): one not finished is an error


def wait_for_tasks(
    client: Client,
    plan: WaitPlan,
    reporter: Reporter,
    *,
    task_ids: Iterable[str] = (),
    stream: Iterable[str] | None = None,
    history: History | None = None,
    hooks: SaveHooks | None = None,
    downloader: Downloader | None = None,
) -> Outcome:
    """`wait`, `download` and `generate --wait`: wait for the tasks, save their images
    into `plan.folder` (through `downloader` where the caller prepared one already),
    record them in `history`; how it ended.

    `client` is closed once the run has ended with nothing on its way. After a
    timeout or Ctrl-C it is left open: requests still in flight on worker threads
    are abandoned with the process, not failed by a closing client.
    """
    from apimart_cli.downloads import Downloader

    if downloader is None and plan.folder is not None:
        downloader = Downloader(client, plan.folder, force=plan.force)
        try:
            downloader.prepare()
        except BaseException:
            client.close()
            raise
    engine = Engine(
        client,
        deadline=plan.deadline,
        reporter=reporter,
        downloader=downloader,
        history=history,
        interval=plan.interval,
        max_in_flight=plan.max_in_flight,
        once=plan.once,
        hooks=hooks,
    )
    outcome = engine.run(task_ids, stream=stream)
    if not (outcome.timed_out or outcome.interrupted):
        client.close()
    return outcome
