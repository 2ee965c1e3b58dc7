"""A batch's submit workers: the queue sent at the pace the service allows.

At most `AimdLimiter.limit` submissions are in flight. Each job's idempotency
key goes into its "submitting" record before the request is sent, and a resend
under a new key (its references uploaded) is recorded the same way first, so a
run killed at any point resends with the key on disk and the service makes one
task of both sends. Each task the service makes is handed to the engine through
the reporter (`BatchReporter.watch`). The workers are daemon threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from apimart_cli.errors import (
    ApimartError,
    ExitCode,
    HistoryError,
    SubmissionTimedOut,
    SubmissionUnknown,
    SubmittedButUnrecorded,
)
from apimart_cli.submission import BoundBodyChanged, submit

if TYPE_CHECKING:
    from apimart_cli.batch.manifest import JobRun
    from apimart_cli.batch.pacing import AimdLimiter
    from apimart_cli.batch.reporter import BatchReporter
    from apimart_cli.batch.tracker import JobTracker
    from apimart_cli.client import Client
    from apimart_cli.history import History
    from apimart_cli.references import ReferenceSender

_STOP_SENDING = (ExitCode.AUTH, ExitCode.BALANCE)  # every later submission would fail alike
_UNKNOWN_HINT = (
    "A job whose submission's outcome is unknown keeps its idempotency key: run the same "
    "command again shortly (or `apimart resend KEY`) and it is sent again with that key and "
    "its body, so the service answers with the task it made, or makes it once."
)


class Submitter:
    """Sends the queued jobs on `limiter.ceiling` worker threads, each submission
    waiting for a slot of the limiter. Every change of a job goes through the
    tracker, under its lock; once the tracker is closed nothing more is recorded."""

    def __init__(
        self,
        client: Client,
        limiter: AimdLimiter,
        open_history: Callable[[], History],
        tracker: JobTracker,
        reporter: BatchReporter,
        references: ReferenceSender | None = None,
    ) -> None:
        self._client, self._limiter, self._open_history = client, limiter, open_history
        self._tracker, self._reporter = tracker, reporter
        self._lock = tracker.lock
        self._references = references  # references uploaded, and the base64 refusal handled
        self.queue: deque[JobRun] = deque()  # the jobs to send, in order
        self._sending = True
        self.cut_off = False  # the deadline ended a submission on its way
        self._thread: threading.Thread | None = None
        limiter.on_change = self._slowed

    def upload_references(self) -> None:
        """Each distinct reference of the queued jobs uploaded once, before any is sent."""
        if self._references is not None:
            self._references.upload_first([run.job.request for run in self.queue])

    def start(self, on_done: Callable[[], None]) -> None:
        """Send the queue on worker threads; `on_done` once every submission is answered."""
        self._thread = threading.Thread(
            target=self._send_all, args=(on_done,), name="submit", daemon=True
        )
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Submissions are still on their way."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, error: ApimartError | None = None) -> None:
        """Send nothing more (`error`: why, said and counted in the exit code)."""
        with self._lock:
            if error is not None and not self._tracker.closed:
                self._tracker.display.warning(f"Error: {error.message}")
                self._tracker.fail(error.exit_code)
            self._sending = False
        self._limiter.close()

    def _send_all(self, on_done: Callable[[], None]) -> None:
        self._limiter.expect(len(self.queue))
        count = min(self._limiter.ceiling, len(self.queue))
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
            on_done()

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
                            if not self._tracker.closed:
                                self._tracker.end(run, "failed", error)
                    finally:
                        self._limiter.release(accepted=accepted)
        except ApimartError as error:  # the history cannot be opened
            self.stop(error)

    def _next(self) -> JobRun | None:
        with self._lock:
            if not self._sending or self._tracker.manifest.failed or not self.queue:
                return None
            return self.queue.popleft()

    def _send(self, history: History, run: JobRun) -> list[str]:
        """Submit the job's request under its key, its references sent as the mode says."""
        assert run.key is not None
        if self._references is None:
            return submit(self._client, history, run.job.request, idempotency_key=run.key)
        return self._references.submit(
            history,
            run.job.request,
            idempotency_key=run.key,
            before_resend=lambda key: self._resending(run, key),
        )

    def _submit(self, history: History, run: JobRun) -> bool:
        """Send one job, its key recorded first; True if the service took it."""
        # The key goes into the "submitting" record before the request is sent, so that a
        # rerun after a kill resends with it and the service makes one task of both sends.
        with self._lock:
            if self._tracker.closed:
                return False
            run.key = run.key or str(uuid.uuid4())
            run.task_id, run.files, run.cost, run.error = None, [], None, None
            run.submitted_at = time.time()
            self._tracker.update(run, "submitting", note=None)
            if self._tracker.manifest.failed:  # the key is not on disk: a rerun could not
                run.state = "queued"  # resend with it, and the service would make a second task
                return False
        try:
            # A key answered before (by `apimart resend`, or in a run killed before its
            # manifest heard) is never sent again: `submit` gives its task ids.
            task_ids = self._send(history, run)
        except SubmittedButUnrecorded as error:  # taken and paid for: wait for it all the same
            self._reporter.history_unwritable(error.message)
            task_ids = list(error.task_ids)
        except ApimartError as error:
            self._refused(run, error)
            return False
        self._limiter.accepted()  # on this thread, which acquired its slot
        with self._lock:
            if self._tracker.closed:  # too late: the record keeps "submitting" and the key
                return True
            if len(task_ids) > 1:
                self._tracker.display.warning(
                    f"line {run.job.line}: the service made {len(task_ids)} tasks; "
                    "`apimart wait --pending` waits for all but the first."
                )
            run.task_id = task_ids[0]
            self._tracker.update(run, "submitted", note=f"submitted {run.task_id}")
            self._reporter.watch(run)
        return True

    def _resending(self, run: JobRun, key: str) -> None:
        """The job goes out again under a new key (its references uploaded): recorded first,
        as any submission's key is, so that a rerun after a kill resends with it."""
        manifest = self._tracker.manifest
        with self._lock:
            if not self._tracker.closed:
                run.key = key
                self._tracker.update(run, "submitting", note="references uploaded; sending again")
            if manifest.failed:  # as in `_submit`: no resend under a key not on disk
                raise ApimartError(f"Not sent again: {manifest.path} cannot be written.")

    def _refused(self, run: JobRun, error: ApimartError) -> None:
        """The submission failed, or its outcome is unknown."""
        with self._lock:
            if self._tracker.closed or isinstance(error, SubmissionTimedOut):
                # Out of time on its way: the record keeps "submitting" and the key, so a
                # rerun sends it with that key and the service makes no second task.
                self.cut_off = self.cut_off or isinstance(error, SubmissionTimedOut)
                return
            if isinstance(error, HistoryError) or error.exit_code in _STOP_SENDING:
                self.stop()
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

    def _slowed(self, limit: int, pause: float) -> None:
        self._tracker.display.message(
            f"Rate limited: at most {limit} submission(s) at once, pausing {pause:g} s."
        )
