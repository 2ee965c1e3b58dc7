"""`apimart batch`: many generations from one file, resumable, at the pace the service allows.

- Jobs: every line is checked with `build_request` (the API's own rules) before
  anything is sent, and every bad line is reported at once.
- The manifest, `batch-manifest.jsonl` in the output folder: one JSON record per
  event, appended, flushed and fsynced. A job is its line number plus a hash of
  the line, so an edited line is a new job; the latest record of a job wins.
- The run: submit workers, at most `AimdLimiter.limit` in flight, feed one
  `Poller`; each completed task downloads on a pool while the rest are polled.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import string
import sys
import threading
import time
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from apimart_cli import console
from apimart_cli.constants import DEFAULT_POLL_INTERVAL
from apimart_cli.downloads import Downloader, existing_file
from apimart_cli.errors import (
    ApimartError,
    ExitCode,
    HistoryError,
    ServiceError,
    SubmissionUnknown,
    TaskError,
    UsageError,
)
from apimart_cli.payload import build_request
from apimart_cli.polling import Poller

if TYPE_CHECKING:
    from apimart_cli.client import Client
    from apimart_cli.history import History
    from apimart_cli.models import Task
    from apimart_cli.payload import GenerationRequest

MANIFEST_NAME = "batch-manifest.jsonl"
DEFAULT_NAME = "{task_id}_{index}"
PLACEHOLDERS = ("task_id", "index", "line", "slug")
MAX_REPORTED = 20  # bad lines listed before "... and N more"
SLUG_CHARS = 40
DOWNLOAD_WORKERS = 8
RATE_LIMIT_PAUSE = 1.0  # seconds new submissions wait after a 429 that gave no Retry-After

_FIELD_TYPES: dict[str, type] = {
    "prompt": str,
    "size": str,
    "resolution": str,
    "n": int,
    "images": list,
    "official_fallback": bool,
}
_TYPE_NAMES = {str: "a string", int: "a whole number", list: "a list", bool: "true or false"}
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_NAME_HINT = "Use {task_id}, {index}, {line} and {slug}, e.g. --name '{line}-{slug}-{index}'."
_STOP_SENDING = (ExitCode.AUTH, ExitCode.BALANCE)  # every later submission would fail alike
_STEP_LABELS = {"done": "done", "wait": "to wait for", "send": "to send", "unknown": "unknown"}
_UNKNOWN_HINT = (
    "A job whose submission's outcome is unknown is never sent again by a rerun: check "
    "`apimart history --pending` or the APIMart dashboard, and edit its line to send it anyway."
)


# -- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One line of the batch file, checked."""

    line: int
    request: GenerationRequest
    digest: str  # a hash of the line: the job's identity together with `line`

    @property
    def slug(self) -> str:
        return slugify(self.request.prompt)


def load_batch(file: Path | None, name_template: str) -> list[Job]:
    """The jobs of FILE (standard input for None or '-'), and names checked for them."""
    if file is None or str(file) == "-":
        if file is None and console.is_terminal(sys.stdin):
            raise UsageError("No batch file given.", "apimart batch jobs.txt, or pipe the jobs in.")
        try:
            jobs = parse_jobs(list(sys.stdin), Path.cwd(), "standard input")
        except UnicodeDecodeError:
            raise UsageError("Standard input is not UTF-8 text.") from None
    else:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"Cannot read {file}: {reason}.") from None
        jobs = parse_jobs(lines, file.parent, str(file))
    check_names(name_template, jobs)
    notes = [f"Note: line {job.line}: {note}" for job in jobs for note in job.request.notes]
    for note in notes[:MAX_REPORTED]:
        console.info(note)
    if len(notes) > MAX_REPORTED:
        console.info(f"... and {len(notes) - MAX_REPORTED} more notes")
    return jobs


