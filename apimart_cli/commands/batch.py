"""`apimart batch`: many generations from a file, resumable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state, stdin_lines
from apimart_cli.commands.options import (
    DEFAULT_INTERVAL,
    ForceOpt,
    IntervalOpt,
    JsonOpt,
    NoMetadataOpt,
    OutputOpt,
    RefsOpt,
    TimeoutOpt,
)
from apimart_cli.constants import (
    DEFAULT_BATCH_NAME,
    DEFAULT_BATCH_TIMEOUT,
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
)
from apimart_cli.errors import ApimartError, ExitCode, UsageError


@handles_errors
def batch(
    ctx: typer.Context,
    file: Annotated[
        Optional[Path],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(
            help="One job per line: a prompt, or a JSON object; '-' (or a pipe) reads stdin.",
            show_default=False,
        ),
    ] = None,
    output: OutputOpt = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            min=1,
            max=MAX_CONCURRENCY,
            help="Most submissions in flight; fewer while the service answers 429.",
        ),
    ] = DEFAULT_CONCURRENCY,
    name: Annotated[
        str,
        typer.Option(
            "--name",
            help="File names from {task_id}, {index}, {line} and {slug}; the extension is added.",
        ),
    ] = DEFAULT_BATCH_NAME,
    metadata: Annotated[
        bool, typer.Option("--metadata", help="Write <name>.json beside each image.")
    ] = False,
    timeout: TimeoutOpt = DEFAULT_BATCH_TIMEOUT,
    interval: IntervalOpt = DEFAULT_INTERVAL,
    force: ForceOpt = False,
    refs: RefsOpt = None,
    as_json: JsonOpt = False,
    open_page: Annotated[
        bool, typer.Option("--open", help="Open the gallery page (index.html) at the end.")
    ] = False,
    no_metadata: NoMetadataOpt = False,
) -> None:
    """Run many generations from a file of jobs; print each saved path.

    A plain line is a prompt; a line starting with '{' is a JSON object with
    "prompt" and any of "size", "resolution", "n", "images",
    "official_fallback", "force_size", "model" and "params" (extra fields). Blank lines and
    '#' comments are skipped. Every line is checked before anything is sent.
    batch-manifest.jsonl in the output folder records each job, so running the
    same command again resumes: nothing is submitted twice. index.html there
    shows the images with their prompts.

    \b
        apimart batch prompts.txt -o out/ --name '{line}-{slug}-{index}'
    """
    # Imported here, not at the top: every command's start-up pays for the top.
    from apimart_cli import app as use_cases
    from apimart_cli.batch import BatchOptions, load_batch
    from apimart_cli.deadline import Deadline
    from apimart_cli.progress import make_batch_display

    app = state(ctx)
    if file is None and console.is_terminal(sys.stdin):
        raise UsageError("No batch file given.", "apimart batch jobs.txt, or pipe the jobs in.")
    deadline = Deadline.after(timeout)  # reading the jobs and the uploads share --timeout
    jobs = load_batch(
        file, name, info=console.info, stdin=lambda: stdin_lines(deadline, whole=True)
    )
    settings = app.settings(output, references=refs, metadata=False if no_metadata else None)
    options = BatchOptions(
        output=settings.output_dir,
        name=name,
        timeout=timeout,
        interval=interval,
        force=force,
        metadata=metadata,
        as_json=as_json,
    )
    code, left = use_cases.batch(
        jobs,
        settings,
        app.ui(),
        options,
        concurrency=concurrency,
        display=make_batch_display(job.line for job in jobs),
        deadline=deadline,
    )
    if as_json and code != ExitCode.OK:  # each job's own error is in its object on stdout
        ended = ApimartError(
            f"The batch ended with exit code {int(code)}.",
            "Each job's object on standard output says how it ended; "
            "run the same command again to resume.",
            exit_code=code,
            task_ids=left,
        )
        console.error_json(ended)
    if open_page:
        from apimart_cli.gallery import PAGE_NAME
        from apimart_cli.opening import open_files

        page = settings.output_dir / PAGE_NAME
        if page.exists():
            open_files([page], note=console.warn)
    raise typer.Exit(int(code))
