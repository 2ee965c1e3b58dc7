"""`batch-manifest.jsonl`: every job's progress, so that a rerun resumes instead of resending.

One JSON record per event, appended, flushed and fsynced before the run goes
on. A job is a hash of its line plus which copy of that line it is (`Job.identity`),
so an edited line is a new job but a line moved by an added comment is not; the
latest record of a job wins (`Records`). `JobRun` is a job's progress in one
run, `JobRun.record()` what the manifest keeps of it, and `resume_step` what a
rerun makes of the latest record.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from apimart_cli import safefiles, secrets
from apimart_cli.errors import ExitCode, UsageError
from apimart_cli.settings import is_sandbox_url

if TYPE_CHECKING:
    from apimart_cli.batch.jobs import Job
    from apimart_cli.tasks import Task

MANIFEST_NAME = "batch-manifest.jsonl"
OUTCOMES = ("done", "failed", "unknown", "unfinished", "not sent")
# What `resume_step` can answer, as the "Resuming from ..." message words it.
STEP_LABELS = {"done": "done", "wait": "to wait for", "send": "to send", "unknown": "unknown"}


class Manifest:
    """`batch-manifest.jsonl`: every job's progress, one appended JSON record per event.

    `open()` also makes the run the only batch writing into its folder: the file
    is locked for as long as it is open, so a second run into the same folder
    stops before sending anything, instead of reading the same manifest and
    paying for every job again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST_NAME
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self.failed = False  # a write failed: the manifest no longer tells the whole story

    def read(self) -> Records:
        """The latest record of each job; a line cut short by a kill is skipped."""
        latest = Records()
        try:
            if self._file is not None:
                self._file.seek(0)
                content = self._file.read()
            else:
                with self.path.open("rb") as file:
                    content = file.read()
        except FileNotFoundError:
            return latest
        except OSError as exc:
            raise UsageError(f"Cannot read {self.path}: {exc.strerror or exc}.") from None
        for raw in content.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(raw, parse_constant=lambda constant: None)  # no NaN
            except (ValueError, RecursionError):  # cut short by a kill, or not ours
                continue
            if isinstance(record, dict):
                latest.add(trusted(record))
        return latest

    def open(self) -> None:
        """Open for appending and lock it; first end a record a killed run left unfinished.

        The file is created private (0600), never opened through a link planted at
        its name, and refused (exit 2, nothing sent) while another run holds it.
        """
        try:
            fd = safefiles.open_no_follow(self.path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UsageError(
                    f"{self.path} is a symbolic link; the manifest is never written through one.",
                    "Remove the link (or choose another folder with -o) and run again.",
                ) from None
            raise UsageError(f"Cannot write {self.path}: {exc.strerror or exc}.") from None
        try:
            _check_own_file(self.path, fd)
            _lock_for_this_run(self.folder, fd)
            self._file = os.fdopen(fd, "a+b")
        except BaseException:
            os.close(fd)
            raise
        try:
            size = self._file.seek(0, os.SEEK_END)
            if size > 0:
                self._file.seek(size - 1)
                if self._file.read(1) != b"\n":
                    self._file.write(b"\n")
        except OSError as exc:
            self.close()
            raise UsageError(f"Cannot write {self.path}: {exc.strerror or exc}.") from None

    def append(self, record: Mapping[str, Any]) -> str | None:
        """Write one record and make it durable before going on; the API key never goes in.

        The first write that fails returns what to tell the user (the run then stops
        sending: a rerun would resend); every other write returns None."""
        data = (json.dumps(_redacted(record), ensure_ascii=False, default=str) + "\n").encode()
        with self._lock:
            if self._file is None:  # closed: the run is over, and a late record is not kept
                return None
            try:
                self._file.write(data)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                first, self.failed = not self.failed, True
                if first:
                    return (
                        f"Error: cannot write {self.path}: {exc.strerror or exc}. "
                        "No more jobs are sent; those sent are in `apimart history`."
                    )
            return None

    def close(self) -> None:
        """Close the file, which lets the next batch into the folder."""
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # a record that could not be written: `append` said so
                self.failed = True
            self._file = None


# Appending, created private (never through a symbolic link at the name: `open_no_follow`).
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT


def _check_own_file(path: Path, fd: int) -> None:
    """A plain file only this user can read: not a folder, a pipe or a hard link to
    another file (written through, it would change that file too)."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        what = "has another name (a hard link)" if stat.S_ISREG(info.st_mode) else "not a file"
        raise UsageError(
            f"{path} is {what}; the manifest is never written through it.",
            "Remove it (or choose another folder with -o) and run again.",
        )
    if info.st_mode & 0o077:  # written by an older version, or by hand: make it private
        os.fchmod(fd, 0o600)


def _lock_for_this_run(folder: Path, fd: int) -> None:
    """Hold the manifest's lock for the run; UsageError at once if another run holds it."""
    if not safefiles.lock(fd, wait=False):
        raise UsageError(
            f"Another `apimart batch` is running into {folder}; nothing was sent.",
            "Wait for it to finish and run this again (it resumes from the manifest), "
            "or choose another folder with -o.",
        ) from None


# What each key of a record must be to be believed; any other value is read as absent.
_TEXTS = ("digest", "state", "prompt", "idempotency_key", "task_id", "error", "base_url")
_NUMBERS = ("cost", "submitted_at", "time")
_INTEGERS = ("line", "occurrence")
_LATEST = 253402300799  # the end of year 9999: a later time is no date
_MAX_DEPTH = 32  # of the fields: they are flat, and printing a deeper value would fail


def trusted(record: Mapping[str, Any]) -> dict[str, Any]:
    """A record read from the file with every known key of the wrong kind left out (another
    program may have written it): `files` a list of names, times real dates, costs finite,
    `fields` a shallow object. Keys the tool does not know are kept as they are."""
    import math

    from apimart_cli.history import json_depth

    clean: dict[str, Any] = {}
    for key, value in record.items():
        if key in _TEXTS:
            keep = isinstance(value, str)
        elif key in _INTEGERS:
            keep = isinstance(value, int) and not isinstance(value, bool)
        elif key in _NUMBERS:
            keep = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and (key == "cost" or 0 <= value <= _LATEST)
            )
        elif key == "files":
            keep = isinstance(value, list)
            value = [name for name in value if isinstance(name, str)] if keep else value
        elif key == "fields":
            keep = isinstance(value, dict) and json_depth(value) <= _MAX_DEPTH
        else:
            keep = json_depth(value) <= _MAX_DEPTH
        if keep:
            clean[key] = value
    return clean


