"""The use-cases the command line, batch and the MCP server share.

Each takes plain inputs, the settings in effect and a `Ui` (where its words go),
and returns what it came to; none prints or knows the terminal. The commands
(`commands/*.py`) and the MCP server are adapters: they parse, call one of these,
and render the result their own way.

A use-case that talks to the service makes its own client (`make_client`) and
closes it: once the work has ended with nothing on its way, never after a
timeout or Ctrl-C, when requests may still be in flight on abandoned threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, overload

from apimart_cli.errors import ApimartError, ExitCode

if TYPE_CHECKING:
    from apimart_cli.batch import BatchEnding
    from apimart_cli.batch.jobs import Job
    from apimart_cli.batch.run import BatchOptions
    from apimart_cli.batch.tracker import BatchDisplay
    from apimart_cli.client import Client
    from apimart_cli.deadline import Deadline
    from apimart_cli.downloads import Downloader
    from apimart_cli.engine import Outcome, Reporter, SaveHooks, WaitPlan
    from apimart_cli.history import History, TaskRecord
    from apimart_cli.payload import GenerationRequest
    from apimart_cli.preview import Previewer
    from apimart_cli.settings import Settings
    from apimart_cli.submission import Resent
    from apimart_cli.tasks import Task

    class WaitReporter(Reporter, Protocol):
        """The engine's reporter, which can also draw an inline preview (or ignore it)."""

        def image(self, escape: str) -> None: ...


Say = Callable[[str], None]


class Ui(NamedTuple):
    """Where a use-case's words go, handed in by its caller: `info` and `warn` (standard
    error for the command line), `debug` (each request, under --verbose; None: not
    wanted), and the secret registry: `hide` a value no line may show, `redact` a line."""

    info: Say
    warn: Say
    hide: Say
    redact: Callable[[str], str]
    debug: Say | None = None


class ImageReporter(Protocol):
    """A reporter that can draw an inline preview (the terminal's)."""

    def image(self, escape: str) -> None: ...


def make_client(
    settings: Settings,
    deadline: Deadline,
    ui: Ui,
    *,
    on_rate_limited: Callable[[float | None], None] | None = None,
) -> Client:
    """The API client, its key required and hidden from every line; nothing it does
    outlasts `deadline`. Retries are told to `ui.info`, requests to `ui.debug`;
    `on_rate_limited` hears each 429 (with its Retry-After), for batch's pacing."""
    from apimart_cli.client import Client

    key = settings.require_key()
    ui.hide(key)
    return Client(
        settings.base_url,
        key,
        deadline=deadline,
        log=ui.debug,
        on_retry=ui.info,
        on_rate_limited=on_rate_limited,
        base_url_source=settings.source("base_url"),
    )


# -- the history -----------------------------------------------------------------------------


@overload
def open_history(ui: Ui, *, deadline: Deadline | None = None) -> History: ...
@overload
def open_history(ui: Ui, *, required: bool, deadline: Deadline | None = None) -> History | None: ...
def open_history(
    ui: Ui, *, required: bool = True, deadline: Deadline | None = None
) -> History | None:
    """The task history, which waits for another process's lock no longer than `deadline`.
    Where it only mirrors the server (`status`, `wait`), a broken history is a warning,
    not a failure: `required=False` then gives None, or a history whose first failed
    update is a warning and the last."""
    from apimart_cli.history import History

    def warn(error: ApimartError) -> None:
        ui.warn(f"Warning: {error.message} The task history was not updated.")

    try:
        return History.open(deadline=deadline, on_failure=None if required else warn)
    except ApimartError as error:
        if required:
            raise
        warn(error)
        return None


@contextmanager
def optional_history(ui: Ui, deadline: Deadline | None = None) -> Iterator[History | None]:
    """The history where it only mirrors the server: None (said once) if it is broken."""
    history = open_history(ui, required=False, deadline=deadline)
    try:
        yield history
    finally:
        if history is not None:
            history.close()


# -- saving images ---------------------------------------------------------------------------


def save_hooks(
    *,
    stamp: bool,
    redact: Callable[[str], str],
    previewer: Previewer | None = None,
    reporter: ImageReporter | None = None,
) -> SaveHooks:
    """The steps around each saved image that the settings ask for: the provenance
    chunk in each PNG (`stamp`), and an inline preview handed to `reporter` (where
    the caller's display can show one: `previewer`)."""
    from apimart_cli.engine import SaveHooks

    stamper = None
    if stamp:
        from apimart_cli import __version__
        from apimart_cli.provenance import Stamper

        stamper = Stamper(__version__, redact=redact)
    shows = previewer if reporter is not None else None

    def show(path: Path, task: Task, index: int) -> None:
        assert shows is not None and reporter is not None
        escape = shows.escape(path)
        if escape is not None:
            reporter.image(escape)

    return SaveHooks(
        completed=None if stamper is None else stamper.prepare,
        stamp=None if stamper is None else stamper.chunk,  # put in as the bytes stream past
        after_save=None if shows is None else show,
    )


