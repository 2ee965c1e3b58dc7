"""Standard output for data, standard error for everything else.

Every line the user sees passes through here: `data` for what a pipeline reads
(ids, paths, JSON), the rest for people. Writes are locked so that lines from
worker threads never interleave. With `progress` and `tables`, the display
layer: the only modules that know rich.
"""

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

from apimart_cli import secrets

if TYPE_CHECKING:  # only an error's report needs them: `--help` does without
    from apimart_cli.errors import ApimartError

# The secrets live in `secrets`; the display's callers keep these names.
from apimart_cli.secrets import hide as hide
from apimart_cli.secrets import redact as redact
from apimart_cli.secrets import redact_data as redact_data
from apimart_cli.secrets import redacting as redacting

_lock = threading.Lock()
_started = time.monotonic()  # the command's start, for the one clock progress shows
_quiet = False
_verbose = False


def configure(*, quiet: bool = False, verbose: bool = False) -> None:
    global _quiet, _verbose, _started
    _quiet, _verbose = quiet, verbose
    _started = time.monotonic()
    secrets.forget()


def started() -> float:
    """When the command started (`time.monotonic`): every progress clock counts from it."""
    return _started


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
_stdout_missing = False  # standard output was closed before the command started


def stdout_closed() -> bool:
    """Whether the reader of standard output went away (`apimart ... | head -1`)."""
    return _stdout_closed


# Standard output that could not be written (a full disk, `> /dev/full`): why, and the
# lines it was to carry (task ids, paths), for the command to name on standard error.
_stdout_lost: OSError | None = None
_lost_lines: list[str] = []
MAX_LOST_LINES = 1000


def lost_output() -> tuple[OSError | None, list[str]]:
    """Why standard output failed, if it did, and the first lines it did not carry."""
    with _lock:
        return _stdout_lost, list(_lost_lines)


def _lose_stdout(exc: OSError, text: str) -> None:
    """From now on, standard output's lines are kept, not written (under `_lock`)."""
    global _stdout_lost
    _stdout_lost = exc
    _keep_lost(text)
    # What is still buffered would fail again at exit: it goes nowhere instead.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def _keep_lost(text: str) -> None:
    for line in text.splitlines():
        if len(_lost_lines) < MAX_LOST_LINES:
            _lost_lines.append(line)


def open_missing_streams() -> None:
    """At the start of a run: stand-ins for standard streams the shell closed (`>&-`,
    `2>&-`, `<&-`).

    Python then has None for them, and the first write would crash. A closed
    standard output is treated like a reader that went away (exit 141 once
    something was to be written there); closed standard input reads as empty;
    what was for a closed standard error is lost, as it would be anyway.
    """
    global _stdout_missing, _stdout_closed, _stdout_lost
    with _lock:  # a run starts with nothing lost: an earlier run in this process is over
        _stdout_missing = _stdout_closed = False
        _stdout_lost = None
        _lost_lines.clear()
    if sys.stdin is None:
        sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - for the whole run
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
        _stdout_missing = True
    _never_unencodable(sys.stdout)


def _never_unencodable(stream: TextIO) -> None:
    """What a stream's encoding cannot carry is written anyway, never an internal error:
    a path with bytes that are not UTF-8 (`-o $'\\xff'`, kept by Python as surrogates)
    as those very bytes, as the shell gave them; on a stream that is not UTF-8
    (PYTHONIOENCODING=ascii), any other character as its backslash escape."""
    if getattr(stream, "errors", None) != "strict" or not hasattr(stream, "reconfigure"):
        return
    utf8 = (getattr(stream, "encoding", "") or "").lower().replace("-", "") == "utf8"
    stream.reconfigure(errors="surrogateescape" if utf8 else "backslashreplace")


def _write(stream: TextIO, text: str) -> None:
    global _stdout_closed
    text = redact(text)
    with _lock:
        if stream is sys.stdout and _stdout_missing:
            _stdout_closed = True  # the data has nowhere to go, as with a broken pipe
        if stream is sys.stdout and _stdout_closed:
            return
        if stream is sys.stdout and _stdout_lost is not None:
            _keep_lost(text)
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
        except OSError as exc:  # a full disk: what it was to carry is kept, to be named
            if stream is not sys.stdout:
                raise
            _lose_stdout(exc, text)


def data(line: str) -> None:
    """One line of output for the pipeline: a task id, a path, a JSON object."""
    _write(sys.stdout, line)


def data_json(value: object, *, indent: int | None = None) -> None:
    """One JSON value as output: on one line, unless `indent` asks for a readable one."""
    import json  # here, not at the top: most commands print no JSON

    from apimart_cli.errors import ServiceError

    try:
        text = json.dumps(redact_data(value), ensure_ascii=False, indent=indent)
    except RecursionError:  # a reply nested just short of what the parser refuses
        raise ServiceError("The service sent a reply nested too deeply to print.") from None
    data(text)


def info(message: str) -> None:
    """A message for people, silenced by --quiet."""
    if not _quiet:
        _say(message)


def warn(message: str) -> None:
    """Something the user must know even with --quiet."""
    _say(message)


def debug(message: str) -> None:
    """A --verbose trace line."""
    if _verbose:
        _say(message)


def _say(message: str, *, prefix: str = "") -> None:
    """A message on standard error, with no control character but its line breaks: a
    path or a name from the service in it cannot drive the terminal."""
    from apimart_cli.errors import terminal_safe

    _write(sys.stderr, prefix + terminal_safe(message))


def report_error(error: "ApimartError", *, as_json: bool = False) -> None:
    """The one way an error reaches the user: what happened, then what to do.

    With `as_json` (a command's `--json`), the same error follows as one JSON
    object on a line of its own, for programs that read standard error.
    """
    text = "\n".join([error.message, *([error.hint] if error.hint else [])])
    prefix = "\x1b[1;31mError:\x1b[0m " if use_color(sys.stderr) else "Error: "
    _say(text, prefix=prefix)
    if as_json:
        error_json(error)


def error_json(error: "ApimartError") -> None:
    """The error as one JSON object on a line of standard error (`--json`)."""
    import json  # here, not at the top: most commands print no JSON

    _write(sys.stderr, json.dumps({"error": error.as_data()}, ensure_ascii=False))
