"""Submit a generation so that a paid task is never lost, nor paid for twice.

The submission is written to the history, with its idempotency key and the body
bound to that key, before the request is sent, so that even a kill leaves a
record to find it by; its task ids are written before any is printed. A
submission whose outcome is unknown (a 500, a dropped connection, a reply that
cannot be read, a 409 or 422 to a key, Ctrl-C or SIGTERM on the way) reaches the
user with its key whatever happens to the history, and `resend` sends that key
again with exactly its body: the service answers with the task it made, or makes
it once. A key is let go only when the service answers it with a task id or
with a refusal that proves nothing was created under it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apimart_cli.errors import (
    ApimartError,
    ExitCode,
    HistoryError,
    SubmissionUnknown,
    SubmittedButUnrecorded,
    TaskError,
    UsageError,
    interrupted_code,
)
from apimart_cli.settings import is_sandbox_url

if TYPE_CHECKING:
    from apimart_cli.client import Client
    from apimart_cli.history import History
    from apimart_cli.payload import GenerationRequest, Reference
    from apimart_cli.tasks import Submitted

# Statuses that never prove a key made nothing: 409, the first request with the key is
# still being processed; 422, the key came back with another body (the draft's rule).
_KEY_CONFLICTS = frozenset({409, 422})
# A refusal of a resend that says nothing of the key's earlier sends: the key, the
# balance or the pace was refused before the service looked the key up.
_NOT_ABOUT_THE_KEY = frozenset({401, 402, 403, 404, 429})
_STOPS = (ExitCode.TIMEOUT, ExitCode.INTERRUPTED, ExitCode.TERMINATED)
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")


class BoundBodyChanged(UsageError):
    """A reference file of the body bound to a key changed since: nothing was sent, and
    the key, which may have made a task, is kept (never replaced by a new one)."""


def resend_hint(key: str) -> str:
    """What every message about an unknown outcome says to do."""
    return (
        f"Idempotency key {key}: `apimart resend {key}` sends it again safely; the "
        "service answers with the task it made, or makes it once."
    )


def submit(
    client: Client,
    history: History,
    request: GenerationRequest,
    *,
    idempotency_key: str | None = None,
    note: Callable[[str], None] | None = None,
) -> list[str]:
    """Send the request once (resent only where it cannot have been accepted); its ids.

    `idempotency_key` is for a caller that recorded the key before sending (`batch`),
    so that sending again after a kill makes no second task; by default a new one.
    A key the history already binds to a body is sent with that body, whatever
    `request` is (`bound_request`). A HistoryError before sending means nothing
    was sent; so does a UsageError (a bound reference file that changed since).
    `note` hears what the reply says beyond its ids: that it replayed an earlier
    submission with the key, or that it was the finished result itself.
    """
    if idempotency_key is None:
        return _send(client, history, request, str(uuid.uuid4()), resending=False, note=note)
    answered = already_answered(client, history, idempotency_key)
    if answered:
        return answered
    bound = bound_request(history, idempotency_key)
    if bound is not None:
        key = idempotency_key
        return _send(client, history, bound, key, resending=True, bound=True, note=note)
    # A key sent by an older version, which kept no body: sent with this one, and still
    # a key that may have made a task.
    resending = history.is_unanswered(idempotency_key)
    return _send(client, history, request, idempotency_key, resending=resending, note=note)


def already_answered(client: Client, history: History, key: str) -> list[str]:
    """The task ids the history holds for `key` (none: never answered here), its rows
    without an id let go. A key with its answer is never sent again: a service that no
    longer holds the key would make a second task of it.

    Nor is a key first sent to another service (a batch run again with another base
    URL): what it made is there, and this one would make it again. A SubmissionUnknown
    says where to resend it. A sandbox's key (loopback, which bills nothing) goes on,
    and what the sandbox answered is no answer here.
    """
    elsewhere = history.sent_to(key)
    if elsewhere is not None and elsewhere != client.base_url:
        if is_sandbox_url(elsewhere):
            return []
        raise SubmissionUnknown(
            f"Idempotency key {key} was first sent to {elsewhere}, not {client.base_url}; "
            "the task it may have made is there, so it is not sent here.",
            f"`apimart --base-url {elsewhere} resend {key}` sends it there again safely "
            "(or run the batch again with that --base-url).",
            idempotency_key=key,
        )
    task_ids = history.answered(key)
    if task_ids:
        _forget(history, key)
    return task_ids


def bound_request(history: History, key: str) -> GenerationRequest | None:
    """The request the history binds to `key` (its files read again and checked against
    their hashes: a UsageError if one changed), or None if no body is bound to it."""
    from dataclasses import replace

    from apimart_cli.constants import GENERATION_PATHS

    body = history.bound_body(key)
    if body is None:
        return None
    operation = history.bound_operation(key)  # where the key was sent: it goes there again
    request = request_from_body(body, key)
    if operation not in GENERATION_PATHS:
        return request
    return replace(request, operation=operation)


def _send(
    client: Client,
    history: History,
    request: GenerationRequest,
    key: str,
    *,
    resending: bool,
    bound: bool = False,
    note: Callable[[str], None] | None = None,
) -> list[str]:
    """`request` sent under `key` and recorded; `resending`: the key may already have
    made a task; `bound`: `request` is the body the history binds to the key."""
    what: dict[str, Any] = {
        "base_url": client.base_url,
        "prompt": request.prompt,
        # The model too, so the history (and the images' provenance) can say what made a task.
        "fields": {"model": request.model, **request.fields(), **_operation(request)},
        "idempotency_key": key,
    }
    history.record_sending(**what, body=None if bound else stored_body(request))
    try:
        submitted = client.submit_reply(request, key)
    except SubmissionUnknown as error:
        error.hint = resend_hint(key)
        raise _kept_unknown(history, what, error) from None
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM with the request on its way
        raise _kept_unknown(history, what, _interrupted(key, interrupt)) from None
    except ApimartError as error:
        if not _proves_nothing_made(error, resending=resending):
            raise _kept_unknown(history, what, _not_a_refusal(error, key)) from None
        _forget(history, key)  # refused (400, 401, 402, 429...): nothing was created
        raise
    task_ids = submitted.task_ids
    try:
        for task_id in task_ids:
            history.record_submission(task_id, **what)
            if submitted.request_id:
                history.record_request_id(task_id, submitted.request_id)
        if submitted.result is not None:
            from apimart_cli.history import task_changes

            history.update(submitted.result.task_id, **task_changes(submitted.result))
    except HistoryError as error:  # paid for: the ids must reach the user somehow
        raise SubmittedButUnrecorded(task_ids, key, error.message) from None
    except KeyboardInterrupt as interrupt:  # a signal between the reply and the record
        raise interrupted_outside(history, key, interrupt, task_ids) from None
    if note is not None:
        _tell(note, submitted, key)
    return task_ids


def _tell(note: Callable[[str], None], submitted: Submitted, key: str) -> None:
    ids = " ".join(submitted.task_ids)
    if submitted.replayed:
        note(
            f"The service replayed an earlier submission with idempotency key {key}: "
            f"{ids} is that task, not a new one."
        )
    if submitted.result is not None:
        note(f"The service answered with the finished result; it is kept as {ids}.")


def _proves_nothing_made(error: ApimartError, *, resending: bool) -> bool:
    """Whether a refusal proves that no task exists under the key it answered.

    A 409 or 422 never does: the key is known to the service. A first send refused
    made nothing. A resend refused for the key, the balance or the pace says nothing
    of what the earlier sends made; refused for its body (a 400), it does: a service
    that had made a task under the key would have answered with it. Nor does a
    resend that got no refusal at all (the deadline came while retrying), or whose
    refusal came with a 5xx (a model the service cannot use now, under a load status).
    """
    status = getattr(error, "status_code", None)
    if status in _KEY_CONFLICTS:
        return False
    if not resending:
        return True
    if not isinstance(status, int) or not 400 <= status < 500:
        return False
    return status not in _NOT_ABOUT_THE_KEY and not isinstance(error, SubmissionUnknown)


def _not_a_refusal(error: ApimartError, key: str) -> SubmissionUnknown:
    """A refusal that leaves the key's outcome unknown, as an unknown outcome."""
    status = getattr(error, "status_code", None)
    if status == 409:
        why = "the first request with this idempotency key is still being processed"
    elif status == 422:
        why = "the service holds this idempotency key with another body"
    else:
        why = "an earlier request with this idempotency key may have created the task"
    hint = f"Resend it shortly with `apimart resend {key}`; the key and its body are kept."
    if status == 422:
        hint = (
            f"The key and the body recorded with it are kept: `apimart resend {key}` sends "
            "that body again; if the service still answers 422, look the key up on your "
            "APIMart dashboard, as it may have made a task."
        )
    elif status != 409:
        hint = f"{hint} {resend_hint(key)}"
    stop = error.exit_code if error.exit_code in _STOPS else None  # the deadline's 124 stays
    return SubmissionUnknown(
        f"{error.message} ({why}); the outcome is unknown.",
        hint,
        idempotency_key=key,
        exit_code=stop,
    )


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
        key = what["idempotency_key"]
        error.hint = (
            f"Idempotency key {key}: keep it. The history could not record the outcome "
            f"({reason}); once it can be written, `apimart resend {key}` sends it again "
            "safely (the key and its body were recorded before sending)."
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
        resend_hint(key),
        idempotency_key=key,
        exit_code=code,
    )


