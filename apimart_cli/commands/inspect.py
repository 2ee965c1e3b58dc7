"""`apimart inspect`: the provenance saved inside images."""

from pathlib import Path
from typing import Annotated

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors
from apimart_cli.commands.options import JsonOpt
from apimart_cli.errors import ApimartError, ExitCode, printable


@handles_errors
def inspect(
    images: Annotated[list[Path], typer.Argument(help="PNG files saved by apimart.")],
    as_json: JsonOpt = False,
) -> None:
    """Show what made each image: its prompt, fields, task, times and cost.

    Read from the `apimart` iTXt chunk saved in every PNG (unless --no-metadata).
    An image without it exits 1.

    \b
        apimart inspect out/task_01K..._0.png
    """
    from apimart_cli.provenance import inspect as read_provenance
    from apimart_cli.provenance import readable

    code, shown = ExitCode.OK, 0
    errors: list[ApimartError] = []
    for path in images:
        try:
            stored = read_provenance(path)
        except ApimartError as error:
            console.report_error(error)
            code = max(code, error.exit_code)
            errors.append(error)
            continue
        if as_json:
            console.data(_json_line(stored))
            continue
        if shown:
            console.data("")
        shown += 1
        console.data(printable(str(path)))
        lines = readable(stored)
        width = max((len(label) for label, _ in lines), default=0)
        for label, text in lines:
            console.data(f"  {label.ljust(width)}  {text}")
    if as_json and errors:  # one error object for the run, as every command prints
        whole = errors[0] if len(errors) == 1 else None
        console.error_json(
            whole
            or ApimartError(
                f"{len(errors)} of {len(images)} images could not be read.",
                exit_code=code,
            )
        )
    raise typer.Exit(int(code))


def _json_line(stored: dict[str, object]) -> str:
    """The object on one line, with the control characters JSON leaves as they are (DEL and
    C1, which a terminal may obey) escaped too: still the same JSON."""
    import json
    import re

    from apimart_cli.secrets import redact_data

    text = json.dumps(redact_data(stored), ensure_ascii=False)
    return re.sub("[\x7f-\x9f]", lambda found: f"\\u{ord(found[0]):04x}", text)
