"""The engine's reporter for a batch: each task's steps, as its job's records.

The engine polls and downloads every task of the run and tells this reporter,
from its poll loop and its download threads, what happened; each change goes
to the job's `tracker.JobTracker`, which appends it to the manifest before the
display shows it. The engine saves each image through `save`, under the job's
`--name` (through `saving`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from apimart_cli.batch.jobs import format_name
from apimart_cli.batch.saving import save_image, write_metadata
from apimart_cli.downloads import SavedFile
from apimart_cli.errors import ApimartError, HistoryError, TaskError

if TYPE_CHECKING:
    from apimart_cli.batch.manifest import JobRun
    from apimart_cli.batch.tracker import JobTracker
    from apimart_cli.downloads import Downloader, Finish, OnProgress
    from apimart_cli.engine import Engine
    from apimart_cli.tasks import Task


class BatchReporter:
    """Which job each task polled is, and what the engine says of it, recorded and shown
    under the tracker's lock; once the tracker is closed, late results are dropped."""

    def __init__(
        self,
        tracker: JobTracker,
        downloader: Downloader,
        *,
        name: str,
        force: bool,
        metadata: bool,
        as_json: bool,
    ) -> None:
        """`name` the images' --name pattern; `metadata`: a sidecar beside each image."""
        self._tracker, self._display, self._lock = tracker, tracker.display, tracker.lock
        self._downloader = downloader
        self._name, self._force, self._metadata, self._as_json = name, force, metadata, as_json
        self.engine: Engine | None = None  # set once made: it is made with this reporter
        self._by_task: dict[str, JobRun] = {}  # by the id polled (the submission's)
        self._history_broken = False  # a write failed: said once, not tried again
        self._cost: float | None = None  # the jobs' total, from the first change on

    def watch(self, run: JobRun) -> None:
        """Hand the job's task to the engine, to poll and download."""
        assert run.task_id is not None and self.engine is not None
        self._by_task[run.task_id] = run
        self._display.job(run.job.line, run.stage())
        self.engine.add(run.task_id)

    def history_unwritable(self, reason: str) -> None:
        """A history write failed: say so once, and write no more; the manifest goes on."""
        with self._lock:
            if self._history_broken:
                return
            self._history_broken = True
            self._display.warning(
                f"Warning: the task history could not be written: {reason}\n"
                f"The run goes on without it; {self._tracker.manifest.path} records every job."
            )

    # -- saving (the engine's download threads) --------------------------------------------------

    def save(
        self, task: Task, index: int, on_progress: OnProgress, before_rename: Finish | None
    ) -> SavedFile:
        """Download one image under its --name, and its metadata."""
        run = self._by_task[task.task_id]
        name = format_name(
            self._name, task_id=task.task_id, index=index, line=run.job.line, slug=run.job.slug
        )
        try:
            path, kept = save_image(
                self._downloader,
                task,
                index,
                name,
                force=self._force,
                on_progress=on_progress,
                before_rename=before_rename,
            )
            if self._metadata and not (kept and path.with_suffix(".json").exists()):
                write_metadata(run, task, index, path)
        except OSError as exc:
            raise _save_failed(run, index, exc) from None
        return SavedFile(path, kept_existing=kept)

    # -- the engine's reporter: each job's progress, into the manifest and the display -------

    def added(self, task_id: str) -> None:
        pass  # `watch` has shown it

    def update(self, task: Task) -> None:
        run = self._by_task[task.task_id]
        if task.cost is not None and task.cost != run.cost:
            # Kept as a running total: summing every job on each change took O(jobs²).
            if self._cost is None:
                self._cost = sum(r.cost or 0.0 for r in self._tracker.runs)
            self._cost += task.cost - (run.cost or 0.0)
            run.cost = task.cost
            self._display.cost(self._cost)
        if task.status == "completed" and task.images:  # its downloads start now
            run.task, run.pending, run.saved = task, len(task.images), {}
            self._tracker.update(run, "completed")
        elif not task.finished and task.status != run.state:
            self._tracker.update(run, task.status)

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        run = self._by_task.get(task_id)
        if run is not None:
            self._display.transferred(run.job.line, index, received, total)

    def saved(self, task: Task, index: int, saved: SavedFile) -> None:
        run = self._by_task[task.task_id]
        with self._lock:
            if self._tracker.closed:  # too late to report: a rerun finds the file
                return
            if not saved.kept_existing:
                self._display.saved(run.job.line, index, str(saved.path))
            elif saved.path.name not in run.files:  # a file from this job's earlier run is no news
                self._display.warning(
                    f"line {run.job.line}: kept the existing {saved.path} (--force replaces it)"
                )
            if not self._as_json:
                self._display.output(str(saved.path))
            run.saved[index] = saved.path.name

    def failed(self, task_id: str | None, error: ApimartError) -> None:
        run = self._by_task[str(task_id)]
        with self._lock:
            if self._tracker.closed:
                return
            if run.task is None:  # its polls failed: the task may be fine; wait next time
                self._tracker.end(run, error=error)
                return
            self._display.warning(f"line {run.job.line}: {error.message}")
            self._tracker.end(run, error=error, warn=False, final=False)

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        run = self._by_task[task.task_id]
        with self._lock:
            if self._tracker.closed:
                return
            if task.status != "completed":
                reason = task.error_message or "no reason given"
                error = TaskError(f"task {task.task_id} {task.status}: {reason}")
                self._tracker.end(run, task.status, error)
                return
            run.files = [run.saved[i] for i in sorted(run.saved)]
            self._tracker.end(run, warn=False)

    def history_failed(self, error: HistoryError) -> None:
        self.history_unwritable(error.message)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass  # the display outlives the engine: the run's summary comes after


def _save_failed(run: JobRun, index: int, exc: OSError) -> ApimartError:
    reason = exc.strerror or repr(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return TaskError(f"Could not save image {index} of task {run.task_id}: {reason}{where}")
