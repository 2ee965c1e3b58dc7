"""`apimart wait`: poll tasks until they end, then download their images."""

import functools
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import typer

from apimart_cli import console
from apimart_cli.commands.common import (
    AppState,
    handles_errors,
    ids_from_stdin,
    open_history,
    state,
    wants_stdin,
)
from apimart_cli.commands.options import (
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    IntervalOpt,
    JsonOpt,
    NoMetadataOpt,
    OpenOpt,
    OutputOpt,
    PreviewOpt,
    TaskIdsArg,
    TimeoutOpt,
)
from apimart_cli.constants import DEFAULT_MAX_IN_FLIGHT
from apimart_cli.errors import ExitCode, UsageError, interrupted_code


def run_wait(
    app: AppState,
    task_ids: Iterable[str],
    *,
    stream: Iterable[str] | None = None,
    output: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    interval: float = DEFAULT_INTERVAL,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    as_json: bool = False,
    download: bool = True,
    force: bool = False,
    once: bool = False,
    metadata: bool | None = None,
    preview: bool | None = None,
    open_saved: bool = False,
) -> ExitCode:
    """Wait for the tasks (and those on `stream`) and download them; the exit code.

    `metadata` (the provenance chunk in saved PNGs) and `preview` (each image
    drawn on the terminal as it is saved) are the command's flags, None where
    not given: the settings decide. `open_saved`: the images opened at the end.
    """
    from apimart_cli import __version__
    from apimart_cli.downloads import Downloader
    from apimart_cli.preview import previewer
    from apimart_cli.progress import make_reporter
    from apimart_cli.provenance import Stamper
    from apimart_cli.waiting import TaskWaiter, WaitOptions, resume_hint

    settings = app.settings(output, metadata=metadata, preview=preview)
    client = app.client(settings)
    client.deadline = time.monotonic() + timeout  # retries never outlast --timeout
    downloader = None
    stamped = settings.metadata and download
    stamper = Stamper(__version__, redact=console.redact) if stamped else None
    if download:
        downloader = Downloader(client, settings.output_dir, force=force, on_retry=console.info)
        downloader.prepare()
    shows = previewer(
        settings.preview and download and not console.is_quiet(),
        is_terminal=console.is_terminal(sys.stderr),
        note=console.debug,
    )
    history = open_history(required=False)
    options = WaitOptions(
        timeout=timeout,
        interval=interval,
        max_in_flight=max_in_flight,
        as_json=as_json,
        once=once,
    )
    waiter = TaskWaiter(
        client, downloader, options, make_reporter(), history, stamper=stamper, previewer=shows
    )
    resume: Callable[[list[str]], str] | None = functools.partial(
        resume_hint,
        output=output,
        base_url=app.base_url,
        download=download,
        as_json=as_json,
    )
    if app.sandbox:  # its tasks end with this command: there is nothing to resume
        resume = None
    try:
        summary = waiter.run(task_ids, stream=stream)
    except KeyboardInterrupt as interrupt:
        code = interrupted_code(interrupt)
        how = "Terminated" if code == ExitCode.TERMINATED else "Interrupted"
        _report_unfinished(how, waiter.unfinished(), resume)
        return code
    finally:
        client.close()
        if history is not None:
            history.close()
    if stream is not None and summary.task_count == 0:
        raise UsageError(
            "No task ids on standard input.",
            "Pipe in task ids, one per line (as `apimart generate` prints them).",
        )
    console.info(summary.line(downloaded=download))
    if summary.timed_out:
        _report_unfinished(f"Timed out after {timeout:g} s", summary.unfinished, resume)
    if open_saved:
        from apimart_cli.opening import open_files

        saved = [Path(path) for paths in summary.files.values() for path in paths]
        open_files(saved, note=console.warn)
    return summary.exit_code


def _report_unfinished(
    reason: str, task_ids: list[str], resume: Callable[[list[str]], str] | None
) -> None:
    if not task_ids:
        console.warn(f"{reason}.")
        return
    console.warn(f"{reason}; {len(task_ids)} task(s) unfinished: {' '.join(task_ids)}")
    if resume is None:
        console.warn("They ended with the sandbox; there is nothing to resume.")
    else:
        console.warn(f"Resume with: {resume(task_ids)}")


@handles_errors
def wait(
    ctx: typer.Context,
    task_ids: TaskIdsArg = None,
    output: OutputOpt = None,
    timeout: TimeoutOpt = DEFAULT_TIMEOUT,
    interval: IntervalOpt = DEFAULT_INTERVAL,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", min=1, help="Most status requests at once.")
    ] = DEFAULT_MAX_IN_FLIGHT,
    no_download: Annotated[
        bool, typer.Option("--no-download", help="Only wait; print the completed task ids.")
    ] = False,
    as_json: JsonOpt = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing images.")] = False,
    pending: Annotated[
        bool,
        typer.Option("--pending", help="Also wait for every unfinished task in the history."),
    ] = False,
    open_saved: OpenOpt = False,
    preview: PreviewOpt = False,
    no_metadata: NoMetadataOpt = False,
) -> None:
    """Wait for tasks to finish and save their images.

    Prints each saved path.
    Polls every task at once. Ids piped in are polled as each line arrives,
    so wait works at the end of a pipeline:

        apimart generate "a red fox" | apimart wait -o out/
    """
    from apimart_cli.models import validate_task_id

    app = state(ctx)
    ids = [] if wants_stdin(task_ids) else [validate_task_id(i) for i in task_ids or ()]
    if pending:
        settings = app.settings(output)
        with open_history() as history:
            ids = list(dict.fromkeys([*history.pending_ids(settings.base_url), *ids]))
            unknown = [
                record.idempotency_key
                for record in history.list(pending_only=True, base_url=settings.base_url)
                if record.task_id is None
            ]
        if unknown:  # no id to wait for: only the dashboard knows whether a task was made
            keys = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if unknown[5:] else "")
            console.warn(
                f"{len(unknown)} submission(s) may have created a task whose id never came "
                f"back (idempotency key {keys}): check your APIMart dashboard before "
                "submitting them again; `apimart history --pending` lists them."
            )
    stream = None
    if wants_stdin(task_ids) and not (pending and not task_ids):
        if console.is_terminal(sys.stdin):
            raise UsageError(
                "No task ids given.",
                "Pass them as arguments, pipe them in, or use --pending.",
            )
        stream = ids_from_stdin()
    if pending and not ids and stream is None:
        console.info("No unfinished tasks in the history.")
        return
    code = run_wait(
        app,
        ids,
        stream=stream,
        output=output,
        timeout=timeout,
        interval=interval,
        max_in_flight=max_in_flight,
        as_json=as_json,
        download=not no_download,
        force=force,
        metadata=False if no_metadata else None,
        preview=True if preview else None,
        open_saved=open_saved,
    )
    raise typer.Exit(int(code))
