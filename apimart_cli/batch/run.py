"""One run of a batch: submit, then hand each task to the engine; record every step.

Submit workers, at most `AimdLimiter.limit` in flight, `add` each new task id
to one `engine.Engine` running on the calling thread, which polls, downloads
(under the job's `--name`, through `saving`) and writes the history. This run
is the engine's reporter, and hands every step of every job to its
`tracker.JobTracker`, which appends it to the manifest before the display (the
one the command made) shows it, so a run killed at any point resumes where it
stopped. The workers are daemon threads and never waited for past the deadline
or a second Ctrl-C.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from apimart_cli.batch.jobs import format_name
from apimart_cli.batch.manifest import STEP_LABELS, JobRun, Manifest, Records, resumed
from apimart_cli.batch.saving import save_image, write_metadata
from apimart_cli.batch.tracker import JobTracker
from apimart_cli.constants import DEFAULT_BATCH_NAME, DEFAULT_BATCH_TIMEOUT, DEFAULT_POLL_INTERVAL
from apimart_cli.downloads import Downloader, SavedFile
from apimart_cli.engine import Engine
from apimart_cli.errors import (
    ApimartError,
    ExitCode,
    HistoryError,
    SubmissionTimedOut,
    SubmissionUnknown,
    SubmittedButUnrecorded,
    TaskError,
    Terminated,
    interrupted_code,
)
from apimart_cli.submission import BoundBodyChanged, submit

if TYPE_CHECKING:
    from apimart_cli.batch.jobs import Job
    from apimart_cli.batch.pacing import AimdLimiter
    from apimart_cli.batch.tracker import BatchDisplay
    from apimart_cli.client import Client
    from apimart_cli.downloads import Finish, OnProgress
    from apimart_cli.engine import SaveHooks
    from apimart_cli.gallery import Keeper
    from apimart_cli.history import History
    from apimart_cli.models import Task
    from apimart_cli.references import ReferenceSender

_STOP_SENDING = (ExitCode.AUTH, ExitCode.BALANCE)  # every later submission would fail alike
_UNKNOWN_HINT = (
    "A job whose submission's outcome is unknown keeps its idempotency key: run the same "
    "command again shortly (or `apimart resend KEY`) and it is sent again with that key and "
    "its body, so the service answers with the task it made, or makes it once."
)


@dataclass(frozen=True)
class BatchOptions:
    output: Path
    name: str = DEFAULT_BATCH_NAME
    timeout: float = DEFAULT_BATCH_TIMEOUT
    interval: float = DEFAULT_POLL_INTERVAL
    force: bool = False
    metadata: bool = False  # a <name>.json sidecar beside each image
    as_json: bool = False


def run_batch(
    jobs: Sequence[Job],
    client: Client,
    limiter: AimdLimiter,
    options: BatchOptions,
    open_history: Callable[[], History],
    sender: ReferenceSender | None = None,
    *,
    hooks: SaveHooks | None = None,
    gallery: Keeper | None = None,
    display: BatchDisplay,
) -> ExitCode:
    """Send, wait for and download every job not done yet; the exit code (the highest wins).

    `hooks` are the engine's steps around each image (the provenance chunk);
    `gallery` keeps index.html as each job ends; `display` is what the user sees.
    The run ends by `client.deadline` (the command's --timeout). `client` is closed
    once the run has ended with nothing on its way. After a timeout or a Ctrl-C it
    is left open: closing it would fail the requests still in flight on worker
    threads (the process is ending anyway).
    """
    batch = BatchRun(
        jobs,
        client,
        limiter,
        options,
        open_history,
        sender,
        hooks=hooks,
        gallery=gallery,
        display=display,
    )
    try:
        return batch.run()
    finally:
        if batch.settled:
            client.close()


class BatchRun:
    """One run of a batch, and the engine's reporter for it. Submit workers, the
    engine's poll loop (the calling thread) and its download workers all change jobs
    under one lock, the tracker's, which also orders the manifest's records.

    Nothing is ever waited for beyond the deadline or a second Ctrl-C: submit and
    download workers are daemon threads, and once the run is over (`_close`) what
    they still finish is neither recorded nor shown. A job whose submission was on
    its way then keeps its "submitting" record and idempotency key, so a rerun sends
    it again with that key and the service answers with the task it already made.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        client: Client,
        limiter: AimdLimiter,
        options: BatchOptions,
        open_history: Callable[[], History],
        sender: ReferenceSender | None = None,
        *,
        hooks: SaveHooks | None = None,
        gallery: Keeper | None = None,
        display: BatchDisplay,
    ) -> None:
        self._client, self._limiter, self._options = client, limiter, options
        self._open_history = open_history
        self._hooks = hooks
        self._references = sender  # references uploaded, and the base64 refusal handled
        self._downloader = Downloader(client, options.output, force=options.force)
        self._manifest = Manifest(options.output)
        self._display = display
        self._tracker = JobTracker(
            self._manifest,
            self._display,
            output=options.output,
            as_json=options.as_json,
            gallery=gallery,
        )
        self._lock = self._tracker.lock  # one lock for all the jobs' state
        self._jobs = jobs
        self._by_task: dict[str, JobRun] = {}  # by the id polled (the submission's)
        self._queue: deque[JobRun] = deque()
        self._sending = True
        self._closed = False  # the run is over: late results are not recorded
        self.settled = False  # the run ended with nothing left on its way
        self._history_broken = False  # a write failed: said once, not tried again
        self._sender: threading.Thread | None = None
        self._engine: Engine | None = None
        limiter.on_change = self._slowed

    def run(self) -> ExitCode:
        started = time.monotonic()
        self._downloader.prepare()
        self._manifest.open()  # first: it locks the folder against a second batch
        try:
            return self._run(started)
        finally:
            self._manifest.close()

    def _run(self, started: float) -> ExitCode:
        with self._open_history() as history:
            history.check_writable()  # before anything is sent, as `generate` does
            records = self._manifest.read()
            self._engine = Engine(
                self._client,
                deadline=self._client.deadline,
                reporter=self,
                downloader=self._downloader,
                history=history,
                interval=self._options.interval,
                save=self._save,
                hooks=self._hooks,
            )
            self._display.start()
            try:
                self._plan(records)
                self._tracker.show()  # the gallery page, from the start
                if self._references is not None:  # each distinct one once, before any job
                    self._references.upload_first([run.job.request for run in self._queue])
                timed_out = self._go()
            except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM
                self._interrupted()
                return interrupted_code(interrupt)
            finally:
                self._close()
                self._display.close()
                self._tracker.show(final=True)  # however it ended: no longer reloading
        self._tracker.finish_rest(timed_out, self._options.timeout)
        self._tracker.show(final=True)
        self.settled = not timed_out
        return self._tracker.summarise(time.monotonic() - started)

    def _plan(self, records: Records) -> None:
        """Sort the jobs by what the manifest says of them: send, wait, done or unknown."""
        steps = dict.fromkeys(STEP_LABELS, 0)
        for job in self._jobs:
            record = records.of(job)
            run, step = resumed(job, record, self._options.output)
            self._tracker.runs.append(run)
            steps[step] += 1
            moved = record is not None and record.get("line") != job.line  # recorded anew
            if step == "send":
                self._queue.append(run)
            elif step == "wait":
                self._watch(run)
            elif step == "done":
                if not self._options.as_json:
                    for name in run.files:
                        self._display.output(str(self._options.output / name))
                self._tracker.end(run, record=moved)
            else:
                self._tracker.end(run, error=_still_unknown(run), record=moved)
        if any(records.of(job) is not None for job in self._jobs):
            counts = ", ".join(f"{n} {STEP_LABELS[step]}" for step, n in steps.items() if n)
            self._display.message(f"Resuming from {self._manifest.path}: {counts}.")
            self._say_what_done_jobs_keep()

    def _say_what_done_jobs_keep(self) -> None:
        """A rerun's --name or --metadata that the jobs done before do not have: said, not
        silently ignored (their images keep the names and sidecars they were saved with)."""
        options, ignored = self._options, set[str]()
        for run in self._tracker.runs:
            if run.state != "completed" or not run.files or run.task_id is None:
                continue
            for index, name in enumerate(run.files):
                wanted = format_name(
                    options.name,
                    task_id=run.task_id,
                    index=index,
                    line=run.job.line,
                    slug=run.job.slug,
                )
                if Path(name).stem != wanted:
                    ignored.add("--name")
                if options.metadata and not (options.output / name).with_suffix(".json").exists():
                    ignored.add("--metadata")
        if ignored:
            flags = " and ".join(sorted(ignored))
            verb = "applies" if len(ignored) == 1 else "apply"
            self._display.message(
                f"Note: {flags} only {verb} to images not saved yet; the jobs done before "
                "keep the files they were saved with."
            )

    def _go(self) -> bool:
        """Submit on worker threads while the engine polls here; True if the deadline
        came first. Ctrl-C raises KeyboardInterrupt here, once the engine has stopped."""
        assert self._engine is not None
        if self._queue:
            self._engine.open_input()
            self._sender = threading.Thread(target=self._send_all, name="submit", daemon=True)
            self._sender.start()
        # The engine ends when the sender's input has ended (every submission answered)
        # and every task is done with, or at the deadline.
        outcome = self._engine.run()
        if outcome.interrupted:
            raise Terminated if outcome.exit_code == ExitCode.TERMINATED else KeyboardInterrupt
        return outcome.timed_out

    def _close(self) -> None:
        """The run is over: send nothing more, and record nothing more from other threads."""
        with self._lock:
            self._sending = False
            self._closed = True
        self._limiter.close()

    # -- submitting (worker threads) ---------------------------------------------------------

    def _send_all(self) -> None:
        """`limiter.ceiling` workers send the queue; then the poller's input ends."""
        count = min(self._limiter.ceiling, len(self._queue))
        workers = [
            threading.Thread(target=self._send_worker, name=f"submit-{i}", daemon=True)
            for i in range(count)
        ]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            assert self._engine is not None
            self._engine.close_input()

    def _send_worker(self) -> None:
        try:
            with self._open_history() as history:  # SQLite connections stay on their thread
                while (run := self._next()) is not None:
                    if not self._limiter.acquire():
                        return  # stopped: the job stays queued
                    accepted = False
                    try:
                        accepted = self._submit(history, run)
                    except Exception as exc:  # a bug fails the job, never silently
                        error = ApimartError(f"Internal error: {exc!r}")
                        with self._lock:
                            if not self._closed:
                                self._tracker.end(run, "failed", error)
                    finally:
                        self._limiter.release(accepted=accepted)
        except ApimartError as error:  # the history cannot be opened
            self._stop_sending(error)

    def _next(self) -> JobRun | None:
        with self._lock:
            if not self._sending or self._manifest.failed or not self._queue:
                return None
            return self._queue.popleft()

    def _submit(self, history: History, run: JobRun) -> bool:
        """Send one job, its key recorded first; True if the service took it."""
        # The key goes into the "submitting" record before the request is sent, so that a
        # rerun after a kill resends with it and the service makes one task of both sends.
        with self._lock:
            if self._closed:
                return False
            run.key = run.key or str(uuid.uuid4())
            run.task_id, run.files, run.cost, run.error = None, [], None, None
            run.submitted_at = time.time()
            self._tracker.update(run, "submitting", note=None)
            if self._manifest.failed:  # the key is not on disk: a rerun could not resend
                run.state = "queued"  # with it, and the service would make a second task
                return False
        try:
            if self._references is None:
                task_ids = submit(self._client, history, run.job.request, idempotency_key=run.key)
            else:
                task_ids = self._references.submit(
                    history,
                    run.job.request,
                    idempotency_key=run.key,
                    before_resend=lambda key: self._resending(run, key),
                )
        except SubmittedButUnrecorded as error:  # taken and paid for: wait for it all the same
            self._history_failed(error.message)
            task_ids = list(error.task_ids)
        except ApimartError as error:
            self._refused(run, error)
            return False
        with self._lock:
            if self._closed:  # too late: the record keeps "submitting" and the key
                return True
            if len(task_ids) > 1:
                self._display.warning(
                    f"line {run.job.line}: the service made {len(task_ids)} tasks; "
                    "`apimart wait --pending` waits for all but the first."
                )
            run.task_id = task_ids[0]
            self._tracker.update(run, "submitted", note=f"submitted {run.task_id}")
            self._watch(run)
        return True

    def _resending(self, run: JobRun, key: str) -> None:
        """The job goes out again under a new key (its references uploaded): recorded first,
        as any submission's key is, so that a rerun after a kill resends with it."""
        with self._lock:
            if not self._closed:
                run.key = key
                self._tracker.update(run, "submitting", note="references uploaded; sending again")
            if self._manifest.failed:  # as in `_submit`: no resend under a key not on disk
                raise ApimartError(f"Not sent again: {self._manifest.path} cannot be written.")

    def _refused(self, run: JobRun, error: ApimartError) -> None:
        """The submission failed, or its outcome is unknown."""
        with self._lock:
            if self._closed or isinstance(error, SubmissionTimedOut):
                # Out of time on its way: the record keeps "submitting" and the key, so a
                # rerun sends it with that key and the service makes no second task.
                return
            if isinstance(error, HistoryError) or error.exit_code in _STOP_SENDING:
                self._stop_sending()
            if isinstance(error, (HistoryError, BoundBodyChanged)):
                # Usually nothing was sent (the history is checked first); if it was, the
                # outcome is unknown. Either way the record keeps "submitting" and the key,
                # so a rerun sends it with that key and the service makes no second task.
                # (A reference file of the key's body that changed since sends nothing,
                # and the key, which may have made a task, is kept all the same.)
                self._tracker.end(run, error=error)
                return
            unknown = isinstance(error, SubmissionUnknown)
            if unknown:
                self._tracker.hint(_UNKNOWN_HINT)
            self._tracker.end(run, "unknown" if unknown else "failed", error)

    def _stop_sending(self, error: ApimartError | None = None) -> None:
        with self._lock:
            if error is not None and not self._closed:
                self._display.warning(f"Error: {error.message}")
                self._tracker.fail(error.exit_code)
            self._sending = False
        self._limiter.close()

    def _interrupted(self) -> None:
        """Ctrl-C: send nothing more, but let what is on its way be recorded (the client
        must stay open for that); a second Ctrl-C stops at once."""
        self._stop_sending()
        sender = self._sender
        if sender is not None and sender.is_alive():
            try:  # from the first word said: a second Ctrl-C may come at once
                self._display.warning(
                    "Interrupted; recording the submissions on their way "
                    "(Ctrl-C again to quit now)."
                )
                while sender.is_alive():
                    sender.join(0.2)
            except KeyboardInterrupt:
                self._close()  # the jobs on their way keep their "submitting" record and key
                self._display.warning(
                    "Quit with submissions on their way; a rerun (or `apimart resend KEY`, "
                    "`apimart history --pending` lists the keys) sends them again with the "
                    "same idempotency keys, so the service makes no second task."
                )
        self._close()
        self._display.warning("Interrupted. Run the same command again to resume where it stopped.")

    def _slowed(self, limit: int, pause: float) -> None:
        self._display.message(
            f"Rate limited: at most {limit} submission(s) at once, pausing {pause:g} s."
        )

    # -- the history --------------------------------------------------------------------------

    def _history_failed(self, reason: str) -> None:
        """A history write failed: say so once, and write no more; the manifest goes on."""
        with self._lock:
            if self._history_broken:
                return
            self._history_broken = True
            self._display.warning(
                f"Warning: the task history could not be written: {reason}\n"
                f"The run goes on without it; {self._manifest.path} records every job."
            )

    def _watch(self, run: JobRun) -> None:
        assert run.task_id is not None and self._engine is not None
        self._by_task[run.task_id] = run
        self._display.job(run.job.line, run.stage())
        self._engine.add(run.task_id)

    # -- saving (the engine's download threads) --------------------------------------------------

    def _save(
        self, task: Task, index: int, on_progress: OnProgress, before_rename: Finish | None
    ) -> SavedFile:
        """Download one image under its --name, and its metadata."""
        run, options = self._by_task[task.task_id], self._options
        name = format_name(
            options.name, task_id=task.task_id, index=index, line=run.job.line, slug=run.job.slug
        )
        try:
            path, kept = save_image(
                self._downloader,
                task,
                index,
                name,
                force=options.force,
                on_progress=on_progress,
                before_rename=before_rename,
            )
            if options.metadata and not (kept and path.with_suffix(".json").exists()):
                write_metadata(run, task, index, path)
        except OSError as exc:
            raise _save_failed(run, index, exc) from None
        return SavedFile(path, kept_existing=kept)

    # -- the engine's reporter: each job's progress, into the manifest and the display -------

    def added(self, task_id: str) -> None:
        pass  # `_watch` has shown it

    def update(self, task: Task) -> None:
        run = self._by_task[task.task_id]
        if task.cost is not None and task.cost != run.cost:
            run.cost = task.cost
            self._display.cost(sum(r.cost or 0.0 for r in self._tracker.runs))
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
            if self._closed:  # too late to report: a rerun finds the file
                return
            if not saved.kept_existing:
                self._display.saved(run.job.line, index, str(saved.path))
            elif saved.path.name not in run.files:  # a file from this job's earlier run is no news
                self._display.warning(
                    f"line {run.job.line}: kept the existing {saved.path} (--force replaces it)"
                )
            if not self._options.as_json:
                self._display.output(str(saved.path))
            run.saved[index] = saved.path.name

    def failed(self, task_id: str | None, error: ApimartError) -> None:
        run = self._by_task[str(task_id)]
        with self._lock:
            if self._closed:
                return
            if run.task is None:  # its polls failed: the task may be fine; wait next time
                self._tracker.end(run, error=error)
                return
            self._display.warning(f"line {run.job.line}: {error.message}")
            self._tracker.end(run, error=error, warn=False, final=False)

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        run = self._by_task[task.task_id]
        with self._lock:
            if self._closed:
                return
            if task.status != "completed":
                reason = task.error_message or "no reason given"
                error = TaskError(f"task {task.task_id} {task.status}: {reason}")
                self._tracker.end(run, task.status, error)
                return
            run.files = [run.saved[i] for i in sorted(run.saved)]
            self._tracker.end(run, warn=False)

    def history_failed(self, error: HistoryError) -> None:
        self._history_failed(error.message)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass  # the display outlives the engine: the run's summary comes after


def _still_unknown(run: JobRun) -> SubmissionUnknown:
    return SubmissionUnknown(
        "an earlier submission's outcome is unknown and its idempotency key was not "
        "recorded; it is not sent again.",
        "Check your APIMart dashboard for its task before editing its line to send it anew.",
        idempotency_key=run.key or "",
    )


def _save_failed(run: JobRun, index: int, exc: OSError) -> ApimartError:
    reason = exc.strerror or repr(exc)
    where = f": {exc.filename}" if exc.filename else ""
    return TaskError(f"Could not save image {index} of task {run.task_id}: {reason}{where}")