def interrupted_outside(
    history: History, key: str, interrupt: KeyboardInterrupt, task_ids: Sequence[str] = ()
) -> BaseException:
    """What a Ctrl-C or SIGTERM that came outside the request itself means for `key` (one
    during it is an unknown outcome), as the history says: the task ids recorded under
    it, given all the same; else `task_ids` (the reply's, come back) as not recorded; else
    its record, written before a request that never left, named for `resend`; else the
    interruption as it is."""
    code = interrupted_code(interrupt)
    how = "Terminated" if code == ExitCode.TERMINATED else "Interrupted"
    try:
        recorded, sent = history.answered(key), history.sent_to(key) is not None
    except (HistoryError, KeyboardInterrupt):
        recorded, sent = [], False
    if recorded and set(recorded) >= set(task_ids):
        given = SubmittedButUnrecorded(recorded, key, "", exit_code=code)
        given.message = f"{how} once {' '.join(recorded)} had been created and recorded."
        given.hint = "`apimart wait ID` (or `apimart wait --pending`) fetches the images."
        given.args = (given.message,)
        return given
    if task_ids:
        return SubmittedButUnrecorded(list(task_ids), key, how.lower(), exit_code=code)
    if sent:
        return _interrupted(key, interrupt)
    return interrupt


# -- the body bound to a key ---------------------------------------------------------------


