"""Where every change to a batch job is recorded and shown, and how the run is summed up.

A job that moves on gets, under one lock, a manifest record and a progress
update; one that ends also gets its warning and its `--json` object. Submit
workers, the poll loop and the download threads all report through here, so
the manifest's records come in the order the changes happened.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from apimart_cli.batch.manifest import OUTCOMES, JobRun
from apimart_cli.errors import ApimartError, ExitCode

if TYPE_CHECKING:
    from apimart_cli.batch.manifest import Manifest
    from apimart_cli.gallery import Keeper


class BatchDisplay(Protocol):
    """What a batch run tells the user about: its jobs (by line number), cost, events;
    what must be said even under --quiet (`warning`); its data (`output`). The command
    hands one in (`progress.make_batch_display`)."""

    def start(self) -> None: ...
    def job(self, line: int, stage: str, note: str | None = None) -> None: ...
    def saved(self, line: int, index: int, path: str) -> None: ...
    def transferred(self, line: int, index: int, received: int, total: int | None) -> None: ...
    def cost(self, total: float) -> None: ...
    def message(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...
    def output(self, line: str) -> None: ...
    def close(self) -> None: ...


class JobTracker:
    """Every job of one run, and what the run must say at its end."""

    def __init__(
        self,
        manifest: Manifest,
        display: BatchDisplay,
        *,
        output: Path,
        as_json: bool,
        gallery: Keeper | None = None,
    ) -> None:
        self.manifest, self.display = manifest, display
        self._gallery = gallery  # index.html, rewritten as the jobs move on
        self._output, self._as_json = output, as_json  # for the `--json` objects
        self.runs: list[JobRun] = []
        self.lock = threading.RLock()  # every job's state, and the order of manifest records
        self.code = ExitCode.OK  # for what is no one job's fault
        self._hints: dict[str, None] = {}  # what to do, each said once at the end
        self.closed = False  # the run is over: what other threads finish late is not recorded

    def fail(self, code: ExitCode) -> None:
        """Something went wrong that is no one job's fault."""
        with self.lock:
            self.code = max(self.code, code)

    def hint(self, text: str) -> None:
        self._hints.setdefault(text)

    def show(self, *, final: bool = False) -> None:
        """Every job in its state on the gallery page (`final`: the batch has ended)."""
        if self._gallery is not None:
            records = lambda: [run.record() for run in self.runs]  # noqa: E731
            (self._gallery.close if final else self._gallery.update)(records)

    def _record(self, run: JobRun) -> None:
        """The job's record in the manifest; a first failure to write it, said (even -q)."""
        failure = self.manifest.append(run.record())
        if failure is not None:
            self.display.warning(failure)

    def update(self, run: JobRun, state: str, note: str | None = "") -> None:
        """The job moved on: a manifest record, and a progress line (`note`, or the state)."""
        with self.lock:
            run.state = state
            self._record(run)
            self.display.job(run.job.line, run.stage(), state if note == "" else note)
            self.show()

    def end(
        self,
        run: JobRun,
        state: str | None = None,
        error: ApimartError | None = None,
        *,
        warn: bool = True,
        record: bool = True,
        final: bool = True,
    ) -> None:
        """The job ended (or failed for now): record it, say why, print its JSON object."""
        with self.lock:
            run.state = state or run.state
            if error is not None:
                run.error, run.code = error.message, max(run.code, error.exit_code)
                if error.hint:
                    self.hint(error.hint)
            if not final:
                return
            run.ended = True
            if record:
                self._record(run)
            self.display.job(run.job.line, run.stage())
            self.show()
        if error is not None and warn:
            self.display.warning(f"line {run.job.line}: {error.message}")
        if self._as_json:
            self.display.output(json.dumps(run.result(self._output), ensure_ascii=False))

    def finish_rest(self, timed_out: bool, timeout: float) -> int:
        """Jobs still open: unsent (sending stopped), or unfinished when the wait timed out.
        How many there were."""
        rest = [run for run in self.runs if not run.ended]
        for run in rest:
            unsent = run.state == "queued"
            if not unsent:
                run.code = max(run.code, ExitCode.TIMEOUT)
            run.error = "not sent" if unsent else "unfinished when the wait timed out"
            self.end(run, warn=False, record=not unsent)
        unfinished = sum(run.state != "queued" for run in rest)
        if timed_out and unfinished:
            self.display.warning(
                f"Timed out after {timeout:g} s with {unfinished} job(s) "
                "unfinished. Run the same command again to resume."
            )
        if len(rest) > unfinished:
            self.display.warning(
                f"{len(rest) - unfinished} job(s) not sent; run the command again."
            )
        if self.manifest.failed:
            self.fail(ExitCode.FAILED)
        return len(rest)

    def left_task_ids(self) -> list[str]:
        """The tasks of the jobs not done: failed, unfinished or unknown."""
        return [run.task_id for run in self.runs if run.task_id and run.outcome() != "done"]

    def summarise(self, elapsed: float) -> ExitCode:
        """Say what to do, then how it went; the run's exit code (the highest wins)."""
        for hint in self._hints:
            self.display.warning(hint)
        outcomes = [run.outcome() for run in self.runs]
        parts = [f"{outcomes.count(k)} {k}" for k in OUTCOMES if k == "done" or k in outcomes]
        files = sum(len(run.files) for run in self.runs)
        from apimart_cli.costs import cost_text

        cost = sum(run.cost or 0.0 for run in self.runs)
        self.display.message(
            f"Batch: {len(self.runs)} job(s): {', '.join(parts)}; {files} file(s); "
            f"cost {cost_text(cost)}; {elapsed:.1f} s."
        )
        return max([self.code, *(run.code for run in self.runs)])
