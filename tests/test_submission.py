"""`submit`: what the history holds at each point of a submission, whatever interrupts it."""

from __future__ import annotations

from pathlib import Path

import pytest

from apimart_cli.errors import (
    APIStatusError,
    BadRequestError,
    ExitCode,
    HistoryError,
    SubmissionUnknown,
    SubmittedButUnrecorded,
    Terminated,
)
from apimart_cli.history import History
from apimart_cli.payload import build_request
from apimart_cli.submission import submit
from apimart_cli.tasks import Submitted

BASE = "https://api.example"


class FakeClient:
    """Answers a submission with `outcome`: ids, or an exception to raise."""

    base_url = BASE

    def __init__(self, outcome: list[str] | BaseException, history: History) -> None:
        self.outcome, self.history = outcome, history
        self.seen_before_sending: list[tuple[str | None, str]] = []

    def submit(self, request: object, key: str) -> list[str]:
        self.seen_before_sending = [(r.state, r.idempotency_key) for r in self.history.list()]
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def submit_reply(self, request: object, key: str) -> Submitted:
        return Submitted(self.submit(request, key))


@pytest.fixture
def history(tmp_path: Path) -> History:
    return History(tmp_path / "history.sqlite3")


def send(client: FakeClient, history: History) -> list[str]:
    return submit(client, history, build_request("a fox"), idempotency_key="key-1")  # type: ignore[arg-type]


def test_the_key_is_recorded_before_the_request_leaves(history: History) -> None:
    client = FakeClient(["task_01"], history)
    assert send(client, history) == ["task_01"]
    assert client.seen_before_sending == [("submitting", "key-1")]
    [record] = history.list()
    assert (record.task_id, record.state, record.idempotency_key) == (
        "task_01",
        "submitted",
        "key-1",
    )


@pytest.mark.parametrize(("interrupt", "code"), [(KeyboardInterrupt(), 130), (Terminated(), 143)])
def test_a_signal_on_the_way_keeps_the_submission_as_unknown(
    history: History, interrupt: KeyboardInterrupt, code: int
) -> None:
    with pytest.raises(SubmissionUnknown) as caught:
        send(FakeClient(interrupt, history), history)
    assert caught.value.exit_code == code and "key-1" in (caught.value.hint or "")
    [record] = history.list()
    assert (record.task_id, record.state) == (None, "unknown")


def test_a_refusal_leaves_no_record(history: History) -> None:
    refused = BadRequestError("bad size", status_code=400)
    with pytest.raises(APIStatusError):
        send(FakeClient(refused, history), history)
    assert history.list() == []


class Unwritable(History):
    """A history that took the record before sending, then cannot be written."""

    def record_unknown(self, **what: object) -> None:
        raise HistoryError(f"The task history {self.path} is locked by another process.")

    def record_submission(self, task_id: str, **what: object) -> None:
        raise KeyboardInterrupt


def test_an_unknown_outcome_names_its_key_when_the_history_fails(tmp_path: Path) -> None:
    history = Unwritable(tmp_path / "history.sqlite3")
    unknown = SubmissionUnknown("The server answered 500", idempotency_key="key-1")
    with pytest.raises(SubmissionUnknown) as caught:
        send(FakeClient(unknown, history), history)
    assert caught.value.exit_code == ExitCode.SERVICE
    assert "key-1" in (caught.value.hint or "") and "locked" in (caught.value.hint or "")


def test_a_signal_between_the_reply_and_its_record_still_gives_the_ids(tmp_path: Path) -> None:
    history = Unwritable(tmp_path / "history.sqlite3")
    with pytest.raises(SubmittedButUnrecorded) as caught:
        send(FakeClient(["task_01"], history), history)
    assert caught.value.task_ids == ["task_01"]
    assert caught.value.exit_code == ExitCode.INTERRUPTED
