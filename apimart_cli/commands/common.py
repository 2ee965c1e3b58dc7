"""What every command shares: the global options, the error funnel, task ids."""

from __future__ import annotations

import functools
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar, overload

import typer

from apimart_cli import console
from apimart_cli.errors import ApimartError, ExitCode, UsageError, WaitTimeout, interrupted_code

if TYPE_CHECKING:
    from apimart_cli.app import Ui
    from apimart_cli.deadline import Deadline
    from apimart_cli.engine import Outcome
    from apimart_cli.history import History
    from apimart_cli.preview import Previewer
    from apimart_cli.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class AppState:
    """The global options, given before the command."""

    api_key: str | None = None
    base_url: str | None = None
    verbose: bool = False
    quiet: bool = False
    sandbox: bool = False  # --sandbox: base_url is a sandbox that ends with this command

    def settings(
        self,
        output: Path | None = None,
        *,
        references: str | None = None,
        metadata: bool | None = None,
        preview: bool | None = None,
    ) -> Settings:
        """The settings in effect; the arguments are the command's own flags (None: not given)."""
        from apimart_cli.settings import Source, resolve

        settings = resolve(
            **self.flags(),
            output_dir=str(output) if output is not None else None,
            references=references,
            metadata=metadata,
            preview=preview,
            info=console.info,
            warn=console.warn,
        )
        if self.sandbox:  # the base URL is the sandbox this command started
            sources = {**settings.sources, "base_url": Source("flag", "--sandbox")}
            settings = replace(settings, sources=sources)
        return settings

    def flags(self) -> dict[str, str | None]:
        """The settings given as global options, by config key."""
        return {"api_key": self.api_key, "base_url": self.base_url}

    def ui(self) -> Ui:
        """Where the library's words go: standard error, requests only with --verbose."""
        return terminal_ui(verbose=self.verbose)

    def resume(
        self, output: Path | None, *, download: bool = True, as_json: bool = False
    ) -> Callable[[list[str]], str] | None:
        """What makes the command that resumes a wait; None under --sandbox, whose
        tasks end with the command."""
        if self.sandbox:
            return None
        return functools.partial(
            resume_command,
            output=output,
            base_url=self.base_url,
            download=download,
            as_json=as_json,
        )


def resume_command(
    task_ids: Sequence[str],
    output: Path | None,
    *,
    base_url: str | None = None,
    download: bool = True,
    as_json: bool = False,
) -> str:
    """The command that picks up where an interrupted wait stopped, ready to paste."""
    words = ["apimart"]
    if base_url:
        words += ["--base-url", base_url]
    words.append("wait")
    if output is not None and str(output) != ".":
        words += ["-o", str(output)]
    if not download:
        words.append("--no-download")
    if as_json:
        words.append("--json")
    return " ".join(shell_word(word) for word in [*words, *task_ids])


def shell_word(word: str) -> str:
    """`word` quoted for a POSIX shell (`shlex.quote`); one that holds a control
    character (a line break, an escape) as bash and zsh's `$'...'`, each such character
    written as its escape: the command stays one line, and nothing in it can drive the
    terminal it is shown on."""
    if word.isprintable():
        import shlex  # here: only an interrupted wait needs it, and not `status`

        return shlex.quote(word)
    return "$'" + "".join(_escaped(char) for char in word) + "'"


def _escaped(char: str) -> str:
    if char in "\\'":
        return "\\" + char
    if char.isprintable():
        return char
    code = ord(char)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, AppState) else AppState()


def terminal_ui(*, verbose: bool = False) -> Ui:
    """The console as the library's `Ui`."""
    from apimart_cli.app import Ui

    debug = console.debug if verbose else None
    return Ui(console.info, console.warn, console.hide, console.redact, debug)


@overload
def open_history(*, deadline: Deadline | None = None) -> History: ...
@overload
def open_history(*, required: bool, deadline: Deadline | None = None) -> History | None: ...
def open_history(*, required: bool = True, deadline: Deadline | None = None) -> History | None:
    """The task history (`app.open_history`, its warning on standard error)."""
    from apimart_cli.app import open_history

    return open_history(terminal_ui(), required=required, deadline=deadline)


