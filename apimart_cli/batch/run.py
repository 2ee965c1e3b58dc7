"""One run of a batch: plan it from the manifest, start it, end it.

The run sorts the jobs by what the manifest says of them (send, wait, done or
unknown), then its `submitter.Submitter` sends the queue on worker threads while
one `engine.Engine`, on the calling thread, polls each new task, downloads its
images and writes the history, telling the `reporter.BatchReporter`. Every step
of every job goes through one `tracker.JobTracker`, which appends it to the
manifest before the display (the one the command made) shows it, so a run
killed at any point resumes where it stopped. The run ends by the deadline or a
second Ctrl-C, never waiting for the workers (daemon threads), and sums up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from apimart_cli.batch.jobs import format_name
from apimart_cli.batch.manifest import STEP_LABELS, JobRun, Manifest, Records, resumed
from apimart_cli.batch.reporter import BatchReporter
from apimart_cli.batch.submitter import Submitter
from apimart_cli.batch.tracker import JobTracker
from apimart_cli.constants import DEFAULT_BATCH_NAME, DEFAULT_BATCH_TIMEOUT, DEFAULT_POLL_INTERVAL
from apimart_cli.downloads import Downloader
from apimart_cli.engine import Engine
from apimart_cli.errors import ExitCode, SubmissionUnknown, Terminated, interrupted_code

if TYPE_CHECKING:
    from apimart_cli.batch.jobs import Job
    from apimart_cli.batch.pacing import AimdLimiter
    from apimart_cli.batch.tracker import BatchDisplay
    from apimart_cli.client import Client
    from apimart_cli.engine import SaveHooks
    from apimart_cli.gallery import Keeper
    from apimart_cli.history import History
    from apimart_cli.references import ReferenceSender


@dataclass(frozen=True)
class BatchOptions:
    output: Path
    name: str = DEFAULT_BATCH_NAME
    timeout: float = DEFAULT_BATCH_TIMEOUT
    interval: float = DEFAULT_POLL_INTERVAL
    force: bool = False
    metadata: bool = False  # a <name>.json sidecar beside each image
    as_json: bool = False


class BatchEnding(NamedTuple):
    """How a run ended: its exit code (the highest wins), and the tasks it leaves failed,
    unfinished or unknown (for `--json`'s error object)."""

    code: ExitCode
    task_ids: list[str]


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
) -> BatchEnding:
    """Send, wait for and download every job not done yet; how the run ended.

    `hooks` are the engine's steps around each image (the provenance chunk);
    `gallery` keeps index.html as each job ends; `display` is what the user sees.
    The run ends by `client.deadline` (the command's --timeout). `client` is closed
    once the run has ended with nothing on its way. After a timeout or a Ctrl-C it
    is left open: closing it would fail the requests still in flight on worker
    threads (the process is ending anyway).
    """
    output = options.output
    downloader = Downloader(client, output, force=options.force)
    tracker = JobTracker(
        Manifest(output), display, output=output, as_json=options.as_json, gallery=gallery
    )
    reporter = BatchReporter(
        tracker,
        downloader,
        name=options.name,
        force=options.force,
        metadata=options.metadata,
        as_json=options.as_json,
    )

    def engine(history: History) -> Engine:
        return Engine(
            client,
            deadline=client.deadline,
            reporter=reporter,
            downloader=downloader,
            history=history,
            interval=options.interval,
            save=reporter.save,
            hooks=hooks,
        )

    batch = BatchRun(
        jobs,
        options,
        open_history,
        tracker=tracker,
        submitter=Submitter(client, limiter, open_history, tracker, reporter, sender),
        reporter=reporter,
        downloader=downloader,
        engine=engine,
        base_url=client.base_url,
    )
    try:
        return batch.run()
    finally:
        if batch.settled:
            client.close()