def stored_body(request: GenerationRequest) -> dict[str, object]:
    """The body as sent, in its order, for the history: each local file as its path,
    type, size and SHA-256 (read again on a resend), every other reference as sent."""
    body = dict(request.dry_run())
    if request.references:
        body["image_urls"] = [_stored_reference(ref) for ref in request.references]
    return body


def _stored_reference(ref: Reference) -> object:
    if ref.kind != "file":
        return ref.source
    assert ref.path is not None
    return {
        "file": str(ref.path.absolute()),
        "mime": ref.mime,
        "size": ref.size,
        "sha256": _file_sha256(ref.path, ref.size),
    }


def _file_sha256(path: Path, size: int) -> str:
    from apimart_cli.payload import iter_file

    digest = hashlib.sha256()
    for chunk in iter_file(path, size):
        digest.update(chunk)
    return digest.hexdigest()


_OPTION_KEYS = ("model", "prompt", "n", "size", "resolution", "image_urls", "official_fallback")


def request_from_body(body: Mapping[str, Any], key: str) -> GenerationRequest:
    """The request whose body is exactly `body` (`stored_body`), its files read again:
    a file whose content changed since is refused (UsageError), nothing sent."""
    from apimart_cli.payload import GenerationRequest

    prompt, model = body.get("prompt"), body.get("model")
    if not isinstance(prompt, str) or not isinstance(model, str):
        raise UsageError(
            f"The history's body for idempotency key {key} cannot be read.",
            "Check your APIMart dashboard for the task before submitting again.",
        )
    n = body.get("n")
    return GenerationRequest(
        prompt=prompt,
        model=model,
        size=body.get("size"),
        resolution=body.get("resolution"),
        n=n if isinstance(n, int) else None,
        references=tuple(_bound_reference(item, key) for item in body.get("image_urls") or ()),
        official_fallback=bool(body.get("official_fallback")),
        params=tuple((name, value) for name, value in body.items() if name not in _OPTION_KEYS),
    )