def open_saved_files(outcome: Outcome) -> None:
    """`--open`: every image the run saved, in the desktop's viewer."""
    from apimart_cli.opening import open_files

    open_files([path for paths in outcome.files.values() for path in paths], note=console.warn)


def previewer(wanted: bool) -> Previewer | None:
    """`--preview`: what draws each image on standard error, where it can; a note says
    why not."""
    if not wanted:
        return None
    from apimart_cli.preview import previewer

    shown = not console.is_quiet()
    # Where it cannot draw, one note says why (previews were asked for).
    return previewer(shown, is_terminal=console.is_terminal(sys.stderr), note=console.info)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """The one funnel from errors to a message on standard error and an exit code.

    A command's `--json` (its `as_json` parameter) makes the error data as well.
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = command(*args, **kwargs)
        except ApimartError as error:
            console.report_error(error, as_json=bool(kwargs.get("as_json")))
            raise _exit_after_lost_output(error.exit_code, paid) from None
        except KeyboardInterrupt as interrupt:
            code = interrupted_code(interrupt)
            console.warn("Terminated." if code == ExitCode.TERMINATED else "Interrupted.")
            raise typer.Exit(int(code)) from None
        except typer.Exit as exiting:
            raise _exit_after_lost_output(exiting.exit_code, paid) from None
        if console.lost_output()[0] is not None:
            raise _exit_after_lost_output(ExitCode.OK, paid)
        return result

    paid = command.__name__ in PAYING_COMMANDS

    return run


# The commands that submit or save what was paid for: a run whose output was lost
# points to the history, which has every task id.
PAYING_COMMANDS = frozenset({"generate", "wait", "download", "resend", "batch"})


def _exit_after_lost_output(code: int, paid: bool) -> typer.Exit:
    """The command's exit, once what standard output could not carry (a full disk) is
    named on standard error: the task ids paid for, the paths saved. Exit 1 at least."""
    failure, lines = console.lost_output()
    if failure is None:
        return typer.Exit(code)
    reason = failure.strerror or type(failure).__name__
    carried = "".join(f"\n  {line}" for line in lines)
    console.report_error(
        ApimartError(
            f"Could not write to standard output: {reason}."
            + (f" What it was to carry:{carried}" if carried else ""),
            "Every task id is in `apimart history`; free some space, then "
            "`apimart history` or `apimart wait` goes on from there."
            if paid
            else "Free some space, then run the command again.",
        )
    )
    return typer.Exit(max(int(code), int(ExitCode.FAILED)))


class _StdinReader:
    """Standard input read on a daemon thread, so that whoever waits for it can stop at
    the command's deadline while the writer keeps the pipe open.

    The descriptor is read directly, not through `sys.stdin`: a thread blocked inside
    `sys.stdin` holds its buffer's lock, and the interpreter waits for that lock when
    it exits, which would keep the command alive until the writer closes the pipe.
    """

    def __init__(self) -> None:
        # Bounded: a writer faster than the reader (`yes`) waits, rather than fill memory.
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=_STDIN_QUEUED_CHUNKS)
        threading.Thread(target=self._read, name="stdin", daemon=True).start()

    def _read(self) -> None:
        try:
            try:
                fd: int | None = sys.stdin.fileno()
            except (AttributeError, OSError, ValueError):  # a stand-in without a descriptor
                fd = None
            if fd is None:
                for line in sys.stdin:
                    self._chunks.put(line.encode("utf-8", "surrogateescape"))
            else:
                while chunk := _read_some(fd):
                    self._chunks.put(chunk)
        except OSError:
            pass  # a closed or unreadable input ends like an empty one
        finally:
            self._chunks.put(None)

    def chunks(self, deadline: Deadline | None) -> Iterator[bytes]:
        """The bytes as they arrive, until the end of input; a WaitTimeout if `deadline`
        comes first."""
        from apimart_cli.workers import take

        while True:
            left = None if deadline is None else deadline.remaining()
            try:
                if left == 0:  # input still coming, however fast, ends at the deadline too
                    raise queue.Empty
                chunk = take(self._chunks, left)
            except queue.Empty:
                raise WaitTimeout(
                    "Out of time reading standard input: it was still open.",
                    "Close the input (end the pipe) sooner, or give a longer --timeout.",
                ) from None
            if chunk is None:
                return
            yield chunk


_STDIN_CHUNK_BYTES = 64 * 1024


def _read_some(fd: int) -> bytes:
    """The next bytes of `fd`, b"" at its end; waits where the descriptor was left
    non-blocking by whoever shares it (EAGAIN is not the end of the input)."""
    while True:
        try:
            return os.read(fd, _STDIN_CHUNK_BYTES)
        except BlockingIOError:
            import select

            select.select([fd], [], [])


_STDIN_QUEUED_CHUNKS = 16


# The most of standard input read as a prompt or a jobs file, and the longest line of
# ids: `yes | apimart generate` must not fill the memory before its deadline. (Ids are
# kept once each, see `read_task_ids`.)
MAX_STDIN_TEXT_BYTES = 64 * 1024 * 1024


def _too_much(limit: int) -> UsageError:
    return UsageError(
        f"Standard input is larger than {limit // (1024 * 1024)} MiB; nothing was sent.",
        "Is the right command piped in?",
    )


def stdin_lines(
    deadline: Deadline | None = None, *, strict: bool = True, whole: bool = False
) -> Iterator[str]:
    """Lines of standard input as they arrive (UTF-8, without their line ends); a
    WaitTimeout once `deadline` comes with the input still open. Not UTF-8: a
    UsageError, or (not `strict`) the line with U+FFFD where its bytes were. More than
    MAX_STDIN_TEXT_BYTES in one line, or in all with `whole` (a jobs file, kept whole
    in memory), is a UsageError."""
    pending = bytearray()
    total = 0
    for chunk in _StdinReader().chunks(deadline):
        pending += chunk
        total += len(chunk)
        if len(pending) > MAX_STDIN_TEXT_BYTES or (whole and total > MAX_STDIN_TEXT_BYTES):
            raise _too_much(MAX_STDIN_TEXT_BYTES)
        start = 0
        while (end := pending.find(b"\n", start)) >= 0:
            yield _decoded(bytes(pending[start:end]), strict)
            start = end + 1
        del pending[:start]
    if pending:
        yield _decoded(bytes(pending), strict)


def stdin_text(deadline: Deadline | None = None) -> str:
    """All of standard input (a prompt), read until its end or `deadline` (WaitTimeout);
    more than MAX_STDIN_TEXT_BYTES is a UsageError."""
    chunks, size = [], 0
    for chunk in _StdinReader().chunks(deadline):
        size += len(chunk)
        if size > MAX_STDIN_TEXT_BYTES:
            raise _too_much(MAX_STDIN_TEXT_BYTES)
        chunks.append(chunk)
    return _decoded(b"".join(chunks))


def _decoded(data: bytes, strict: bool = True) -> str:
    try:
        return data.decode("utf-8", "strict" if strict else "replace").removesuffix("\r")
    except UnicodeDecodeError:
        raise UsageError("Standard input is not UTF-8 text.") from None


def ids_from_stdin(deadline: Deadline | None = None) -> Iterator[str]:
    """Lines of standard input as they arrive, stripped, blank ones skipped (a line that
    is not UTF-8 comes through, to be refused as the bad id it is)."""
    for line in stdin_lines(deadline, strict=False):
        if line.strip():
            yield line.strip()


def wants_stdin(task_ids: list[str] | None) -> bool:
    """No ids, or '-': the ids come from standard input."""
    return not task_ids or task_ids == ["-"]


def read_task_ids(task_ids: list[str] | None, deadline: Deadline | None = None) -> list[str]:
    """All the ids, from the arguments or standard input, checked before anything is sent;
    standard input still open at `deadline` is a WaitTimeout (exit 124)."""
    from apimart_cli.tasks import validate_task_id

    if wants_stdin(task_ids):
        if console.is_terminal(sys.stdin):
            raise UsageError(
                "No task ids given.", "Pass them as arguments, or pipe them in, one per line."
            )
        # Each id kept once as it arrives: `yes task_1 | apimart status` holds one.
        task_ids = list(dict.fromkeys(ids_from_stdin(deadline)))
        if not task_ids:
            raise UsageError("No task ids on standard input.")
    assert task_ids is not None
    return list(dict.fromkeys(validate_task_id(task_id) for task_id in task_ids))