def parse_jobs(lines: Iterable[str], base: Path, source: str) -> list[Job]:
    """Every job; a UsageError listing the bad lines (up to MAX_REPORTED) if any is bad."""
    jobs: list[Job] = []
    problems: list[str] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            jobs.append(parse_line(number, text, base))
        except UsageError as error:
            problems.append(f"line {number}: {error.message}")
    if problems:
        shown = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            shown.append(f"... and {len(problems) - MAX_REPORTED} more")
        raise UsageError(
            f"{len(problems)} bad line(s) in {source}; nothing was sent.\n  " + "\n  ".join(shown),
            "Fix them and run the command again.",
        )
    if not jobs:
        raise UsageError(f"No jobs in {source}.", "Write one prompt, or one JSON object, per line.")
    return jobs


def parse_line(number: int, text: str, base: Path) -> Job:
    """A plain prompt, or a JSON object of fields; relative image paths are taken from `base`."""
    fields: dict[str, Any] = _json_fields(text) if text.startswith("{") else {"prompt": text}
    request = build_request(
        fields["prompt"],
        size=fields.get("size"),
        resolution=fields.get("resolution"),
        n=fields.get("n"),
        images=[_from_folder(base, image) for image in fields.get("images", [])],
        official_fallback=fields.get("official_fallback", False),
    )
    return Job(number, request, hashlib.sha256(text.encode()).hexdigest()[:16])


def _json_fields(text: str) -> dict[str, Any]:
    """The fields of a JSON line (it starts with '{', so it is an object or no JSON at all)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    fields = {key: item for key, item in value.items() if item is not None}  # null: not set
    unknown = sorted(set(fields) - set(_FIELD_TYPES))
    if unknown:
        known = ", ".join(_FIELD_TYPES)
        raise UsageError(f"unknown field {', '.join(map(repr, unknown))} (the fields are {known})")
    if "prompt" not in fields:
        raise UsageError('no "prompt"')
    for key, expected in _FIELD_TYPES.items():
        item = fields.get(key)
        if key in fields and (
            not isinstance(item, expected) or isinstance(item, bool) is not (expected is bool)
        ):
            raise UsageError(f'"{key}" must be {_TYPE_NAMES[expected]}, not {json.dumps(item)}')
    if not all(isinstance(image, str) for image in fields.get("images", [])):
        raise UsageError('"images" must be a list of strings')
    return fields


def _from_folder(base: Path, image: str) -> str:
    """A relative file path taken from `base`; URLs and data: URIs as given."""
    if image[:5].lower() == "data:" or _URL_RE.match(image) or not image.strip():
        return image
    path = Path(image).expanduser()
    return image if path.is_absolute() else str(base / path)


# -- file names ------------------------------------------------------------------------------


def slugify(prompt: str, limit: int = SLUG_CHARS) -> str:
    """Lowercase ASCII letters, digits and '-' from the prompt, at most `limit` characters."""
    text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "image"


def format_name(template: str, *, task_id: str, index: int, line: int, slug: str) -> str:
    """The file name (without extension) for one image; UsageError if it could leave the folder."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        unknown = sorted(fields - set(PLACEHOLDERS))
        if unknown:
            raise UsageError(
                f"Unknown placeholder {{{unknown[0]}}} in --name {template!r}.", _NAME_HINT
            )
        name = template.format(task_id=task_id, index=index, line=line, slug=slug)
    except (ValueError, IndexError, KeyError) as exc:
        raise UsageError(f"Invalid --name {template!r}: {exc}.", _NAME_HINT) from None
    if not name.strip() or name.startswith(".") or any(s in name for s in ("/", "\\", "..", "\0")):
        raise UsageError(
            f"--name {template!r} gives the file name {name!r}, which could leave the folder.",
            "A name must not be empty, start with '.', or hold '/', '\\' or '..'.",
        )
    return name