def _redacted(record: Mapping[str, Any]) -> object:
    """The record with the API key cut out of every value: a failure reason may echo it."""
    return secrets.redact_data(dict(record))


class Records:
    """The latest record of each job in a manifest, found by `Job.identity`.

    A record written before jobs had an "occurrence" is found by its line and
    digest instead: right as long as the file's lines have not moved since.
    """

    def __init__(self) -> None:
        self._by_identity: dict[tuple[str, int], dict[str, Any]] = {}
        self._by_line: dict[tuple[int, str], dict[str, Any]] = {}

    def add(self, record: dict[str, Any]) -> None:
        """A record read from the manifest; a later one of the same job replaces it."""
        line, digest = record.get("line"), record.get("digest")
        occurrence = record.get("occurrence")
        if not isinstance(digest, str) or isinstance(occurrence, bool):
            return
        if isinstance(occurrence, int):
            self._by_identity[(digest, occurrence)] = record
        elif occurrence is None and isinstance(line, int) and not isinstance(line, bool):
            self._by_line[(line, digest)] = record

    def of(self, job: Job) -> dict[str, Any] | None:
        """The job's latest record, if the manifest has one."""
        found = self._by_identity.get(job.identity)
        return found if found is not None else self._by_line.get((job.line, job.digest))

    def __len__(self) -> int:
        return len(self._by_identity) + len(self._by_line)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every job's latest record."""
        yield from self._by_identity.values()
        yield from self._by_line.values()


