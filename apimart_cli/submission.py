"""Submit a generation so that a paid task is never lost.

The history is checked before the request is sent and written before any id is
printed; a submission whose outcome is unknown is recorded with its
idempotency key so it can be found later.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from apimart_cli.errors import ExitCode, HistoryError, SubmissionUnknown, SubmittedButUnrecorded

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
    """
    history.check_writable()
    key = idempotency_key or str(uuid.uuid4())
    # The model too, so the history (and the images' provenance) can say what made a task.
    fields = {"model": request.model, **request.fields()}
    try:
        task_ids = client.submit(request, key)
    except (SubmissionUnknown, KeyboardInterrupt) as caught:
        error = caught if isinstance(caught, SubmissionUnknown) else _interrupted(key)
        history.record_unknown(
            base_url=client.base_url,
            prompt=request.prompt,
            fields=fields,
            idempotency_key=key,
            error=error.message,
        )
        raise error from None
    try:
        for task_id in task_ids:
            history.record_submission(
                task_id,
                base_url=client.base_url,
                prompt=request.prompt,
                fields=fields,
                idempotency_key=key,
            )
    except HistoryError as error:  # paid for: the ids must reach the user somehow
        raise SubmittedButUnrecorded(task_ids, key, error.message) from None
    return task_ids


def _interrupted(key: str) -> SubmissionUnknown:
    """Ctrl-C while the request may be on its way: the outcome is as unknown as after a 500."""
    error = SubmissionUnknown(
        "Interrupted while submitting; the task may have been created.",
        f"Idempotency key {key}. `apimart history --pending` lists it; "
        "check your APIMart dashboard before submitting again.",
        idempotency_key=key,
    )
    error.exit_code = ExitCode.INTERRUPTED
    return error
