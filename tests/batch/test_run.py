"""batch.run: a whole run in this process, against a sandbox."""

from __future__ import annotations

import dataclasses
import errno
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from apimart_cli.batch import (
    MANIFEST_NAME,
    AimdLimiter,
    BatchOptions,
    run_batch,
)
from apimart_cli.client import Client
from apimart_cli.deadline import Deadline
from apimart_cli.errors import ExitCode, HistoryError, SubmissionTimedOut
from apimart_cli.history import History
from apimart_cli.progress import PlainBatchDisplay
from apimart_cli.sandbox import Sandbox, SandboxConfig
from apimart_cli.sandbox.state import COST_PER_IMAGE
from apimart_cli.tasks import Task

from .conftest import parse

# -- a run in this process, against a sandbox ---------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.2)) as server:
        yield server


def run_jobs(
    sandbox: Sandbox,
    folder: Path,
    text: str,
    history: type[History] = History,
    client: Client | None = None,
    display: PlainBatchDisplay | None = None,
) -> ExitCode:
    options = BatchOptions(output=folder / "out", interval=0.05, timeout=30)
    return run_batch(
        parse(text),
        client or Client(sandbox.base_url, "sk-test", deadline=Deadline.after(30)),
        AimdLimiter(4),
        options,
        lambda: history(folder / "history.sqlite3"),
        display=display or PlainBatchDisplay(),
    ).code


def saved(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / "out").glob("*.png"))


