"""Exit codes and the errors that carry them.

Every failure the user can see is an ``ApimartError``: it knows its exit code and
its two lines (what happened, what to do). ``console.report_error`` is the one
place that prints them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from enum import IntEnum

from apimart_cli.secrets import redact


class ExitCode(IntEnum):
    """The exit codes of the command-line contract."""

    OK = 0
    FAILED = 1  # a task failed, was cancelled, is missing, unfinished or expired; a 400
    USAGE = 2  # bad usage or input: nothing was sent
    AUTH = 3  # no API key, or the server refused it
    BALANCE = 4  # insufficient balance
    SERVICE = 5  # the service or the network failed after retries
    TIMEOUT = 124  # the command's --timeout ran out
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM (`timeout`, CI runners), handled like Ctrl-C


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so that it unwinds the same way."""


def interrupted_code(interrupt: BaseException) -> ExitCode:
    """The exit code of an interruption: 143 for SIGTERM, 130 for Ctrl-C."""
    return ExitCode.TERMINATED if isinstance(interrupt, Terminated) else ExitCode.INTERRUPTED


def interruption(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM behind `error`, if any (a prompt turns one into an Abort)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# The most characters of a value quoted in a message: a 50 MB line must not fill the screen.
MAX_SHOWN_CHARS = 60


def shown(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """`value` quoted for a message (as repr), redacted, then cut to `limit` characters with
    its length said."""
    text = redact(value if isinstance(value, str) else str(value))
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def clipped(text: str, limit: int) -> str:
    """`text` redacted, then cut to `limit` characters with its length said: cut first, and a
    key at the cut would survive as a prefix that no longer equals the key."""
    text = redact(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


_LINE_BREAKS = re.compile(r"[\t\n\v\f\r\u2028\u2029]+")
# C0 and C1 control characters and DEL, but the tab and the line break: an escape sequence
# (a colour, a cleared screen, a window title, an OSC 8 link) starts with one of them.
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """`text` read from a file or the service, fit for a terminal: line breaks as spaces,
    every other control character as `?`, so nothing in it can drive the terminal."""
    return terminal_safe(_LINE_BREAKS.sub(" ", text))


def named(path: str | os.PathLike[str]) -> str:
    """A path for a message, `printable`: an escape sequence or a line break in a file's
    or a folder's name never reaches the terminal as it is."""
    return printable(os.fspath(path))


def terminal_safe(message: str) -> str:
    """A message of the tool's, its lines kept, with every other control character as
    `?`: what it quotes (a path, a name the service sent) cannot drive the terminal."""
    return _CONTROLS.sub("?", message)


class ApimartError(Exception):
    """An error the user sees as a message, a hint and an exit code."""

    exit_code: ExitCode = ExitCode.FAILED
    task_ids: Sequence[str] = ()  # the tasks it leaves unfinished or failed, where it knows

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        exit_code: ExitCode | None = None,
        task_ids: Sequence[str] = (),
    ) -> None:
        """`exit_code` and `task_ids` for an error that sums up a run (`--json`, MCP)."""
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code
        if task_ids:
            self.task_ids = list(task_ids)

    @property
    def retryable(self) -> bool:
        """Whether running the same command again may succeed, and can do no harm."""
        return self.exit_code in _RETRYABLE_CODES and not hasattr(self, "idempotency_key")

    def as_data(self) -> dict[str, object]:
        """The error as data (`--json`, the MCP server): the keys that apply, no others."""
        data: dict[str, object] = {"message": self.message}
        if self.hint:
            data["hint"] = self.hint
        data["exit_code"] = int(self.exit_code)
        data["retryable"] = self.retryable
        if self.task_ids:
            data["task_ids"] = list(self.task_ids)
        key = getattr(self, "idempotency_key", None)
        if key:
            data["idempotency_key"] = key
        return data


# Codes where the same command, run again later, may well succeed.
_RETRYABLE_CODES = frozenset({5, 124, 130, 143})


class UsageError(ApimartError):
    """Bad usage or input, found before anything was sent."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The config file cannot be read or written."""


class AuthError(ApimartError):
    """No API key, or the server refused it."""

    exit_code = ExitCode.AUTH


class ServiceError(ApimartError):
    """The service or network failed, after retries where retrying was safe."""

    exit_code = ExitCode.SERVICE


class TaskError(ApimartError):
    """A task failed, was cancelled, does not exist, is unfinished or has expired."""

    exit_code = ExitCode.FAILED


class NotCompleted(TaskError):
    """A task asked for its images is still running: not failed, only not done yet."""


class WaitTimeout(ApimartError):
    """The command's `--timeout` ran out."""

    exit_code = ExitCode.TIMEOUT


class APIStatusError(ApimartError):
    """An HTTP error reply, with what the server said about it.

    Made only by `client.make_status_error`, as one of the classes below: the
    class says the exit code, and nothing changes it afterwards.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        status_code: int,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.status_code = status_code
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """The server refused the request as it was (400, and any other 4xx not below)."""

    exit_code = ExitCode.FAILED


class AuthRefusedError(APIStatusError, AuthError):
    """The server refused the key (401, 403)."""


class BalanceError(APIStatusError):
    """The balance is too low for the request (402)."""

    exit_code = ExitCode.BALANCE


class NotFoundError(APIStatusError):
    """No such thing on the server (404)."""

    exit_code = ExitCode.FAILED


class ServiceStatusError(APIStatusError, ServiceError):
    """The service failed (5xx, 408, 425): worth another try where that is safe."""


class RateLimitedError(ServiceStatusError):
    """The service is rate limiting this key (429)."""


class SubmittedButUnrecorded(ServiceError):
    """The server created the tasks, but the history could not record them.

    Rare (a locked or full disk after the check before sending), and the one
    case where a paid id would otherwise be lost: the message carries the ids.
    """

    def __init__(
        self,
        task_ids: list[str],
        idempotency_key: str,
        reason: str,
        *,
        exit_code: ExitCode | None = None,
    ) -> None:
        super().__init__(
            f"Created {' '.join(task_ids)}, but could not record it in the history: {reason}",
            "Keep these ids: `apimart wait ID` fetches the images.",
            exit_code=exit_code,
            task_ids=task_ids,
        )
        self.task_ids = task_ids
        self.idempotency_key = idempotency_key


class HistoryError(UsageError):
    """The local task history cannot be read or written (checked before any submission)."""


class SubmissionUnknown(ServiceError):
    """A submission was sent but its outcome is unknown: it may have created a task."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        idempotency_key: str,
        exit_code: ExitCode | None = None,
    ) -> None:
        super().__init__(message, hint, exit_code=exit_code)
        self.idempotency_key = idempotency_key


class SubmissionTimedOut(SubmissionUnknown):
    """`--timeout` ran out while a submission was on its way: its outcome is unknown."""

    exit_code = ExitCode.TIMEOUT
