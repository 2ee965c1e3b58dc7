"""The engine: poll, download, record, report; keyed by the polled id, bounded by the deadline."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli.conftest import PNG  # tests/ is on the path, as for every conftest
from pytest_httpx import HTTPXMock

from apimart_cli.client import Client
from apimart_cli.deadline import Deadline
from apimart_cli.downloads import SavedFile
from apimart_cli.engine import (
    Engine,
    Outcome,
    SaveHooks,
    WaitPlan,
    polls_within_open_files,
    query_tasks,
    wait_for_tasks,
)
from apimart_cli.errors import ApimartError, ExitCode, HistoryError, WaitTimeout
from apimart_cli.history import History, TaskRecord
from apimart_cli.tasks import Task

API = "https://api.test"
IMAGES = "https://img.test"
KEY = "sk-engine-test-key"


class Recorder:
    """A Reporter that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()

    def _note(self, *event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def added(self, task_id: str) -> None:
        self._note("added", task_id)

    def update(self, task: Task) -> None:
        self._note("update", task.task_id, task.status)

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        self._note("transferred", task_id, index, received, total)

    def saved(self, task: Task, index: int, saved: SavedFile) -> None:
        self._note("saved", task.task_id, index, saved.path.name, saved.kept_existing)

    def failed(self, task_id: str | None, error: ApimartError) -> None:
        self._note("failed", task_id, error.message)

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        self._note("finished", task.task_id, task.status, [path.name for path in files])

    def history_failed(self, error: HistoryError) -> None:
        self._note("history_failed", error.message)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self._note("close")

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [event[1:] for event in self.events if event[0] == kind]


def reply(data: dict[str, Any]) -> dict[str, Any]:
    return {"code": 200, "data": data}


def expect_task(httpx_mock: HTTPXMock, polled: str, data: dict[str, Any]) -> None:
    httpx_mock.add_response(url=f"{API}/v1/tasks/{polled}?language=en", json=reply(data))


def expect_image(httpx_mock: HTTPXMock, url: str) -> None:
    httpx_mock.add_response(url=url, content=PNG, headers={"Content-Type": "image/png"})


def completed(task_id: str, *urls: str) -> dict[str, Any]:
    images = [{"url": [url], "expires_at": 4_102_444_800} for url in urls]
    return {"id": task_id, "status": "completed", "result": {"images": images}}


@pytest.fixture
def client() -> Iterator[Client]:
    with Client(API, KEY, deadline=Deadline.after(30)) as api:
        yield api


def wait(
    client: Client,
    folder: Path | None,
    *ids: str,
    history: History | None = None,
    hooks: SaveHooks | None = None,
    once: bool = False,
) -> tuple[Outcome, Recorder]:
    recorder = Recorder()
    plan = WaitPlan(client.deadline, folder=folder, interval=0.05, once=once)
    outcome = wait_for_tasks(client, plan, recorder, task_ids=ids, history=history, hooks=hooks)
    return outcome, recorder


def test_the_polled_id_names_the_file_and_the_record_whatever_the_reply_says(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    history = History.open(tmp_path / "history.sqlite3")
    history.record_submission(
        "task_mine", base_url=API, prompt="a fox", fields={}, idempotency_key="k"
    )
    expect_task(httpx_mock, "task_mine", completed("task_other", f"{IMAGES}/a.png"))
    httpx_mock.add_response(
        url=f"{IMAGES}/a.png", content=PNG, headers={"Content-Type": "image/png"}
    )

    outcome, seen = wait(client, tmp_path / "out", "task_mine", history=history)

    assert outcome.exit_code == ExitCode.OK
    assert seen.of("update") == [("task_mine", "completed")]
    assert seen.of("saved") == [("task_mine", 0, "task_mine_0.png", False)]
    assert seen.of("finished") == [("task_mine", "completed", ["task_mine_0.png"])]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["task_mine_0.png"]
    record = history.get("task_mine")
    assert record is not None
    assert record.state == "completed"
    assert record.files == (str(tmp_path / "out" / "task_mine_0.png"),)
    assert history.get("task_other") is None
    history.close()


@pytest.mark.parametrize(
    ("data", "once", "said"),
    [
        ({"status": "failed", "error": {"message": "moderation"}}, False, None),
        ({"status": "cancelled"}, False, None),
        ({"status": "processing", "progress": 40}, True, "is processing (40%), not completed"),
        ({"status": "completed"}, False, "completed with no images or videos"),
    ],
    ids=["failed", "cancelled", "unfinished-once", "no-images"],
)
def test_a_task_that_is_not_completed_with_images_fails_and_downloads_nothing(
    client: Client,
    httpx_mock: HTTPXMock,
    tmp_path: Path,
    data: dict[str, Any],
    once: bool,
    said: str | None,
) -> None:
    expect_task(httpx_mock, "task_1", {"id": "task_1", **data})

    outcome, seen = wait(client, tmp_path / "out", "task_1", once=once)

    assert outcome.exit_code == ExitCode.FAILED
    assert seen.of("saved") == []
    if said is None:  # failed or cancelled: finished, the reporter says why from the task
        assert seen.of("finished") == [("task_1", data["status"], [])]
    else:
        ((task_id, message),) = seen.of("failed")
        assert task_id == "task_1" and said in message
    assert list((tmp_path / "out").iterdir()) == []
    assert [r for r in httpx_mock.get_requests() if str(r.url).startswith(IMAGES)] == []


def test_no_download_reports_the_completed_task_and_saves_nothing(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, "task_1", completed("task_1", f"{IMAGES}/a.png"))

    outcome, seen = wait(client, None, "task_1")

    assert outcome.exit_code == ExitCode.OK
    assert seen.of("finished") == [("task_1", "completed", [])]
    assert list(tmp_path.iterdir()) == []


def test_hooks_run_before_the_rename_and_after_the_save(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, "task_1", completed("task_1", f"{IMAGES}/a.png"))
    httpx_mock.add_response(
        url=f"{IMAGES}/a.png", content=PNG, headers={"Content-Type": "image/png"}
    )
    calls: list[tuple[str, str, bytes, int]] = []

    def before_rename(part: Path, task: Task, index: int) -> None:
        calls.append(("before", part.name, part.read_bytes(), index))
        part.write_bytes(part.read_bytes() + b"")  # a hook may rewrite the part file

    def after_save(path: Path, task: Task, index: int) -> None:
        calls.append(("after", path.name, path.read_bytes(), index))

    def on_completed(task: Task, record: TaskRecord | None) -> None:
        assert record is not None
        calls.append(("completed", task.task_id, record.prompt.encode(), -1))

    history = History.open(tmp_path / "history.sqlite3")
    history.record_submission(
        "task_1", base_url=API, prompt="a fox", fields={}, idempotency_key="k"
    )
    hooks = SaveHooks(completed=on_completed, before_rename=before_rename, after_save=after_save)
    outcome, _ = wait(client, tmp_path / "out", "task_1", hooks=hooks, history=history)
    history.close()

    assert outcome.exit_code == ExitCode.OK
    assert calls == [
        ("completed", "task_1", b"a fox", -1),  # before any download, with the history's record
        ("before", ".task_1_0.part", PNG, 0),
        ("after", "task_1_0.png", PNG, 0),
    ]
    assert outcome.files == {"task_1": [tmp_path / "out" / "task_1_0.png"]}


def test_download_progress_is_reported_in_bytes(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, "task_1", completed("task_1", f"{IMAGES}/a.png"))
    httpx_mock.add_response(
        url=f"{IMAGES}/a.png",
        content=PNG,
        headers={"Content-Type": "image/png", "Content-Length": str(len(PNG))},
    )

    _, seen = wait(client, tmp_path / "out", "task_1")

    progress = seen.of("transferred")
    assert progress and progress[-1] == ("task_1", 0, len(PNG), len(PNG))


class Stalled(httpx.SyncByteStream):
    """A body that sends its first bytes, then nothing until released."""

    def __init__(self, first: bytes, release: threading.Event) -> None:
        self.first, self.release = first, release

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        self.release.wait(30)


def test_the_deadline_ends_the_run_while_a_download_hangs_and_keeps_the_part(
    httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    release = threading.Event()
    httpx_mock.add_response(
        url=f"{API}/v1/tasks/task_1?language=en",
        json=reply(completed("task_1", f"{IMAGES}/a.png")),
    )
    httpx_mock.add_response(
        url=f"{IMAGES}/a.png",
        headers={"Content-Type": "image/png", "Content-Length": str(len(PNG))},
        stream=Stalled(PNG[:100], release),
    )
    client = Client(API, KEY, deadline=Deadline.after(1.0))
    started = time.monotonic()
    try:
        outcome, seen = wait(client, tmp_path / "out", "task_1")
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert outcome.timed_out and outcome.exit_code == ExitCode.TIMEOUT
    assert outcome.unfinished == ["task_1"]
    assert elapsed < 3.0  # at the deadline, not when the host lets go
    assert (tmp_path / "out" / ".task_1_0.part").read_bytes() == PNG[:100]  # for the resume
    assert seen.of("saved") == [] and seen.of("finished") == []


def test_ids_added_from_another_thread_are_waited_for_until_input_closes(
    client: Client, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, "task_1", {"id": "task_1", "status": "cancelled"})
    expect_task(httpx_mock, "task_2", {"id": "task_2", "status": "cancelled"})
    seen = Recorder()
    engine = Engine(client, deadline=client.deadline, reporter=seen, interval=0.05)
    engine.open_input()

    def feed() -> None:
        engine.add("task_1")
        engine.add("task_2")
        engine.close_input()

    threading.Thread(target=feed).start()
    outcome = engine.run()

    assert outcome.task_count == 2
    assert sorted(seen.of("finished")) == [("task_1", "cancelled", []), ("task_2", "cancelled", [])]


def test_an_id_in_the_history_is_described_to_the_poller_by_its_submission(
    client: Client, tmp_path: Path
) -> None:
    """When it was sent and its size and resolution: what the poller aims with."""
    with History.open(tmp_path / "history.sqlite3") as history:
        history.record_submission(
            "task_1",
            base_url=API,
            prompt="a fox",
            fields={"size": "16:9", "resolution": "2k"},
            idempotency_key="k1",
        )
        engine = Engine(client, deadline=client.deadline, reporter=Recorder(), history=history)
        sent = history.get("task_1")
        assert sent is not None
        assert engine._describe("task_1") == (sent.created_at, "16:9/2k")
        assert engine._describe("task_elsewhere") == (None, None)
    without = Engine(client, deadline=client.deadline, reporter=Recorder())
    assert without._describe("task_1") == (None, None)


def test_query_tasks_answers_each_id_and_times_out_the_silent_ones(
    httpx_mock: HTTPXMock,
) -> None:
    release = threading.Event()

    def silent(request: httpx.Request) -> httpx.Response:
        release.wait(30)
        return httpx.Response(200, json=reply({"id": "task_2", "status": "pending"}))

    expect_task(httpx_mock, "task_1", {"id": "task_1", "status": "processing"})
    httpx_mock.add_callback(silent, url=f"{API}/v1/tasks/task_2?language=en", is_optional=True)
    client = Client(API, KEY, deadline=Deadline.after(1.0))
    try:
        first, second = query_tasks(client, ["task_1", "task_2"])
    finally:
        release.set()
    assert isinstance(first, Task) and first.status == "processing"
    assert isinstance(second, WaitTimeout) and second.exit_code == ExitCode.TIMEOUT


class _CountingClient:
    """Answers every query at once and counts them; its deadline passes after `answers`."""

    def __init__(self, answers: int) -> None:
        self.asked = 0
        self.lock = threading.Lock()
        self.answers = answers
        self.deadline = Deadline(1.0, self._clock)

    def _clock(self) -> float:
        with self.lock:
            return 2.0 if self.asked >= self.answers else 0.0

    def get_task(self, task_id: str) -> Task:
        with self.lock:
            self.asked += 1
        return Task(task_id=task_id, status="processing", raw={})


def test_query_tasks_asks_nothing_and_records_nothing_after_the_deadline(
    tmp_path: Path,
) -> None:
    """100,000 ids cannot hold `status` past its deadline: the queries still queued then
    are dropped (no request), the answers are recorded only while there is time, and
    every id left is a timeout."""
    client = _CountingClient(answers=50)
    ids = [f"task_{i}" for i in range(100_000)]
    recorded: list[str] = []

    class _History:
        def update(self, task_id: str, **changes: object) -> None:
            recorded.append(task_id)

    results = query_tasks(client, ids, history=_History())  # type: ignore[arg-type]
    assert client.asked < 50 + 20  # those under way at the deadline, not the 100,000
    late = [r for r in results if isinstance(r, WaitTimeout)]
    assert len(late) >= len(ids) - client.asked
    assert len(recorded) <= 50


@pytest.mark.parametrize(
    ("open_files", "polls"),
    [(1024, 64), (100, 52), (40, 1), (resource.RLIM_INFINITY, 64)],
)
def test_polls_in_flight_leave_room_for_the_files_a_wait_keeps_open(
    monkeypatch: pytest.MonkeyPatch, open_files: int, polls: int
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda which: (open_files, open_files))
    assert polls_within_open_files(64) == polls