def latest_records(folder: Path) -> list[dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for line in (folder / "out" / MANIFEST_NAME).read_text().splitlines():
        entry = json.loads(line)
        latest[entry["line"]] = entry
    return [latest[line] for line in sorted(latest)]


class Unrecording(History):
    """A history that cannot record a submission the server already took."""

    def record_submission(self, task_id: str, **fields: Any) -> None:
        raise HistoryError(f"Cannot use the task history {self.path}: disk full.")


class NoUpdates(History):
    """A history that breaks once the run is under way (e.g. overwritten by another program)."""

    def update(self, task_id: str, **changes: Any) -> None:
        raise HistoryError(f"The task history {self.path} is not a readable SQLite database.")


def test_a_task_the_history_could_not_record_is_still_waited_for_and_saved(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_jobs(sandbox, tmp_path, "a fox\nan owl\na bear", history=Unrecording)
    err = capsys.readouterr().err
    assert code == ExitCode.OK, err
    task_ids = sorted(str(request.task_id) for request in sandbox.submissions())
    assert len(task_ids) == 3  # each paid for once
    assert saved(tmp_path) == [f"{task_id}_0.png" for task_id in task_ids]
    records = latest_records(tmp_path)
    assert [r["state"] for r in records] == ["completed"] * 3
    assert sorted(r["task_id"] for r in records) == task_ids
    assert err.count("could not be written") == 1  # said once, not once per job
    assert "failed" not in err


def test_a_history_that_breaks_during_the_run_is_a_warning(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_jobs(sandbox, tmp_path, "a fox\nan owl", history=NoUpdates)
    err = capsys.readouterr().err
    assert code == ExitCode.OK, err
    assert len(saved(tmp_path)) == 2
    assert [r["state"] for r in latest_records(tmp_path)] == ["completed"] * 2
    assert err.count("not a readable SQLite database") == 1


def test_a_reply_naming_another_task_id_is_taken_for_the_task_polled(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(sandbox.base_url, "sk-test")
    get_task = client.get_task

    def renamed(task_id: str) -> Task:
        return dataclasses.replace(get_task(task_id), task_id=task_id.lower())

    monkeypatch.setattr(client, "get_task", renamed)
    code = run_jobs(sandbox, tmp_path, "a fox\nan owl", client=client)
    assert code == ExitCode.OK
    task_ids = sorted(str(request.task_id) for request in sandbox.submissions())
    assert saved(tmp_path) == [f"{task_id}_0.png" for task_id in task_ids]
    assert sorted(r["task_id"] for r in latest_records(tmp_path)) == task_ids


class LockedOnceRunning(History):
    """A history that passes the run's own check, then refuses every write before a send."""

    def record_sending(self, **what: Any) -> None:
        raise HistoryError(f"The task history {self.path} is locked by another process.")


def test_a_history_that_refuses_a_send_keeps_the_key_for_the_rerun(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_jobs(sandbox, tmp_path, "a fox", history=LockedOnceRunning)
    assert code == ExitCode.USAGE
    assert sandbox.requests == []  # nothing was sent
    [first] = latest_records(tmp_path)
    assert first["state"] == "submitting" and first["idempotency_key"]
    assert "locked by another process" in capsys.readouterr().err
    assert run_jobs(sandbox, tmp_path, "a fox") == ExitCode.OK
    [request] = sandbox.submissions()
    assert request.headers["idempotency-key"] == first["idempotency_key"]


class FullDisk:
    """A file whose every write fails as on a full disk; the rest is the real file's."""

    def __init__(self, file: Any) -> None:
        self._file = file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_manifest_that_cannot_record_a_key_sends_nothing_under_it(
    sandbox: Sandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A full disk: the job's key is not on disk, so a rerun could not resend with it and
    the service would make a second task. Nothing is sent; the rerun, with room, is."""
    from apimart_cli.batch.manifest import Manifest

    real_open = Manifest.open

    def open_on_a_full_disk(self: Manifest) -> None:
        real_open(self)
        self._file = FullDisk(self._file)

    monkeypatch.setattr(Manifest, "open", open_on_a_full_disk)
    code = run_jobs(sandbox, tmp_path, "a fox\nan owl")
    assert code == ExitCode.FAILED
    assert sandbox.submissions() == []
    assert capsys.readouterr().err.count("cannot write") == 1
    monkeypatch.setattr(Manifest, "open", real_open)
    assert run_jobs(sandbox, tmp_path, "a fox\nan owl") == ExitCode.OK
    assert len(sandbox.submissions()) == 2 and len(saved(tmp_path)) == 2


class CutOffOnItsWay(Client):
    """Each submission cut off by the deadline, as the client says it is when the deadline
    ends a request, before the engine, on another thread, has seen the deadline itself."""

    def submit_reply(self, request: Any, idempotency_key: str) -> Any:
        raise SubmissionTimedOut("Out of time on its way.", idempotency_key=idempotency_key)


def test_a_submission_the_deadline_cut_off_is_a_timeout_with_how_to_resume(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    client = CutOffOnItsWay(sandbox.base_url, "sk-test", deadline=Deadline.after(30))
    code = run_jobs(sandbox, tmp_path, "a fox", client=client)
    err = capsys.readouterr().err
    assert code == ExitCode.TIMEOUT, err
    assert "with 1 job(s) unfinished. Run the same command again to resume." in err
    [record] = latest_records(tmp_path)
    assert record["state"] == "submitting" and record["idempotency_key"]  # resent with it


# -- the gallery page at the end -------------------------------------------------------------


def run_watched(folder: Path, duration: float, timeout: float) -> list[tuple[bool, list[str]]]:
    """A batch of two with its gallery page: each page written (live or final, each job's
    state and error)."""
    from collections.abc import Iterable, Mapping

    from apimart_cli import gallery

    pages: list[tuple[bool, list[str]]] = []

    class Watching(gallery.Keeper):
        def _write(self, records: Iterable[Mapping[str, Any]], *, live: bool) -> None:
            jobs = list(records)
            pages.append((live, [f"{r['state']}: {r.get('error')}" for r in jobs]))
            super()._write(jobs, live=live)

    out = folder / "out"
    with Sandbox(SandboxConfig(duration=duration)) as server:
        run_batch(
            parse("a fox\nan owl\n"),
            Client(server.base_url, "sk-test", deadline=Deadline.after(timeout)),
            AimdLimiter(4),
            BatchOptions(output=out, interval=0.05, timeout=timeout),
            lambda: History(folder / "history.sqlite3"),
            gallery=Watching(out, warn=print, every=3600.0),
            display=PlainBatchDisplay(),
        )
    return pages


def test_a_batch_that_ends_writes_its_final_page_once(tmp_path: Path) -> None:
    pages = run_watched(tmp_path, duration=0.2, timeout=30)
    assert [page for page in pages if not page[0]] == [(False, ["completed: None"] * 2)]


def test_a_batch_that_times_out_ends_its_page_with_the_unfinished_jobs(tmp_path: Path) -> None:
    pages = run_watched(tmp_path, duration=30.0, timeout=1.0)
    unfinished = "submitted: unfinished when the wait timed out"
    assert pages[-1] == (False, [unfinished, unfinished])


class CostDisplay(PlainBatchDisplay):
    """The plain display, remembering each total cost it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.totals: list[float] = []

    def cost(self, total: float) -> None:
        self.totals.append(total)


def test_the_total_cost_counts_each_job_once_with_those_of_the_earlier_run(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    first, second = CostDisplay(), CostDisplay()
    assert run_jobs(sandbox, tmp_path, "a fox\nan owl", display=first) == ExitCode.OK
    assert first.totals[-1] == pytest.approx(2 * COST_PER_IMAGE["1k"])
    # The rerun polls only the new job; the two done before still count.
    assert run_jobs(sandbox, tmp_path, "a fox\nan owl\na bear", display=second) == ExitCode.OK
    assert second.totals == [pytest.approx(3 * COST_PER_IMAGE["1k"])]


def test_jobs_a_sandbox_made_are_made_again_against_another_service(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # A sandbox's pictures are no result of the service: a run against it sends the job.
    assert run_jobs(sandbox, tmp_path, "a fox\nan owl") == ExitCode.OK
    with Sandbox(SandboxConfig(duration=0.2)) as service:
        assert run_jobs(service, tmp_path, "a fox\nan owl") == ExitCode.OK
        assert len(service.submissions()) == 2
        assert len(saved(tmp_path)) == 4  # the sandbox's stay, beside the new ones
        assert run_jobs(service, tmp_path, "a fox\nan owl") == ExitCode.OK
        assert len(service.submissions()) == 2  # done against it: nothing sent again
    assert {r["base_url"] for r in latest_records(tmp_path)} == {service.base_url}


class OrderedDisplay(PlainBatchDisplay):
    """The plain display, remembering when it closed among the warnings it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.said: list[str] = []

    def warning(self, text: str) -> None:
        self.said.append(text)

    def close(self) -> None:
        self.said.append("(closed)")


def test_an_interrupted_batch_says_how_to_resume_under_its_last_frame(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apimart_cli.batch.run import BatchRun
    from apimart_cli.errors import Terminated

    def terminated(self: BatchRun) -> bool:
        raise Terminated

    monkeypatch.setattr(BatchRun, "_go", terminated)
    display = OrderedDisplay()

    assert run_jobs(sandbox, tmp_path, "a fox", display=display) == ExitCode.TERMINATED
    assert display.said[-2:] == [
        "(closed)",
        "Interrupted. Run the same command again to resume where it stopped.",
    ]