def check_names(template: str, jobs: Sequence[Job]) -> None:
    """Before anything is sent: every image gets a safe name, and no two get the same one."""
    seen: dict[str, int] = {}
    for job in jobs:
        stand_in = f"task_01K{job.line:023d}"  # a unique id of the real length
        for index in range(job.request.n or 1):
            name = format_name(
                template, task_id=stand_in, index=index, line=job.line, slug=job.slug
            )
            if name in seen:
                lines = sorted({seen[name], job.line})
                raise UsageError(
                    f"--name {template!r} gives two images the name {name!r} "
                    f"(line {' and '.join(map(str, lines))}).",
                    "Add {index} and {task_id} or {line} to the template.",
                )
            seen[name] = job.line


def move_into_place(source: Path, target: Path, *, force: bool) -> bool:
    """Rename `source` to `target`; False (`source` removed) if `target` exists, unless force."""
    if force:
        source.replace(target)
        return True
    try:
        os.link(source, target)  # fails if the target exists: no check-then-rename race
    except FileExistsError:
        source.unlink()
        return False
    except OSError:  # no hard links on this file system
        if target.exists():
            source.unlink()
            return False
        source.replace(target)
        return True
    source.unlink()
    return True


# -- the manifest ----------------------------------------------------------------------------


class Manifest:
    """`batch-manifest.jsonl`: every job's progress, one appended JSON record per event."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / MANIFEST_NAME
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self.failed = False  # a write failed: the manifest no longer tells the whole story

    def read(self) -> dict[tuple[int, str], dict[str, Any]]:
        """The latest record of each job (line, digest); a line cut short by a kill is skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise UsageError(f"Cannot read {self.path}: {exc.strerror or exc}.") from None
        latest: dict[tuple[int, str], dict[str, Any]] = {}
        for raw in text.splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                line, digest = record.get("line"), record.get("digest")
                if isinstance(line, int) and isinstance(digest, str):
                    latest[(line, digest)] = record
        return latest

    def open(self) -> None:
        """Open for appending, first ending a record a killed run left without its newline."""
        try:
            self._file = self.path.open("ab")
            if self._file.tell() > 0:
                with self.path.open("rb") as existing:
                    existing.seek(-1, os.SEEK_END)
                    if existing.read(1) != b"\n":
                        self._file.write(b"\n")
        except OSError as exc:
            raise UsageError(f"Cannot write {self.path}: {exc.strerror or exc}.") from None

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record and make it durable before going on."""
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            assert self._file is not None, "Manifest.open() first"
            try:
                self._file.write(data)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                if not self.failed:  # said once; the run stops sending (a rerun would resend)
                    console.warn(
                        f"Error: cannot write {self.path}: {exc.strerror or exc}. "
                        "No more jobs are sent; those sent are in `apimart history`."
                    )
                self.failed = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# -- pacing ----------------------------------------------------------------------------------


class AimdLimiter:
    """How many submissions may be in flight: additive increase, multiplicative decrease.

    A 429 halves the limit (once per pause, however many replies say so at
    once) and holds new submissions back for its Retry-After; each run of
    `limit` successes adds one back, up to `ceiling`. Time comes from `clock`,
    so the rules are tested without waiting; `acquire` is the blocking side.
    """

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = self.ceiling
        self.in_flight = 0
        self.on_change: Callable[[int, float], None] = lambda limit, pause: None
        self._clock = clock
        self._paused_until = float("-inf")
        self._streak = 0
        self._closed = False
        self._cond = threading.Condition()

    def delay(self) -> float | None:
        """0 if a submission may start now, seconds until one may, or None: wait for a slot."""
        with self._cond:
            pause = self._paused_until - self._clock()
            if pause > 0:
                return pause
            return 0.0 if self.in_flight < self.limit else None

    def acquire(self) -> bool:
        """Block until a submission may start (True), or until `close` (False)."""
        with self._cond:
            while not self._closed:
                wait = self.delay()
                if wait == 0:
                    self.in_flight += 1
                    return True
                self._cond.wait(wait)
            return False

    def release(self, *, accepted: bool) -> None:
        """A submission ended; an accepted one counts towards raising the limit."""
        with self._cond:
            self.in_flight -= 1
            if accepted:
                self._streak += 1
                if self._streak >= self.limit and self.limit < self.ceiling:
                    self.limit, self._streak = self.limit + 1, 0
            self._cond.notify_all()

    def rate_limited(self, retry_after: float | None) -> None:
        """The service answered 429 (the client's hook; it retries the request itself)."""
        with self._cond:
            now = self._clock()
            halve = now >= self._paused_until  # once per pause, however many 429s
            if halve:
                self.limit = max(1, self.limit // 2)
            pause = RATE_LIMIT_PAUSE if retry_after is None else retry_after
            self._paused_until = max(self._paused_until, now + pause)
            self._streak = 0
            if halve:
                self.on_change(self.limit, pause)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


# -- progress --------------------------------------------------------------------------------

STAGES = ("queued", "submitted", "processing", "done", "failed")
OUTCOMES = ("done", "failed", "unknown", "unfinished", "not sent")


class BatchDisplay:
    """Progress on standard error: one overall bar on a terminal, a line per change off it."""

    def __init__(self, lines: Iterable[int], *, mode: str) -> None:
        self._mode = mode  # "rich", "plain" or "silent"
        self._stages = dict.fromkeys(lines, "queued")
        self._cost = 0.0
        self._lock = threading.Lock()
        self._progress: Any = None
        if mode == "rich":
            from rich.console import Console  # only here: rich is slow to import
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(stderr=True),
                # Data printed while the bar shows goes above it, but only when standard
                # output is this terminal too: a redirected stdout must keep its paths.
                redirect_stdout=console.is_terminal(sys.stdout),
            )
            self._bar = self._progress.add_task(self._counts(), total=len(self._stages))

    def start(self) -> None:
        if self._progress is not None:
            self._progress.start()

    def job(self, line: int, stage: str, note: str | None = None) -> None:
        """A job moved to `stage`; off a terminal, `note` is its line."""
        with self._lock:
            self._stages[line] = stage
            self._refresh()
        if note and self._mode == "plain":
            console.info(f"line {line}: {note}")

    def cost(self, total: float) -> None:
        with self._lock:
            self._cost = total
            self._refresh()

    def message(self, text: str) -> None:
        if self._mode == "rich":
            self._progress.console.print(text, markup=False, highlight=False)
        elif self._mode == "plain":
            console.info(text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()

    def _counts(self) -> str:
        counts = {stage: 0 for stage in STAGES}
        for stage in self._stages.values():
            counts[stage] += 1
        return " · ".join(f"{k} {v}" for k, v in counts.items()) + f" · cost {self._cost:.2f}"

    def _refresh(self) -> None:
        if self._progress is not None:
            ended = sum(stage in ("done", "failed") for stage in self._stages.values())
            self._progress.update(self._bar, description=self._counts(), completed=ended)


def make_display(lines: Iterable[int]) -> BatchDisplay:
    """Silent with --quiet, a bar on a terminal, else plain lines."""
    if console.is_quiet():
        return BatchDisplay(lines, mode="silent")
    return BatchDisplay(lines, mode="rich" if console.is_terminal(sys.stderr) else "plain")


# -- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchOptions:
    output: Path
    name: str = DEFAULT_NAME
    timeout: float = 1800.0
    interval: float = DEFAULT_POLL_INTERVAL
    force: bool = False
    metadata: bool = False
    as_json: bool = False


@dataclass
class JobRun:
    """One job's progress in this run; `record()` is what the manifest keeps of it."""

    job: Job
    fields: dict[str, object]  # the request's fields, references without base64
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
            "state": self.state,
            "prompt": self.job.request.prompt,
            "fields": self.fields,
            "idempotency_key": self.key,
            "task_id": self.task_id,
            "files": self.files,
            "cost": self.cost,
            "error": self.error,
            "submitted_at": self.submitted_at,
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
        """Where the job is, as the progress display counts it."""
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
        return "unknown"  # it may exist: never sent twice
    if not record.get("task_id"):
        return "send"
    files = record.get("files") or []
    saved = files and all(isinstance(f, str) and (folder / f).is_file() for f in files)
    return "done" if state == "completed" and saved and not record.get("error") else "wait"


def _resumed(job: Job, record: Mapping[str, Any] | None, folder: Path) -> tuple[JobRun, str]:
    run = JobRun(job, job.request.fields())
    step = resume_step(record, folder)
    if record is None or (step == "send" and record.get("state") != "submitting"):
        return run, step
    run.key = record.get("idempotency_key")  # the server makes one task of two sends of a key
    if step != "send":
        run.state, run.task_id = record["state"], record.get("task_id")
        run.files, run.cost = list(record.get("files") or []), record.get("cost")
        run.submitted_at = record.get("submitted_at")
    return run, step


def submit_with_key(
    client: Client, history: History, request: GenerationRequest, key: str
) -> list[str]:
    """`submission.submit` with the caller's idempotency key, so that a rerun can resend it."""
    history.check_writable()
    fields = request.fields()
    try:
        task_ids = client.submit(request, key)
    except SubmissionUnknown as error:
        history.record_unknown(
            base_url=client.base_url,
            prompt=request.prompt,
            fields=fields,
            idempotency_key=key,
            error=error.message,
        )
        raise
    for task_id in task_ids:
        history.record_submission(
            task_id,
            base_url=client.base_url,
            prompt=request.prompt,
            fields=fields,
            idempotency_key=key,
        )
    return task_ids


def run_batch(
    jobs: Sequence[Job],
    client: Client,
    limiter: AimdLimiter,
    options: BatchOptions,
    open_history: Callable[[], History],
) -> ExitCode:
    """Send, wait for and download every job not done yet; the exit code (the highest wins)."""
    return BatchRun(jobs, client, limiter, options, open_history).run()


class BatchRun:
    """One run of a batch. Submit workers, the poll loop (the calling thread) and the
    download pool all change jobs under one lock, which also orders manifest records."""

    def __init__(
        self,
        jobs: Sequence[Job],
        client: Client,
        limiter: AimdLimiter,
        options: BatchOptions,
        open_history: Callable[[], History],
    ) -> None:
        self._client, self._limiter, self._options = client, limiter, options
        self._open_history = open_history
        self._downloader = Downloader(
            client, options.output, force=options.force, on_retry=console.info
        )
        self._manifest = Manifest(options.output)
        self._jobs = jobs
        self._runs: list[JobRun] = []
        self._by_task: dict[str, JobRun] = {}
        self._queue: deque[JobRun] = deque()
        self._sending = True
        self._code = ExitCode.OK  # for what is no one job's fault
        self._hints: dict[str, None] = {}  # what to do, each said once at the end
        self._lock = threading.RLock()
        self._history: History | None = None  # the poll loop's; each submit worker opens its own
        self._sender: threading.Thread | None = None
        self._history_changes: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(DOWNLOAD_WORKERS, thread_name_prefix="download")
        self._display = make_display(job.line for job in jobs)
        self._poller = Poller(
            client.get_task,
            interval=options.interval,
            timeout=options.timeout,
            on_update=self._on_update,
            on_finished=self._on_finished,
            on_idle=self._drain,
        )
        limiter.on_change = self._slowed

    def run(self) -> ExitCode:
        started = time.monotonic()
        self._downloader.prepare()
        with self._open_history() as history:
            history.check_writable()  # before anything is sent, as `generate` does
            records = self._manifest.read()
            self._manifest.open()
            self._history = history
            self._display.start()
            try:
                self._plan(records)
                timed_out = self._go()
                self._drain()
            except KeyboardInterrupt:
                self._interrupted()
                return ExitCode.INTERRUPTED
            finally:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._display.close()
        self._finish_rest(timed_out)
        self._manifest.close()
        for hint in self._hints:
            console.warn(hint)
        self._summarise(time.monotonic() - started)
        return max([self._code, *(run.code for run in self._runs)])

    def _plan(self, records: Mapping[tuple[int, str], Mapping[str, Any]]) -> None:
        """Sort the jobs by what the manifest says of them: send, wait, done or unknown."""
        steps = dict.fromkeys(_STEP_LABELS, 0)
        for job in self._jobs:
            run, step = _resumed(job, records.get((job.line, job.digest)), self._options.output)
            self._runs.append(run)
            steps[step] += 1
            if step == "send":
                self._queue.append(run)
            elif step == "wait":
                self._watch(run)
            elif step == "done":
                if not self._options.as_json:
                    for name in run.files:
                        console.data(str(self._options.output / name))
                self._end(run, record=False)
            else:
                self._end(run, error=_still_unknown(run), record=False)
        if any((job.line, job.digest) in records for job in self._jobs):
            counts = ", ".join(f"{n} {_STEP_LABELS[step]}" for step, n in steps.items() if n)
            self._display.message(f"Resuming from {self._manifest.path}: {counts}.")

    def _go(self) -> bool:
        """Submit on worker threads while polling here; True if the wait timed out."""
        if self._queue:
            self._poller.open_input()
            self._sender = threading.Thread(target=self._send_all, name="submit", daemon=True)
            self._sender.start()
        outcome = self._poller.run()
        if outcome.timed_out:
            self._stop_sending()
        if self._sender is not None:
            self._sender.join()
        self._pool.shutdown(wait=True)
        for task_id, error in outcome.errors.items():
            self._end(self._by_task[task_id], error=error)  # the task may be fine: wait next time
        return outcome.timed_out

    # -- submitting (worker threads) ---------------------------------------------------------

    def _send_all(self) -> None:
        """`limiter.ceiling` workers send the queue; then the poller's input ends."""
        count = min(self._limiter.ceiling, len(self._queue))
        workers = [
            threading.Thread(target=self._send_worker, name=f"submit-{i}", daemon=False)
            for i in range(count)
        ]
        try:
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            self._poller.close_input()

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
                        self._end(run, "failed", ApimartError(f"Internal error: {exc!r}"))
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
        run.key = run.key or str(uuid.uuid4())
        run.task_id, run.files, run.cost, run.error = None, [], None, None
        run.submitted_at = time.time()
        self._update(run, "submitting", note=None)
        try:
            task_ids = submit_with_key(self._client, history, run.job.request, run.key)
        except ApimartError as error:
            if isinstance(error, HistoryError) or error.exit_code in _STOP_SENDING:
                self._stop_sending()
            if isinstance(error, SubmissionUnknown):
                self._hints.setdefault(_UNKNOWN_HINT)
            self._end(run, "unknown" if isinstance(error, SubmissionUnknown) else "failed", error)
            return False
        if len(task_ids) > 1:
            console.warn(
                f"line {run.job.line}: the service made {len(task_ids)} tasks; "
                "`apimart wait --pending` waits for all but the first."
            )
        run.task_id = task_ids[0]
        self._update(run, "submitted", note=f"submitted {run.task_id}")
        self._watch(run)
        return True

    def _stop_sending(self, error: ApimartError | None = None) -> None:
        with self._lock:
            self._sending = False
            if error is not None:
                console.warn(f"Error: {error.message}")
                self._code = max(self._code, error.exit_code)
        self._limiter.close()

    def _interrupted(self) -> None:
        """Ctrl-C: send nothing more, but let what is on its way be recorded (the client
        must stay open for that); a second Ctrl-C stops at once."""
        self._stop_sending()
        if self._sender is not None and self._sender.is_alive():
            console.warn("Interrupted; recording the submissions on their way (Ctrl-C to quit).")
            self._sender.join()
        console.warn("Interrupted. Run the same command again to resume where it stopped.")

    def _slowed(self, limit: int, pause: float) -> None:
        self._display.message(
            f"Rate limited: at most {limit} submission(s) at once, pausing {pause:g} s."
        )

    # -- waiting (the poll loop) ---------------------------------------------------------------

    def _watch(self, run: JobRun) -> None:
        assert run.task_id is not None
        self._by_task[run.task_id] = run
        self._display.job(run.job.line, run.stage())
        self._poller.add(run.task_id)

    def _on_update(self, task: Task) -> None:
        run = self._by_task[task.task_id]
        if task.cost is not None and task.cost != run.cost:
            run.cost = task.cost
            self._display.cost(sum(r.cost or 0.0 for r in self._runs))
        if not task.finished and task.status != run.state:
            self._history_changes.put((task.task_id, {"state": task.status, "cost": task.cost}))
            self._update(run, task.status)

    def _on_finished(self, task: Task) -> None:
        run = self._by_task[task.task_id]
        change = {"state": task.status, "cost": task.cost, "error": task.error_message}
        self._history_changes.put((task.task_id, change))
        if task.status != "completed":
            reason = task.error_message or "no reason given"
            self._end(run, task.status, TaskError(f"task {task.task_id} {task.status}: {reason}"))
        elif not task.images:
            self._end(run, "completed", ServiceError(f"task {task.task_id} has no images."))
        else:
            run.task, run.pending, run.saved = task, len(task.images), {}
            self._update(run, "completed")
            for index in range(len(task.images)):
                self._pool.submit(self._download, run, index)

    def _drain(self) -> None:
        """Apply the history changes queued by other threads (on the poll loop's thread)."""
        while not self._history_changes.empty():
            task_id, changes = self._history_changes.get()
            if self._history is not None:
                self._history.update(task_id, **changes)

    # -- saving (download threads) -------------------------------------------------------------

    def _download(self, run: JobRun, index: int) -> None:
        error: ApimartError | None = None
        try:
            name = self._save(run, index)
        except ApimartError as exc:
            error = exc
        except Exception as exc:  # a disk error or a bug must still fail the job
            error = _save_failed(run, index, exc)
        with self._lock:
            if error is None:
                run.saved[index] = name
            run.pending -= 1
            last = run.pending == 0
            if last:
                run.files = [run.saved[i] for i in sorted(run.saved)]
        if error is not None:
            console.warn(f"line {run.job.line}: {error.message}")
        if last:
            files = [str(self._options.output / name) for name in run.files]
            self._history_changes.put((str(run.task_id), {"files": files}))
        if error is not None or last:
            self._end(run, error=error, warn=False, final=last)

    def _save(self, run: JobRun, index: int) -> str:
        """Download one image under its --name; print its path; its name in the folder."""
        task = run.task
        assert task is not None
        name = format_name(
            self._options.name,
            task_id=task.task_id,
            index=index,
            line=run.job.line,
            slug=run.job.slug,
        )
        path, kept = self._place(task, index, name)
        if not kept:
            self._display.message(f"line {run.job.line}: saved {path}")
        elif path.name not in run.files:  # a file from this job's earlier run is no news
            console.warn(f"line {run.job.line}: kept the existing {path} (--force replaces it)")
        if not self._options.as_json:
            console.data(str(path))
        if self._options.metadata and not (kept and path.with_suffix(".json").exists()):
            self._write_metadata(run, task, index, path)
        return path.name

    def _place(self, task: Task, index: int, name: str) -> tuple[Path, bool]:
        """The image saved as `name` plus its extension; True if an existing file was kept."""
        folder, stem = self._options.output, f"{task.task_id}_{index}"
        if name != stem and not self._options.force:
            found = existing_file(folder, name)
            if found is not None:
                return found, True
        saved = self._downloader.download(task.task_id, index, task.images[index])
        if name == stem:
            return saved.path, saved.kept_existing
        target = folder / f"{name}{saved.path.suffix}"
        return target, not move_into_place(saved.path, target, force=self._options.force)

    def _write_metadata(self, run: JobRun, task: Task, index: int, path: Path) -> None:
        """`<name>.json` beside the image: what was asked, what it cost, when."""
        meta = {
            "file": path.name,
            "line": run.job.line,
            "prompt": run.job.request.prompt,
            "fields": run.fields,
            "task_id": task.task_id,
            "index": index,
            "cost": task.cost,
            "created": task.raw.get("created"),
            "completed": task.raw.get("completed"),
            "submitted_at": run.submitted_at,
            "saved_at": time.time(),
        }
        sidecar = path.with_suffix(".json")
        part = sidecar.with_name(f".{sidecar.name}.part")
        try:
            part.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", "utf-8")
            part.replace(sidecar)  # never a half-written sidecar under its name
        finally:
            part.unlink(missing_ok=True)

    # -- recording and reporting ---------------------------------------------------------------

    def _update(self, run: JobRun, state: str, note: str | None = "") -> None:
        """The job moved on: a manifest record, and a progress line (`note`, or the state)."""
        with self._lock:
            run.state = state
            self._manifest.append(run.record())
            self._display.job(run.job.line, run.stage(), state if note == "" else note)

    def _end(
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
        with self._lock:
            run.state = state or run.state
            if error is not None:
                run.error, run.code = error.message, max(run.code, error.exit_code)
                if error.hint:
                    self._hints.setdefault(error.hint)
            if not final:
                return
            run.ended = True
            if record:
                self._manifest.append(run.record())
            self._display.job(run.job.line, run.stage())
        if error is not None and warn:
            console.warn(f"line {run.job.line}: {error.message}")
        if self._options.as_json:
            console.data(json.dumps(run.result(self._options.output), ensure_ascii=False))

    def _finish_rest(self, timed_out: bool) -> None:
        """Jobs still open: unsent (sending stopped), or unfinished when the wait timed out."""
        rest = [run for run in self._runs if not run.ended]
        for run in rest:
            unsent = run.state == "queued"
            if not unsent:
                run.code = max(run.code, ExitCode.TIMEOUT)
            run.error = "not sent" if unsent else "unfinished when the wait timed out"
            self._end(run, warn=False, record=not unsent)
        unfinished = sum(run.state != "queued" for run in rest)
        if timed_out and unfinished:
            console.warn(
                f"Timed out after {self._options.timeout:g} s with {unfinished} job(s) "
                "unfinished. Run the same command again to resume."
            )
        if len(rest) > unfinished:
            console.warn(f"{len(rest) - unfinished} job(s) not sent; run the command again.")
        if self._manifest.failed:
            self._code = max(self._code, ExitCode.FAILED)

    def _summarise(self, elapsed: float) -> None:
        outcomes = [run.outcome() for run in self._runs]
        parts = [f"{outcomes.count(k)} {k}" for k in OUTCOMES if k == "done" or k in outcomes]
        files = sum(len(run.files) for run in self._runs)
        cost = sum(run.cost or 0.0 for run in self._runs)
        console.info(
            f"Batch: {len(self._runs)} job(s): {', '.join(parts)}; {files} file(s); "
            f"cost {cost:.2f}; {elapsed:.1f} s."
        )


def _still_unknown(run: JobRun) -> SubmissionUnknown:
    return SubmissionUnknown(
        f"an earlier submission's outcome is unknown (idempotency key {run.key}); "
        "it is not sent again.",
        _UNKNOWN_HINT,
        idempotency_key=run.key or "",
    )


def _save_failed(run: JobRun, index: int, exc: Exception) -> ApimartError:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
    where = f": {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
    return TaskError(f"Could not save image {index} of task {run.task_id}: {reason}{where}")
