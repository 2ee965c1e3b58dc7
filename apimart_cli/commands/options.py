"""Option and argument types shared by several commands."""

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from apimart_cli.constants import (
    DEFAULT_COMMAND_TIMEOUT,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_WAIT_TIMEOUT,
)

# Typer reads these annotations at run time, so they keep the typing.Optional spelling.
TaskIdsArg = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Argument(
        help="Task ids; with none, or '-', they are read from standard input, one per line.",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Optional[Path],  # noqa: UP045
    typer.Option(
        "--output",
        "-o",
        help="Folder for images (created if missing). [default: $APIMART_OUTPUT_DIR, "
        "the config's output_dir, or the current folder]",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON, one object per line.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite images that already exist.")]
# The most seconds a --timeout or --interval takes: 30 days. A longer one is a slip of
# the keyboard, and one past the platform's limit for a wait (`inf`, `1e308`) would end
# the command in an OverflowError, after its first requests, rather than here.
MAX_SECONDS = 30 * 24 * 3600.0


def a_number(value: float | None) -> float | None:
    """A callback for a float option: refuse `nan`, which passes any min and max."""
    if value is not None and math.isnan(value):
        raise typer.BadParameter(f"{value} is not a number of seconds.")
    return value


def a_finite_number(value: float | None) -> float | None:
    """A callback for a float option that is no time: refuse `nan` and `inf`."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number.")
    return value


TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0.0,
        max=MAX_SECONDS,
        callback=a_number,
        help="Seconds for the whole command; then it stops and exits 124.",
    ),
]
IntervalOpt = Annotated[
    float,
    typer.Option(
        "--interval",
        min=0.1,
        max=MAX_SECONDS,
        callback=a_number,
        help="Seconds between the first polls; later ones back off.",
    ),
]

COMMAND_TIMEOUT = DEFAULT_COMMAND_TIMEOUT
WAIT_TIMEOUT = DEFAULT_WAIT_TIMEOUT
DEFAULT_INTERVAL = DEFAULT_POLL_INTERVAL
OpenOpt = Annotated[
    bool, typer.Option("--open", help="Open each saved image in the desktop's viewer ($BROWSER).")
]
PreviewOpt = Annotated[
    bool,
    typer.Option(
        "--preview",
        help="Show each image as it is saved, on a kitty or iTerm2 terminal. [$APIMART_PREVIEW]",
    ),
]
NoMetadataOpt = Annotated[
    bool,
    typer.Option(
        "--no-metadata",
        help="Save images exactly as served, without the provenance chunk. [$APIMART_METADATA]",
    ),
]

RefsOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--refs",
        help="How local reference files travel: auto (inline until the service refuses "
        "base64, then upload), inline (base64 in the body) or upload (each file uploaded "
        "once, sent as a URL). [default: $APIMART_REFERENCES, the config's references, "
        "or auto]",
        show_default=False,
    ),
]
ParamOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    typer.Option(
        "--param",
        help="An extra body field KEY=VALUE (VALUE read as JSON where it parses); repeatable.",
        show_default=False,
    ),
]
