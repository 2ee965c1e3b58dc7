"""Submit a generation so that a paid task is never lost.

The submission is written to the history, with its idempotency key, before the
request is sent, so that even a kill leaves a record to find it by; its task
ids are written before any is printed. A submission whose outcome is unknown
(a 500, a dropped connection, a reply that cannot be read, Ctrl-C or SIGTERM
on the way) reaches the user with its key whatever happens to the history.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from apimart_cli.errors import (
    ApimartError,
    ExitCode,
    HistoryError,
    SubmissionUnknown,
    SubmittedButUnrecorded,
    interrupted_code,
)

if TYPE_CHECKING:
    from apimart_cli.client import Client
    from apimart_cli.history import History
    from apimart_cli.payload import GenerationRequest


def submit(
    client: Client,
    history: History,
    request: GenerationRequest,
    *,
    idempotency_key: str | None = None,
) -> list[str]:
    """Send the request once (resent only where it cannot have been accepted); its ids.

    `idempotency_key` is for a caller that recorded the key before sending (`batch`),
    so that sending again after a kill makes no second task; by default a new one.
    A HistoryError before sending means nothing was sent.
    """
    key = idempotency_key or str(uuid.uuid4())
    what: dict[str, Any] = {
        "base_url": client.base_url,
        "prompt": request.prompt,
        # The model too, so the history (and the images' provenance) can say what made a task.
        "fields": {"model": request.model, **request.fields(), **_operation(request)},
        "idempotency_key": key,
    }
    history.record_sending(**what)
    try:
        task_ids = client.submit(request, key)
    except SubmissionUnknown as error:
        raise _kept_unknown(history, what, error) from None
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM with the request on its way
        raise _kept_unknown(history, what, _interrupted(key, interrupt)) from None
    except ApimartError:  # refused (400, 401, 402, 429...): nothing was created
        _forget(history, key)
        raise
    try:
        for task_id in task_ids:
            history.record_submission(task_id, **what)
    except HistoryError as error:  # paid for: the ids must reach the user somehow
        raise SubmittedButUnrecorded(task_ids, key, error.message) from None
    except KeyboardInterrupt as interrupt:  # a signal between the reply and the record
        code = interrupted_code(interrupt)
        raise SubmittedButUnrecorded(task_ids, key, "interrupted", exit_code=code) from None
    return task_ids


def _operation(request: GenerationRequest) -> dict[str, str]:
    """A video's operation, kept with its fields: what the task makes, and where a resend
    of its key must go. An image's is left out, as it always was."""
    from apimart_cli.constants import IMAGE_OPERATION

    return {} if request.operation == IMAGE_OPERATION else {"operation": request.operation}


def _kept_unknown(
    history: History, what: dict[str, Any], error: SubmissionUnknown
) -> SubmissionUnknown:
    """`error`, once the history says the outcome is unknown; if it cannot, the error says so.

    Nothing here may stop the error (and its key) from reaching the user: not a
    locked or full history, not a second Ctrl-C while it is being written.
    """
    try:
        history.record_unknown(**what, error=error.message)
    except (HistoryError, KeyboardInterrupt) as failure:
        reason = failure.message if isinstance(failure, HistoryError) else "interrupted"
        error.hint = (
            f"Idempotency key {what['idempotency_key']}: keep it. The history could not "
            f"record the outcome ({reason}); check your APIMart dashboard before submitting again."
        )
    return error


def _forget(history: History, key: str) -> None:
    """Drop the record of a submission the service refused; if that fails, it stays
    listed as 'submitting', which errs on the side of looking."""
    with contextlib.suppress(HistoryError):
        history.forget_sending(key)


def _interrupted(key: str, interrupt: KeyboardInterrupt) -> SubmissionUnknown:
    """Ctrl-C or SIGTERM while the request may be on its way: as unknown as after a 500."""
    code = interrupted_code(interrupt)
    how = "Terminated" if code == ExitCode.TERMINATED else "Interrupted"
    return SubmissionUnknown(
        f"{how} while submitting; the task may have been created.",
        f"Idempotency key {key}. `apimart history --pending` lists it; "
        "check your APIMart dashboard before submitting again.",
        idempotency_key=key,
        exit_code=code,
    )