@dataclass
class JobRun:
    """One job's progress in this run; `record()` is what the manifest keeps of it."""

    job: Job
    fields: dict[str, object]  # the request's fields, references without base64
    base_url: str | None = None  # the service the job is sent to in this run
    state: str = "queued"  # queued, submitting, a task status, or unknown
    key: str | None = None  # the idempotency key of the current submission
    task_id: str | None = None
    files: list[str] = field(default_factory=list)  # names in the output folder
    cost: float | None = None
    error: str | None = None
    code: ExitCode = ExitCode.OK
    submitted_at: float | None = None
    task: Task | None = None  # once completed, with its images
    saved: dict[int, str] = field(default_factory=dict)  # image index -> name, while saving
    pending: int = 0  # images still downloading
    ended: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "line": self.job.line,
            "digest": self.job.digest,
            "occurrence": self.job.occurrence,
            "state": self.state,
            "prompt": self.job.request.prompt,
            "fields": self.fields,
            "idempotency_key": self.key,
            "task_id": self.task_id,
            "files": self.files,
            "cost": self.cost,
            "error": self.error,
            "submitted_at": self.submitted_at,
            "base_url": self.base_url,
            "time": time.time(),
        }

    def result(self, folder: Path) -> dict[str, Any]:
        """The job's `--json` object."""
        files = [str(folder / name) for name in self.files]
        return {
            "line": self.job.line,
            "task_id": self.task_id,
            "status": self.state,
            "files": files,
            "error": self.error,
        }

    def outcome(self) -> str:
        """How the job ended, for the summary: one of OUTCOMES."""
        stage = self.stage()
        if self.state == "unknown" or stage in ("done", "failed"):
            return "unknown" if self.state == "unknown" else stage
        return "not sent" if self.state == "queued" else "unfinished"

    def stage(self) -> str:
        """Where the job is, as the progress display counts it (`progress.BATCH_STAGES`)."""
        failed = self.code not in (ExitCode.OK, ExitCode.TIMEOUT)  # a timeout is not the job's
        if failed or self.state in ("failed", "cancelled", "unknown"):
            return "failed"
        if self.state in ("queued", "submitting"):
            return "queued"
        if self.state in ("submitted", "pending"):
            return "submitted"
        return "done" if self.state == "completed" and self.ended else "processing"


def resume_step(record: Mapping[str, Any] | None, folder: Path) -> str:
    """What a rerun does with a job, from its latest record: send, wait, done or unknown."""
    state = record.get("state") if record else None
    if record is None or state in ("queued", "submitting", "failed", "cancelled"):
        return "send"  # nothing was made; a "submitting" one is resent with its key
    if state == "unknown":
        # It may exist: sent again with its key (and that key's body), so the service
        # answers with the task it made, or makes it once. Never under a new key.
        return "send" if record.get("idempotency_key") else "unknown"
    if not record.get("task_id"):
        return "send"
    files = record.get("files") or []
    saved = files and all(isinstance(f, str) and (folder / f).is_file() for f in files)
    return "done" if state == "completed" and saved and not record.get("error") else "wait"


# The states whose key may have made a task: a rerun sends the job with that key again.
_KEPT_KEY = ("submitting", "unknown")


def resumed(
    job: Job, record: Mapping[str, Any] | None, folder: Path, base_url: str | None = None
) -> tuple[JobRun, str]:
    """The job's run against `base_url`, picked up from its latest record, and what to do
    with it next. A record of a sandbox, in a run against another service, is no record:
    the sandbox's pictures are not what this service would make (nor did it bill them)."""
    run = JobRun(job, job.request.fields(), base_url=base_url)
    if record is not None and _made_by_another_sandbox(record, base_url):
        record = None
    step = resume_step(record, folder)
    if record is None or (step == "send" and record.get("state") not in _KEPT_KEY):
        return run, step
    run.key = record.get("idempotency_key")  # the server makes one task of two sends of a key
    if step != "send":
        run.state, run.task_id = record["state"], record.get("task_id")
        run.files, run.cost = list(record.get("files") or []), record.get("cost")
        run.submitted_at = record.get("submitted_at")
    return run, step


def _made_by_another_sandbox(record: Mapping[str, Any], base_url: str | None) -> bool:
    made_at = record.get("base_url")
    return isinstance(made_at, str) and made_at != base_url and is_sandbox_url(made_at)