# -- submitting and waiting ------------------------------------------------------------------


class Waiting(NamedTuple):
    """How a wait goes, beyond its plan: what makes the engine's reporter (made when
    the wait starts, as it may take over the screen), whether the images are stamped
    (`stamp`), and the preview the caller's display can draw."""

    plan: WaitPlan
    reporter: Callable[[], WaitReporter]
    stamp: bool = True
    previewer: Previewer | None = None


class Generated:
    """A submission: its task ids, and how the wait went (None: not waited for)."""

    def __init__(self, task_ids: list[str], outcome: Outcome | None = None) -> None:
        self.task_ids = task_ids
        self.outcome = outcome


def generate(
    request: GenerationRequest,
    settings: Settings,
    ui: Ui,
    *,
    deadline: Deadline,
    waiting: Waiting | None = None,
    on_submitted: Callable[[list[str]], None] = lambda task_ids: None,
) -> Generated:
    """Submit one request, and with `waiting` wait for its tasks and save their images.

    Before anything is paid for: the history checked, another model's schema, the
    references sent as `settings.references` says, and with `waiting` the output
    folder. Each id is in the history before `on_submitted` hears it.
    """
    import uuid

    from apimart_cli.references import ReferenceSender
    from apimart_cli.submission import interrupted_outside

    client = make_client(settings, deadline, ui)
    try:
        downloader = _prepared(client, waiting.plan) if waiting else None
        sender = ReferenceSender(client, settings.references, info=ui.info, warn=ui.warn)
        history = open_history(ui, deadline=deadline)
    except BaseException:
        client.close()
        raise
    key = str(uuid.uuid4())  # known here, so that a signal on the way back finds its record
    with history:
        try:
            sender.check([("", request)])
            task_ids = sender.submit(history, request, idempotency_key=key)
        except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM outside the request
            client.close()
            raise interrupted_outside(history, key, interrupt) from None
        except BaseException:
            client.close()
            raise
        on_submitted(task_ids)
        if waiting is None:
            client.close()
            return Generated(task_ids)
        outcome = _wait(client, waiting, ui, task_ids, None, history, downloader)
    return Generated(task_ids, outcome)


def wait(
    settings: Settings,
    ui: Ui,
    waiting: Waiting,
    *,
    task_ids: Sequence[str] = (),
    stream: Iterable[str] | None = None,
) -> Outcome:
    """`wait` and `download`: the tasks waited for (or polled once, `plan.once`), their
    images saved into `plan.folder` (None: only waited for), the history kept."""
    client = make_client(settings, waiting.plan.deadline, ui)
    with optional_history(ui, waiting.plan.deadline) as history:
        return _wait(client, waiting, ui, task_ids, stream, history, None)


def _prepared(client: Client, plan: WaitPlan) -> Downloader | None:
    """The downloader for `plan.folder`, the folder checked (None: nothing to save):
    a folder that cannot hold the images is found before paying for them."""
    if plan.folder is None:
        return None
    from apimart_cli.downloads import Downloader

    downloader = Downloader(client, plan.folder, force=plan.force)
    downloader.prepare()
    return downloader


def _wait(
    client: Client,
    waiting: Waiting,
    ui: Ui,
    task_ids: Iterable[str],
    stream: Iterable[str] | None,
    history: History | None,
    downloader: Downloader | None,
) -> Outcome:
    """The engine's wait; `client` closed by it once nothing is on its way."""
    from apimart_cli.engine import wait_for_tasks

    saving = waiting.plan.folder is not None
    reporter = waiting.reporter()
    hooks = save_hooks(
        stamp=waiting.stamp and saving,
        redact=ui.redact,
        previewer=waiting.previewer if saving else None,
        reporter=reporter,
    )
    return wait_for_tasks(
        client,
        waiting.plan,
        reporter,
        task_ids=task_ids,
        stream=stream,
        history=history,
        hooks=hooks,
        downloader=downloader,
    )