class BatchRun:
    """One run of a batch: what the manifest says of each job, the run started, and its
    ending. Submit workers, the engine's poll loop (the calling thread) and its download
    workers all change jobs under one lock, the tracker's, which also orders the
    manifest's records.

    Nothing is ever waited for beyond the deadline or a second Ctrl-C: submit and
    download workers are daemon threads, and once the run is over (`_close`) what
    they still finish is neither recorded nor shown. A job whose submission was on
    its way then keeps its "submitting" record and idempotency key, so a rerun sends
    it again with that key and the service answers with the task it already made.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        options: BatchOptions,
        open_history: Callable[[], History],
        *,
        tracker: JobTracker,
        submitter: Submitter,
        reporter: BatchReporter,
        downloader: Downloader,
        engine: Callable[[History], Engine],
        base_url: str,
    ) -> None:
        """`engine` makes the engine once the history is open (it writes to it);
        `base_url` is the service's, which each job's record names."""
        self._jobs, self._options, self._open_history = jobs, options, open_history
        self._base_url = base_url
        self._tracker, self._submitter, self._reporter = tracker, submitter, reporter
        self._manifest, self._display = tracker.manifest, tracker.display
        self._downloader, self._make_engine = downloader, engine
        self._engine: Engine | None = None
        self.settled = False  # the run ended with nothing left on its way

    def run(self) -> BatchEnding:
        started = time.monotonic()
        self._downloader.prepare()
        self._manifest.open()  # first: it locks the folder against a second batch
        try:
            return self._run(started)
        finally:
            self._manifest.close()

    def _run(self, started: float) -> BatchEnding:
        with self._open_history() as history:
            history.check_writable()  # before anything is sent, as `generate` does
            records = self._manifest.read()
            self._engine = self._reporter.engine = self._make_engine(history)
            self._display.start()
            interrupted: KeyboardInterrupt | None = None
            try:
                self._plan(records)
                self._tracker.show()  # the gallery page, from the start
                self._submitter.upload_references()  # each distinct one once, before any job
                timed_out = self._go()
            except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM
                self._interrupted()
                interrupted = interrupt
            finally:
                self._close()
                self._display.close()
                self._tracker.show(final=True)  # however it ended: no longer reloading
            if interrupted is not None:  # said under the display's last frame
                self._display.warning(
                    "Interrupted. Run the same command again to resume where it stopped."
                )
                return BatchEnding(interrupted_code(interrupted), self._tracker.left_task_ids())
        if self._tracker.finish_rest(timed_out, self._options.timeout):
            self._tracker.show(final=True)  # again, with the jobs it just ended
        self.settled = not timed_out
        code = self._tracker.summarise(time.monotonic() - started)
        return BatchEnding(code, self._tracker.left_task_ids())

    def _plan(self, records: Records) -> None:
        """Sort the jobs by what the manifest says of them: send, wait, done or unknown."""
        steps = dict.fromkeys(STEP_LABELS, 0)
        for job in self._jobs:
            record = records.of(job)
            run, step = resumed(job, record, self._options.output, self._base_url)
            self._tracker.runs.append(run)
            steps[step] += 1
            moved = record is not None and record.get("line") != job.line  # recorded anew
            if step == "send":
                self._submitter.queue.append(run)
            elif step == "wait":
                self._reporter.watch(run)
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
        if self._submitter.queue:
            self._engine.open_input()
            self._submitter.start(on_done=self._engine.close_input)
        # The engine ends when the submitter's input has ended (every submission answered)
        # and every task is done with, or at the deadline.
        outcome = self._engine.run()
        if outcome.interrupted:
            raise Terminated if outcome.exit_code == ExitCode.TERMINATED else KeyboardInterrupt
        # The deadline may cut a submission off, ending the engine's input, a moment before
        # the engine (on this thread) sees it: out of time all the same.
        return outcome.timed_out or self._submitter.cut_off

    def _close(self) -> None:
        """The run is over: send nothing more, and record nothing more from other threads."""
        with self._tracker.lock:
            self._tracker.closed = True
            self._submitter.stop()

    def _interrupted(self) -> None:
        """Ctrl-C: send nothing more, but let what is on its way be recorded (the client
        must stay open for that); a second Ctrl-C stops at once."""
        self._submitter.stop()
        if self._submitter.busy:
            try:  # from the first word said: a second Ctrl-C may come at once
                self._display.warning(
                    "Interrupted; recording the submissions on their way "
                    "(Ctrl-C again to quit now)."
                )
                while self._submitter.busy:
                    self._submitter.join(0.2)
            except KeyboardInterrupt:
                self._close()  # the jobs on their way keep their "submitting" record and key
                self._display.warning(
                    "Quit with submissions on their way; a rerun (or `apimart resend KEY`, "
                    "`apimart history --pending` lists the keys) sends them again with the "
                    "same idempotency keys, so the service makes no second task."
                )
        self._close()


def _still_unknown(run: JobRun) -> SubmissionUnknown:
    return SubmissionUnknown(
        "an earlier submission's outcome is unknown and its idempotency key was not "
        "recorded; it is not sent again.",
        "Check your APIMart dashboard for its task before editing its line to send it anew.",
        idempotency_key=run.key or "",
    )
