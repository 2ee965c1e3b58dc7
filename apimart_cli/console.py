"""Standard output for data, standard error for everything else.

Every line the user sees passes through here: `data` for what a pipeline reads
(ids, paths, JSON), the rest for people. Writes are locked so that lines from
worker threads never interleave.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TextIO

from apimart_cli.errors import ApimartError

_lock = threading.Lock()
_quiet = False
_verbose = False
_secrets: frozenset[str] = frozenset()
HIDDEN = "[API key]"
# A shorter "key" (`any`, the sandbox's `sandbox`) is no secret, and cutting it
# out of every line would mangle ordinary words.
MIN_SECRET_CHARS = 8


def configure(*, quiet: bool = False, verbose: bool = False) -> None:
    global _quiet, _verbose, _secrets
    _quiet, _verbose, _secrets = quiet, verbose, frozenset()


def hide(secret: str) -> None:
    """Never print `secret`: a server may echo the key back in any message or result."""
    global _secrets
    if len(secret) >= MIN_SECRET_CHARS:
        _secrets |= {secret}


def redact(text: str) -> str:
    """`text` with every hidden secret cut out."""
    for secret in _secrets:
        text = text.replace(secret, HIDDEN)
    return text


def is_quiet() -> bool:
    return _quiet


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_color(stream: TextIO) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    return (
        is_terminal(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    )


_stdout_closed = False


def stdout_closed() -> bool:
    """Whether the reader of standard output went away (`apimart ... | head -1`)."""
    return _stdout_closed


def _write(stream: TextIO, text: str) -> None:
    global _stdout_closed
    text = redact(text)
    with _lock:
        if stream is sys.stdout and _stdout_closed:
            return
        try:
            stream.write(text + "\n")
            stream.flush()
        except BrokenPipeError:
            # Like `head`'s writer: stop writing, finish the work (saved images stay
            # saved), and exit 141 at the end. Later writes and the final flush go nowhere.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
            if stream is sys.stdout:
                _stdout_closed = True


def data(line: str) -> None:
    """One line of output for the pipeline: a task id, a path, a JSON object."""
    _write(sys.stdout, line)


def data_json(value: object, *, indent: int | None = None) -> None:
    """One JSON value as output: on one line, unless `indent` asks for a readable one."""
    import json  # here, not at the top: most commands print no JSON

    data(json.dumps(value, ensure_ascii=False, indent=indent))


def info(message: str) -> None:
    """A message for people, silenced by --quiet."""
    if not _quiet:
        _write(sys.stderr, message)


def warn(message: str) -> None:
    """Something the user must know even with --quiet."""
    _write(sys.stderr, message)


def debug(message: str) -> None:
    """A --verbose trace line."""
    if _verbose:
        _write(sys.stderr, message)


def report_error(error: ApimartError, *, as_json: bool = False) -> None:
    """The one way an error reaches the user: what happened, then what to do.

    With `as_json` (a command's `--json`), the same error follows as one JSON
    object on a line of its own, for programs that read standard error.
    """
    lines = [f"Error: {error.message}"]
    if error.hint:
        lines.append(error.hint)
    if use_color(sys.stderr):
        lines[0] = f"\x1b[1;31mError:\x1b[0m {error.message}"
    if as_json:
        import json

        lines.append(json.dumps({"error": error.as_data()}, ensure_ascii=False))
    _write(sys.stderr, "\n".join(lines))