def pending_ids(
    settings: Settings,
    ui: Ui,
    task_ids: Sequence[str] = (),
    *,
    deadline: Deadline | None = None,
) -> list[str]:
    """`wait --pending`: every unfinished task in the history for this base URL, then
    `task_ids`; a submission whose id never came back is warned of, not waited for."""
    with open_history(ui, deadline=deadline) as history:
        ids = list(dict.fromkeys([*history.pending_ids(settings.base_url), *task_ids]))
        unknown = [
            record.idempotency_key
            for record in history.list(pending_only=True, base_url=settings.base_url)
            if record.task_id is None
        ]
    if unknown:  # no id to wait for: resending the key gets it
        keys = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if unknown[5:] else "")
        ui.warn(
            f"{len(unknown)} submission(s) may have created a task whose id never came "
            f"back (idempotency key {keys}): `apimart resend KEY` (or `apimart resend` "
            "for all) sends each again with its key, and the service answers with its "
            "task or makes it once."
        )
    return ids


def batch(
    jobs: Sequence[Job],
    settings: Settings,
    ui: Ui,
    options: BatchOptions,
    *,
    concurrency: int,
    display: BatchDisplay,
    deadline: Deadline | None = None,
) -> BatchEnding:
    """Every job not done yet sent, waited for and saved, at most `concurrency` in
    flight (fewer while the service answers 429); how the run ended.
    The run is bounded by `deadline` (by default `options.timeout` from now), the uploads
    before it included."""
    from apimart_cli.batch import AimdLimiter, run_batch
    from apimart_cli.deadline import Deadline
    from apimart_cli.gallery import Keeper
    from apimart_cli.references import ReferenceSender

    limiter = AimdLimiter(concurrency)
    deadline = deadline or Deadline.after(options.timeout)
    client = make_client(settings, deadline, ui, on_rate_limited=limiter.rate_limited)
    sender = ReferenceSender(
        client, settings.references, concurrency=concurrency, info=ui.info, warn=ui.warn
    )
    # Every job checked against its model's schema: a bad one exits 2, naming its line,
    # before anything is sent.
    sender.check([(f"line {job.line}: ", job.request) for job in jobs])
    gallery = Keeper(settings.output_dir, warn=ui.warn, redact=ui.redact)
    hooks = save_hooks(stamp=settings.metadata, redact=ui.redact)
    # run_batch closes the client only when nothing is on its way: after a timeout or a
    # second Ctrl-C, closing it would fail the submissions still in flight.
    return run_batch(
        jobs,
        client,
        limiter,
        options,
        lambda: open_history(ui, deadline=deadline),  # no lock outwaits --timeout
        sender,
        hooks=hooks,
        gallery=gallery,
        display=display,
    )


# -- asking ----------------------------------------------------------------------------------


class Statuses:
    """`status`: each task's state or the error in its way, in the order asked."""

    def __init__(self, task_ids: list[str], answers: list[Task | ApimartError]) -> None:
        self.task_ids = task_ids
        self.answers = answers
        self.exit_code = ExitCode.OK
        self.hints: list[str] = []  # what to do, each once

    # Worked out once: after a deadline a hundred thousand answers are gone through, and
    # every pass over them is time past the --timeout.
    @cached_property
    def tasks(self) -> list[Task]:
        return [answer for answer in self.answers if not isinstance(answer, ApimartError)]

    @cached_property
    def errors(self) -> list[tuple[str, ApimartError]]:
        pairs = zip(self.task_ids, self.answers, strict=True)
        return [(task_id, answer) for task_id, answer in pairs if isinstance(answer, ApimartError)]

    def worst(self) -> ApimartError | None:
        """The worst of the errors, naming every task one hit (None: no error)."""
        errors = self.errors
        if not errors:
            return None
        worst = max((error for _, error in errors), key=lambda error: error.exit_code)
        return ApimartError(
            f"{len(errors)} of {len(self.task_ids)} queries failed: {worst.message}",
            worst.hint,
            exit_code=worst.exit_code,
            task_ids=[task_id for task_id, _ in errors],
        )


def status(settings: Settings, ui: Ui, task_ids: Sequence[str], *, deadline: Deadline) -> Statuses:
    """Each task asked once, at once, and recorded in the history."""
    from apimart_cli.queries import query_tasks

    client = make_client(settings, deadline, ui)
    with optional_history(ui, deadline) as history:
        answers = query_tasks(client, task_ids, history=history)
    result = Statuses(list(task_ids), answers)
    for _, error in result.errors:
        result.exit_code = max(result.exit_code, error.exit_code)
        if error.hint and error.hint not in result.hints:
            result.hints.append(error.hint)
    if result.exit_code != ExitCode.TIMEOUT:
        client.close()  # after a timeout, requests may still be on their way: left alone
    return result