def _bound_reference(item: object, key: str) -> Reference:
    """One stored reference: a URL or data: URI as it was, a file read and checked again."""
    from apimart_cli.payload import Reference, resolve_reference

    if isinstance(item, str):  # a URL or data: URI, sent as it is
        return resolve_reference(item)
    if not isinstance(item, Mapping) or not isinstance(item.get("file"), str):
        raise UsageError(f"The history's body for idempotency key {key} cannot be read.")
    path = Path(item["file"])
    size, mime = item.get("size"), item.get("mime")
    changed = BoundBodyChanged(
        f"Reference image {path} changed since idempotency key {key} was first sent with it; "
        "nothing was sent.",
        f"Put the file back as it was and run `apimart resend {key}`: the key may have "
        "made a task, and is only ever sent with the same body.",
    )
    if not isinstance(size, int) or not isinstance(mime, str):
        raise changed
    try:
        if (
            not path.is_file()
            or path.stat().st_size != size
            or _file_sha256(path, size) != item.get("sha256")
        ):
            raise changed
    except (OSError, UsageError):
        raise changed from None
    return Reference(str(path), "file", path=path, mime=mime, size=size)


# -- resending what is unknown ----------------------------------------------------------------


@dataclass(frozen=True)
class Resent:
    """One unknown submission sent again: its task ids, or why not."""

    key: str
    task_ids: tuple[str, ...] = ()
    error: ApimartError | None = None


def check_keys(keys: Sequence[str]) -> list[str]:
    """The keys, each checked before anything is sent (UsageError naming a bad one)."""
    from apimart_cli.errors import shown

    for key in keys:
        if not _KEY_RE.fullmatch(key):
            raise UsageError(
                f"Invalid idempotency key {shown(key)}.",
                "`apimart history --pending` lists the keys of unknown submissions.",
            )
    return list(dict.fromkeys(keys))


def resend(client: Client, history: History, keys: Sequence[str] = ()) -> Iterator[Resent]:
    """Each unknown submission to the client's base URL (with `keys`, those keys')
    sent again with its key and exactly its bound body, as it is answered.

    The service answers with the task it already made, or makes it once; a 409
    leaves it unknown (try again shortly). A key given that is not unknown there
    is an error of its own; so is one whose body the history does not hold.
    """
    wanted = check_keys(keys)
    records = history.unknown_submissions(client.base_url, wanted)
    found = list(dict.fromkeys(record.idempotency_key for record in records))
    for key in wanted:
        if key not in found:
            yield Resent(key, error=_not_unknown(client.base_url, key))
    for key in found:
        try:
            answered = already_answered(client, history, key)  # by another send, meanwhile
            if answered:
                yield Resent(key, tuple(answered))
                continue
            request = bound_request(history, key)
            if request is None:
                raise SubmissionUnknown(
                    f"The history holds no body for idempotency key {key} (it was sent by an "
                    "older version), so it cannot be resent as it was.",
                    "Check your APIMart dashboard for the task before submitting again.",
                    idempotency_key=key,
                )
            task_ids = _send(client, history, request, key, resending=True, bound=True)
        except (UsageError, SubmissionUnknown, SubmittedButUnrecorded) as error:
            if error.exit_code in _STOPS:
                raise  # Ctrl-C, SIGTERM or the deadline: the key is kept, no other is sent
            yield Resent(key, error=error)
            continue
        except ApimartError as error:
            if error.exit_code in (ExitCode.AUTH, *_STOPS):
                raise  # every other key would end alike
            yield Resent(key, error=error)
            continue
        yield Resent(key, tuple(task_ids))


def _not_unknown(base_url: str, key: str) -> ApimartError:
    """The error for a key given to `resend` that has no unknown submission at `base_url`."""
    return TaskError(
        f"No submission with an unknown outcome has the idempotency key {key} at {base_url}.",
        "`apimart history --pending` lists the unknown ones (state unknown or submitting); "
        "a key already answered has its task id there.",
    )
