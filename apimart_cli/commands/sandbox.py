"""`apimart sandbox`: a local stand-in for the API, for trying the tool and for tests."""

import sys
from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors
from apimart_cli.commands.options import a_finite_number
from apimart_cli.errors import UsageError

# The largest video `--video-bytes` makes: each is built whole in memory.
VIDEO_BYTES_MOST = 1 << 30


@handles_errors
def sandbox(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port (0: any free one).")
    ] = 8787,
    duration: Annotated[
        str,
        typer.Option(
            "--duration",
            help="Seconds from submission to completion: 3, or a range such as 20-30.",
        ),
    ] = "3",
    estimate_factor: Annotated[
        float,
        typer.Option(
            "--estimate-factor",
            callback=a_finite_number,
            min=0.01,
            help="estimated_time is the duration times this (2: twice too long, like the API).",
        ),
    ] = 2.0,
    no_estimate: Annotated[
        bool, typer.Option("--no-estimate", help="Leave estimated_time out of task replies.")
    ] = False,
    latency: Annotated[
        float,
        typer.Option(
            "--latency", callback=a_finite_number, min=0.0, help="Seconds added to every API reply."
        ),
    ] = 0.0,
    download_rate: Annotated[
        Optional[float],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Option(
            "--download-rate",
            callback=a_finite_number,
            min=1.0,
            help="Bytes per second per image download.",
        ),
    ] = None,
    submit_rate: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--submit-rate",
            callback=a_finite_number,
            min=0.1,
            help="Submissions per second before 429.",
        ),
    ] = None,
    poll_rate: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            "--poll-rate",
            callback=a_finite_number,
            min=0.1,
            help="Status requests per second before 429.",
        ),
    ] = None,
    failure_rate: Annotated[
        float,
        typer.Option(
            "--failure-rate",
            callback=a_finite_number,
            min=0.0,
            max=1.0,
            help="Share of tasks that fail.",
        ),
    ] = 0.0,
    fail_word: Annotated[
        str, typer.Option("--fail-word", help="A prompt containing this fails.")
    ] = "sandbox:fail",
    noise: Annotated[
        bool, typer.Option("--noise", help="Incompressible images (for benchmarks).")
    ] = False,
    video_bytes: Annotated[
        Optional[int],  # noqa: UP045
        typer.Option(
            "--video-bytes",
            min=64,
            max=VIDEO_BYTES_MOST,
            help="Each video's size in bytes, its frames padded (made in memory, at most 1 GiB).",
        ),
    ] = None,
    refuse_base64: Annotated[
        bool,
        typer.Option("--refuse-base64", help="Refuse data: URI references (400) as newer APIs do."),
    ] = False,
    state_synonyms: Annotated[
        bool,
        typer.Option(
            "--state-synonyms", help="States as relays spell them, upper case (SUCCEEDED...)."
        ),
    ] = False,
    iso_times: Annotated[
        bool, typer.Option("--iso-times", help="Times in task replies as ISO 8601 text.")
    ] = False,
    sync_results: Annotated[
        bool,
        typer.Option("--sync-results", help="Answer submissions with the finished result."),
    ] = False,
    strict_idempotency: Annotated[
        bool,
        typer.Option(
            "--strict-idempotency",
            help="Idempotency keys as the IETF draft has them: 409 while in flight, 422 "
            "for another body.",
        ),
    ] = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed for durations drawn from a range, and failures.")
    ] = 0,
) -> None:
    """Run a local stand-in for the API: no key, no network, real PNGs.

    Prints its base URL; point any command at it (any key will do):

    \b
        apimart sandbox --port 8787 &
        APIMART_API_KEY=any apimart --base-url http://127.0.0.1:8787 generate "a fox" --wait
    """
    from apimart_cli.sandbox import Sandbox, SandboxConfig, parse_duration
    from apimart_cli.settings import is_loopback

    try:
        task_duration = parse_duration(duration)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not is_loopback(host):
        console.warn(f"Warning: listening on {host}, which other machines may reach.")
    config = SandboxConfig(
        duration=task_duration,
        estimate_factor=None if no_estimate else estimate_factor,
        latency=latency,
        download_rate=download_rate,
        submit_rate=submit_rate,
        poll_rate=poll_rate,
        failure_rate=failure_rate,
        fail_word=fail_word,
        noise=noise,
        video_bytes=video_bytes,
        refuse_base64=refuse_base64,
        state_synonyms=state_synonyms,
        iso_times=iso_times,
        sync_results=sync_results,
        strict_idempotency=strict_idempotency,
        seed=seed,
    )
    server = Sandbox(config, host=host, port=port, log=None if console.is_quiet() else sys.stderr)
    try:
        server.start()
    except OSError as exc:
        raise UsageError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}",
            "Choose another port with --port (0 picks a free one).",
        ) from None
    console.data(server.base_url)
    server.serve_forever()