def upload(
    settings: Settings, ui: Ui, paths: Sequence[str], *, deadline: Deadline
) -> Iterator[dict[str, Any]]:
    """Each file's upload (its URL and expiry) as it is done; every file is checked
    before any is sent, and a file uploaded before whose URL still lives is not sent."""
    from apimart_cli.references import check_upload_files, upload_files

    references = check_upload_files(paths)

    def uploads() -> Iterator[dict[str, Any]]:
        with make_client(settings, deadline, ui) as client:
            yield from upload_files(client, references, warn=ui.warn)

    return uploads()


def models(
    settings: Settings, ui: Ui, *, deadline: Deadline, kind: str | None = None
) -> list[dict[str, Any]]:
    """The service's models; with `kind` ("image" or "video"), those that make it."""
    from apimart_cli.cache import remember_models
    from apimart_cli.schema import models_of_kind

    with make_client(settings, deadline, ui) as client:
        listed = list(client.list_models())
        if kind is None:  # the whole list, for the shell completions of --model
            remember_models([str(item["id"]) for item in listed])
        else:
            listed = models_of_kind(client, listed, kind, warn=ui.warn)
        return [dict(item) for item in listed]


def model_schema(settings: Settings, ui: Ui, model: str, *, deadline: Deadline) -> dict[str, Any]:
    """One model's input schema (from the cache while it is fresh)."""
    from apimart_cli.schema import model_info

    with make_client(settings, deadline, ui) as client:
        return dict(model_info(client, model, warn=ui.warn))


def resend(
    settings: Settings, ui: Ui, keys: Sequence[str] = (), *, deadline: Deadline
) -> Iterator[Resent]:
    """Each unknown submission to this base URL (with `keys`, those keys') sent again
    with its key and its bound body, as it is answered (`submission.resend`). A bad
    key is a UsageError before anything is sent."""
    from apimart_cli.submission import check_keys
    from apimart_cli.submission import resend as resend_keys

    wanted = check_keys(keys)
    client = make_client(settings, deadline, ui)
    try:
        with open_history(ui, deadline=deadline) as history:
            yield from resend_keys(client, history, wanted)
    finally:
        if not deadline.expired():  # after a timeout a request may still be on its way
            client.close()


def model_docs(settings: Settings, ui: Ui, model: str, *, deadline: Deadline) -> dict[str, Any]:
    """One model's documentation (from the cache for as long as the service said)."""
    from apimart_cli.schema import model_docs

    with make_client(settings, deadline, ui) as client:
        return dict(model_docs(client, model, warn=ui.warn))


def balance(
    settings: Settings, ui: Ui, *, deadline: Deadline, account: bool = False
) -> dict[str, Any]:
    """The key's (or the whole account's) balance, as the service reports it."""
    client = make_client(settings, deadline, ui)
    reply = client.balance(account=account)
    client.close()  # only now: after a timeout, the request may still be on its way
    return dict(reply)


# -- the history -----------------------------------------------------------------------------


def history_records(
    ui: Ui,
    *,
    pending: bool = False,
    limit: int | None = None,
    since: float | None = None,
    search: str | None = None,
    states: Sequence[str] = (),
    base_url: str | None = None,
) -> list[TaskRecord]:
    """The tasks submitted from here, newest first, as the filters say (with `base_url`,
    only those sent there: with `pending`, what `wait --pending` picks up)."""
    with open_history(ui) as history:
        return list(
            history.list(
                pending_only=pending,
                limit=limit,
                since=since,
                search=search,
                states=list(states),
                base_url=base_url,
            )
        )


def pending_counts(
    ui: Ui,
    *,
    since: float | None = None,
    search: str | None = None,
    states: Sequence[str] = (),
) -> dict[str, int]:
    """How many tasks `wait --pending` would pick up, by the base URL each went to."""
    with open_history(ui) as history:
        return history.pending_counts(since=since, search=search, states=states)


def gallery(folder: Path, ui: Ui) -> tuple[Path, int]:
    """`index.html` written in `folder` from its batch manifest, the history (read with
    a bound) and the images' own provenance; its path and how many images it shows."""
    from apimart_cli.batch.manifest import Manifest
    from apimart_cli.gallery import build

    manifest = list(Manifest(folder).read()) if folder.is_dir() else []
    with optional_history(ui) as history:
        return build(folder, history, manifest, redact=ui.redact)


def forget_sandbox(ui: Ui) -> int:
    """Forget the tasks sent to a sandbox; how many."""
    with open_history(ui) as history:
        return history.forget_sandbox()
