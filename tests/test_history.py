"""The local task log: what is written, how it is read back, and how it fails."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli.errors import ExitCode, HistoryError
from apimart_cli.history import SCHEMA_VERSION, History, default_path
from tests.helpers.clocks import FakeClock

BASE = "https://api.apimart.ai"
SANDBOX = "http://127.0.0.1:8787"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite3"


@pytest.fixture
def history(path: Path) -> Iterator[History]:
    with History.open(path) as opened:
        yield opened


def submit(history: History, task_id: str, *, base_url: str = BASE, key: str = "") -> None:
    history.record_submission(
        task_id,
        base_url=base_url,
        prompt=f"prompt of {task_id}",
        fields={"model": "gpt-image-2", "n": 1},
        idempotency_key=key or f"key-{task_id}",
    )


def test_round_trip(history: History, path: Path) -> None:
    history.record_submission(
        "task_01",
        base_url=BASE,
        prompt="a red fox",
        fields={"model": "gpt-image-2", "size": "16:9", "image_urls": [Path("ref.png")]},
        idempotency_key="key-1",
    )

    record = history.get("task_01")
    assert record is not None
    assert (record.task_id, record.base_url, record.prompt) == ("task_01", BASE, "a red fox")
    # A value JSON cannot hold is kept as text rather than losing the record.
    assert record.fields == {"model": "gpt-image-2", "size": "16:9", "image_urls": ["ref.png"]}
    assert (record.idempotency_key, record.state) == ("key-1", "submitted")
    assert (record.cost, record.files, record.error) == (None, (), None)
    assert record.created_at == record.updated_at > 0
    assert not record.finished
    assert history.get("task_unknown") is None


def test_each_write_is_committed_at_once(history: History, path: Path) -> None:
    submit(history, "task_01")
    # A second connection (another process, or the next run after a crash) sees it.
    with History.open(path) as other:
        assert [r.task_id for r in other.list()] == ["task_01"]


def test_list_is_newest_first_and_limited(history: History) -> None:
    for task_id in ("task_a", "task_b", "task_c"):
        submit(history, task_id)

    assert [r.task_id for r in history.list()] == ["task_c", "task_b", "task_a"]
    assert [r.task_id for r in history.list(limit=2)] == ["task_c", "task_b"]
    assert history.list(limit=0) == []


def test_pending_only_keeps_unfinished_and_unknown_states(history: History) -> None:
    states = ["submitted", "processing", "completed", "failed", "cancelled", "queued"]
    for state in states:
        submit(history, f"task_{state}")
        history.update(f"task_{state}", state=state)
    history.record_unknown(
        base_url=BASE, prompt="p", fields={}, idempotency_key="lost", error="timed out"
    )

    pending = history.list(pending_only=True)
    # "queued" is not a state we know: it counts as unfinished.
    expected = [None, "task_queued", "task_processing", "task_submitted"]
    assert [r.task_id for r in pending] == expected
    assert {r.task_id for r in history.list() if r.finished} == {
        "task_completed",
        "task_failed",
        "task_cancelled",
    }


def test_pending_ids_are_per_base_url_oldest_first(history: History) -> None:
    submit(history, "task_1")
    submit(history, "task_sandbox", base_url=SANDBOX)
    submit(history, "task_2")
    submit(history, "task_done")
    history.update("task_done", state="completed")
    history.record_unknown(base_url=BASE, prompt="p", fields={}, idempotency_key="k", error="e")

    assert history.pending_ids(BASE) == ["task_1", "task_2"]
    assert history.pending_ids(SANDBOX) == ["task_sandbox"]
    assert [r.task_id for r in history.list(base_url=SANDBOX)] == ["task_sandbox"]


def test_unknown_submission_is_filled_in_by_its_idempotency_key(history: History) -> None:
    for error in ("connection reset", "read timed out"):
        history.record_unknown(
            base_url=BASE, prompt="a fox", fields={"n": 2}, idempotency_key="key-1", error=error
        )
    [unknown] = history.list()
    assert (unknown.task_id, unknown.state, unknown.error) == (None, "unknown", "read timed out")
    assert history.pending_ids(BASE) == []

    # The server did accept it, and says so when asked again with the same key;
    # one submission may bring back more than one task.
    submit(history, "task_1", key="key-1")
    submit(history, "task_2", key="key-1")

    first = history.get("task_1")
    assert first is not None
    assert (first.state, first.error, first.created_at) == ("submitted", None, unknown.created_at)
    assert [r.task_id for r in history.list()] == ["task_2", "task_1"]


def test_a_key_answered_meanwhile_is_not_made_unknown_again(history: History) -> None:
    # Two sends of one key race (a `resend` while the first `generate` waits): one gets
    # the task id, then the other is interrupted. The key has its answer: no row may say
    # its outcome is unknown, or every later `resend` would send it once more.
    what = {"base_url": BASE, "prompt": "a fox", "fields": {}, "idempotency_key": "key-1"}
    history.record_sending(**what, body={"model": "gpt-image-2", "prompt": "a fox"})
    submit(history, "task_1", key="key-1")
    history.record_unknown(**what, error="Interrupted while submitting")

    assert [(r.task_id, r.state) for r in history.list()] == [("task_1", "submitted")]
    assert history.unknown_submissions(BASE) == []


def test_an_answer_clears_an_unknown_row_its_key_was_left_with(history: History) -> None:
    # A history written before the rule above may hold such a row beside the task: the
    # answer, given again, takes it away.
    submit(history, "task_1", key="key-1")
    with history._write() as conn:  # as an earlier version left it
        conn.execute(
            "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt, fields,"
            " idempotency_key, state) VALUES (NULL, 1, 1, ?, 'a fox', '{}', 'key-1', 'unknown')",
            (BASE,),
        )
    assert len(history.unknown_submissions(BASE)) == 1
    submit(history, "task_1", key="key-1")

    assert [(r.task_id, r.state) for r in history.list()] == [("task_1", "submitted")]
    assert history.answered("key-1") == ["task_1"]
    assert history.answered("key-2") == []


def test_a_recorded_task_keeps_its_row(history: History) -> None:
    submit(history, "task_1")
    history.record_submission(
        "task_1", base_url=SANDBOX, prompt="other", fields={}, idempotency_key="k2", state="pending"
    )
    record = history.get("task_1")
    assert record is not None
    assert (record.prompt, record.base_url, record.state) == ("prompt of task_1", BASE, "pending")

    history.update("task_1", state="completed")
    submit(history, "task_1")  # a late echo does not make a finished task unfinished
    assert history.pending_ids(BASE) == []


def test_update_adds_files_uniquely_and_keeps_what_it_is_not_given(history: History) -> None:
    submit(history, "task_1")
    history.update("task_1", state="processing", cost=0.05)
    history.update("task_1", files=["out/task_1_0.png", "out/task_1_1.png"])
    history.update("task_1", state="completed", files=["out/task_1_1.png", "out/task_1_2.png"])

    record = history.get("task_1")
    assert record is not None
    # Stored as absolute paths: the history is read from anywhere.
    out = Path.cwd() / "out"
    assert record.files == tuple(str(out / f"task_1_{i}.png") for i in range(3))
    assert (record.state, record.cost, record.error) == ("completed", 0.05, None)
    assert record.finished
    assert record.updated_at >= record.created_at


def test_update_of_a_task_submitted_elsewhere_is_ignored(history: History) -> None:
    history.update("task_elsewhere", state="completed", files=["a.png"])
    assert history.list() == []
    assert history.get("task_elsewhere") is None


def test_file_is_private_and_its_folder_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "history.sqlite3"
    with History.open(path) as history:
        submit(history, "task_1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_default_path_honours_apimart_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_DATA_DIR", str(tmp_path / "data"))
    assert default_path() == tmp_path / "data" / "history.sqlite3"
    with History() as history:
        assert history.path == tmp_path / "data" / "history.sqlite3"
    assert default_path().exists()

    import platformdirs

    monkeypatch.delenv("APIMART_DATA_DIR")
    assert default_path() == Path(platformdirs.user_data_dir("apimart")) / "history.sqlite3"


def test_corrupt_file_is_a_history_error_naming_it(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b"this is not sqlite\n" * 512)

    with pytest.raises(HistoryError) as caught:
        History.open(path)
    assert str(path) in caught.value.message
    assert "not a readable SQLite database" in caught.value.message
    assert caught.value.hint is not None
    assert "Move it aside" in caught.value.hint
    assert "APIMART_DATA_DIR" in caught.value.hint
    assert caught.value.exit_code == ExitCode.USAGE


def test_folder_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file where the folder should be")
    path = tmp_path / "data" / "history.sqlite3"

    with pytest.raises(HistoryError) as caught:
        History.open(path)
    assert str(path) in caught.value.message
    assert caught.value.hint is not None
    assert "APIMART_DATA_DIR" in caught.value.hint


@pytest.mark.skipif(IS_ROOT, reason="root writes through file permissions")
def test_read_only_file(path: Path) -> None:
    History.open(path).close()
    path.chmod(0o400)
    with pytest.raises(HistoryError, match="history"):
        History.open(path)


def test_check_writable(history: History) -> None:
    history.check_writable()
    # Stand in for a file that cannot be written (root ignores permissions).
    history._conn.execute("PRAGMA query_only = ON")  # type: ignore[union-attr]

    with pytest.raises(HistoryError) as caught:
        history.check_writable()
    assert str(history.path) in caught.value.message
    with pytest.raises(HistoryError):
        submit(history, "task_1")


def test_a_closed_history_raises_history_error(path: Path) -> None:
    history = History.open(path)
    history.close()
    history.close()
    with pytest.raises(HistoryError):
        history.list()


def _record_many(path: str, worker: int) -> None:
    with History.open(Path(path)) as history:
        for i in range(25):
            submit(history, f"task_{worker}_{i}")


def test_eight_processes_record_at_once_without_losing_a_row(path: Path) -> None:
    # A fresh file, as with `seq 8 | xargs -P 8 apimart generate ...` on a new machine.
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_record_many, args=(str(path), n)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    assert [worker.exitcode for worker in workers] == [0] * 8
    with History.open(path) as history:
        recorded = {record.task_id for record in history.list()}
    assert recorded == {f"task_{n}_{i}" for n in range(8) for i in range(25)}


# -- saved, apart from the task's state ------------------------------------------------

LATER = 4_102_444_800.0  # 2100-01-01: URLs that still work
EARLIER = 1_000_000_000.0  # 2001: URLs that expired


def complete(history: History, task_id: str, *, images: int = 1, expires_at: float = LATER) -> None:
    history.update(task_id, state="completed", images=images, expires_at=expires_at)


def test_a_completed_task_whose_images_were_never_saved_is_still_pending(
    history: History,
) -> None:
    for task_id in ("task_unsaved", "task_saved", "task_expired", "task_half"):
        submit(history, task_id)
    complete(history, "task_unsaved")
    complete(history, "task_saved")
    history.update("task_saved", files=["task_saved_0.png"])
    complete(history, "task_expired", expires_at=EARLIER)
    complete(history, "task_half", images=2)
    history.update("task_half", files=["task_half_0.png"])  # the second one failed

    assert history.pending_ids(BASE) == ["task_unsaved", "task_half"]
    assert [r.task_id for r in history.list(pending_only=True)] == ["task_half", "task_unsaved"]
    records = {r.task_id: r for r in history.list()}
    assert not records["task_unsaved"].saved and records["task_unsaved"].pending()
    assert records["task_saved"].saved and not records["task_saved"].pending()
    assert not records["task_expired"].pending()
    assert records["task_expired"].pending(now=EARLIER - 1)

    history.update("task_half", files=["task_half_1.png"])
    assert history.pending_ids(BASE) == ["task_unsaved"]


def test_files_before_the_image_count_is_known_count_as_saved(history: History) -> None:
    submit(history, "task_1")
    history.update("task_1", state="completed", files=["a.png"])
    record = history.get("task_1")
    assert record is not None and record.saved


def test_a_completed_task_with_no_known_expiry_is_not_resurrected(history: History) -> None:
    # As recorded before expiry times were kept: nothing says its URLs still work.
    submit(history, "task_old")
    history.update("task_old", state="completed")
    assert history.pending_ids(BASE) == []


def test_task_changes_say_what_a_poll_tells() -> None:
    from apimart_cli.history import task_changes
    from apimart_cli.tasks import ResultImage, Task

    done = Task(
        "task_1",
        "completed",
        cost=0.02,
        images=(
            ResultImage("https://i/1", 2_000_000_000),
            ResultImage("https://i/2", 1_900_000_000),
        ),
    )
    assert task_changes(done) == {
        "state": "completed",
        "cost": 0.02,
        "images": 2,
        "expires_at": 1_900_000_000.0,
    }
    failed = Task("task_2", "failed", error_message="moderation")
    assert task_changes(failed) == {"state": "failed", "cost": None, "error": "moderation"}
    assert task_changes(Task("task_3", "processing")) == {"state": "processing", "cost": None}
    image = (ResultImage("https://i/1"),)
    timed = Task("task_4", "completed", 100, 100.0, images=image, raw={"actual_time": 52})
    assert task_changes(timed) == {
        "state": "completed",
        "cost": None,
        "images": 1,
        "estimated_time": 100.0,
        "actual_time": 52.0,
    }


def test_learned_says_how_right_estimates_were_and_how_long_each_kind_took(
    history: History,
) -> None:
    from apimart_cli.history import task_changes
    from apimart_cli.polling import Learned
    from apimart_cli.tasks import Task

    assert history.learned() == Learned()
    sizes = {"t1": "1:1", "t2": "1:1", "t3": "16:9", "t4": "1:1", "t5": "1:1"}
    for task_id, size in sizes.items():
        history.record_submission(
            task_id,
            base_url=BASE,
            prompt="p",
            fields={"size": size, "resolution": "2k"},
            idempotency_key=task_id,
        )
    times = {"t1": (100.0, 52), "t2": (100.0, 48), "t3": (None, 70), "t4": (80.0, None)}
    for task_id, (estimate, actual) in times.items():
        raw = {} if actual is None else {"actual_time": actual}
        history.update(task_id, **task_changes(Task(task_id, "completed", None, estimate, raw=raw)))
    history.update("t5", **task_changes(Task("t5", "processing", 50, 100.0)))
    learned = history.learned()
    assert learned.ratios == pytest.approx((0.52, 0.48))  # t4 has no actual time, t5 none yet
    assert learned.durations == {"1:1/2k": (52.0, 48.0), "16:9/2k": (70.0,)}
    assert history.learned(limit=1).durations == {"16:9/2k": (70.0,)}  # the most recent


# -- the schema: old files are upgraded --------------------------------------------------

VERSION_1 = """
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY, task_id TEXT UNIQUE, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, base_url TEXT NOT NULL, prompt TEXT NOT NULL,
    fields TEXT NOT NULL, idempotency_key TEXT NOT NULL, state TEXT NOT NULL,
    cost REAL, files TEXT NOT NULL DEFAULT '[]', error TEXT);
CREATE INDEX tasks_created ON tasks (created_at);
CREATE INDEX tasks_base_url_created ON tasks (base_url, created_at);
CREATE INDEX tasks_idempotency_key ON tasks (idempotency_key);
INSERT INTO tasks VALUES (1, 'task_saved', 10, 20, 'https://api.apimart.ai', 'a fox', '{}',
    'k1', 'completed', 0.5, '["/out/task_saved_0.png"]', NULL);
INSERT INTO tasks VALUES (2, 'task_running', 30, 30, 'https://api.apimart.ai', 'an owl', '{}',
    'k2', 'processing', NULL, '[]', NULL);
PRAGMA user_version = 1;
"""


def test_a_version_1_file_opens_and_is_upgraded(path: Path) -> None:
    import sqlite3

    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    db.close()

    with History.open(path) as history:
        records = {r.task_id: r for r in history.list()}
        assert records["task_saved"].files == ("/out/task_saved_0.png",)
        assert records["task_saved"].saved and records["task_saved"].cost == 0.5
        assert not records["task_running"].saved
        assert history.pending_ids(BASE) == ["task_running"]
        complete(history, "task_running")
        assert history.pending_ids(BASE) == ["task_running"]

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[1] for row in db.execute("PRAGMA index_list(tasks)")}
    db.close()
    assert "tasks_state_created" in indexes
    # Opening it again changes nothing.
    with History.open(path) as history:
        assert len(history.list()) == 2


def _open_old_file(path: str) -> None:
    with History.open(Path(path)) as history:
        history.list()


def test_processes_upgrading_an_old_file_at_once_all_succeed(path: Path) -> None:
    import sqlite3

    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_1)
    db.close()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_open_old_file, args=(str(path),)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * 4


# -- no secret is ever written ------------------------------------------------------------

SECRET = 'sk-hist-\\secret"key-0123456789'


def test_nothing_written_holds_a_hidden_secret(path: Path) -> None:
    from apimart_cli import console

    console.hide(SECRET)
    with History.open(path) as history:
        history.record_submission(
            "task_1",
            base_url=BASE,
            prompt=f"a fox {SECRET}",
            fields={"model": "gpt-image-2", "params": {"note": SECRET}},
            idempotency_key="key-1",
        )
        history.update("task_1", state="failed", error=f"The key {SECRET} is not allowed")
        history.record_unknown(
            base_url=BASE, prompt="p", fields={}, idempotency_key="k2", error=f"echo {SECRET}"
        )
        record = history.get("task_1")
    assert record is not None
    assert record.error == "The key [API key] is not allowed"
    assert record.fields["params"] == {"note": "[API key]"}
    for name in (path.name, f"{path.name}-wal"):
        stored = (path.parent / name).read_bytes() if (path.parent / name).exists() else b""
        assert SECRET.encode() not in stored
        assert json.dumps(SECRET).encode() not in stored  # nor JSON-escaped
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- filters, sandbox tasks ---------------------------------------------------------------


def test_filters_since_search_and_state(history: History, monkeypatch: pytest.MonkeyPatch) -> None:
    import time as clock

    for when, task_id, prompt in (
        (100.0, "task_old", "a red fox"),
        (200.0, "task_mid", "an owl, 100% cotton"),
        (300.0, "task_new", "A Red Panda"),
    ):
        monkeypatch.setattr(clock, "time", lambda when=when: when)
        history.record_submission(
            task_id, base_url=BASE, prompt=prompt, fields={}, idempotency_key=task_id
        )
    monkeypatch.undo()
    history.update("task_mid", state="failed")

    def ids(**filters: object) -> list[str | None]:
        return [r.task_id for r in history.list(**filters)]  # type: ignore[arg-type]

    assert ids(since=200.0) == ["task_new", "task_mid"]
    assert ids(search="red") == ["task_new", "task_old"]  # any case
    assert ids(search="100%") == ["task_mid"]
    assert ids(search="0%") == ["task_mid"]
    assert ids(search="d_f") == []  # _ and % are themselves, not wildcards
    assert ids(states=["failed"]) == ["task_mid"]
    assert ids(states=["submitted", "failed"], since=150.0, search="o") == ["task_mid"]
    assert ids(states=["submitted"], limit=1) == ["task_new"]


def test_forget_sandbox_removes_only_tasks_sent_to_loopback(history: History) -> None:
    submit(history, "task_real")
    submit(history, "task_sandbox", base_url=SANDBOX)
    submit(history, "task_local", base_url="http://localhost:9")
    submit(history, "task_v6", base_url="http://[::1]:8787")

    records = {r.task_id: r.sandbox for r in history.list()}
    assert records == {
        "task_real": False,
        "task_sandbox": True,
        "task_local": True,
        "task_v6": True,
    }
    assert history.forget_sandbox() == 3
    assert [r.task_id for r in history.list()] == ["task_real"]
    assert history.forget_sandbox() == 0


# -- waiting for a lock, a newer file, hostile rows ------------------------------------------


def test_waiting_for_a_lock_ends_with_the_deadline(path: Path) -> None:
    from apimart_cli.deadline import Deadline

    clock = FakeClock(0.0)
    with History.open(path, deadline=Deadline.after(2.0, clock=clock)) as history:

        def busy_ms() -> int:
            return int(history._connection().execute("PRAGMA busy_timeout").fetchone()[0])

        assert busy_ms() == 2000
        clock.time = 1.5
        assert busy_ms() == 500
        clock.time = 99.0
        assert busy_ms() == 500  # at least half a second, to let a brief lock pass
    with History.open(path) as history:
        assert history._connection().execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    with History.open(path, on_failure=print) as mirror:  # status: its answers come first
        assert mirror._connection().execute("PRAGMA busy_timeout").fetchone()[0] == 2_000


def test_a_failed_update_of_a_mirror_is_told_once_and_not_raised(path: Path) -> None:
    import sqlite3

    from apimart_cli.deadline import Deadline

    with History.open(path) as history:
        history.record_submission(
            "task_1", base_url=BASE, prompt="p", fields={}, idempotency_key="k"
        )
    failures: list[HistoryError] = []
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for as long as it likes
    try:
        deadline = Deadline.after(0.0)
        with History.open(path, deadline=deadline, on_failure=failures.append) as history:
            history.update("task_1", state="completed")
            history.update("task_1", state="failed")
        with History.open(path, deadline=deadline) as history, pytest.raises(HistoryError):
            history.update("task_1", state="completed")
    finally:
        holder.rollback()
        holder.close()
    assert len(failures) == 1 and "locked" in failures[0].message


def test_an_update_that_changes_nothing_writes_nothing(path: Path) -> None:
    # `status` asked again, a poll of a task as it was: not even another process's
    # write lock holds them up, and the record is as it was.
    import sqlite3

    from apimart_cli.deadline import Deadline

    done = {"state": "completed", "cost": 0.05, "images": 1, "expires_at": LATER}
    timed = {"estimated_time": 8.0, "actual_time": 7.5}
    with History.open(path) as history:
        submit(history, "task_1")
        submit(history, "task_2")
        history.update("task_1", files=["a.png"], **done, **timed)
        history.update("task_2", state="failed", error="moderation")
        before = history.list()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing, for as long as it likes
    try:
        with History.open(path, deadline=Deadline.after(0.0)) as history:
            history.update("task_1", files=["a.png"], **done, **timed)
            history.update("task_1", state="completed")  # what is not given is left as it is
            history.update("task_2", state="failed", error="moderation")
            history.update("task_3", state="failed")  # not in the history
            assert history.list() == before
            with pytest.raises(HistoryError, match="locked"):  # a change is written
                history.update("task_1", cost=0.06)
    finally:
        holder.rollback()
        holder.close()


def test_a_history_from_a_newer_version_is_refused_naming_its_version(path: Path) -> None:
    import sqlite3

    with History.open(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(HistoryError) as caught:
        History.open(path)
    assert "newer version of apimart (its format is 99;" in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE


HOSTILE_ROWS = [
    {"fields": "not json", "files": "5"},
    {"fields": "[1, 2]", "files": '{"a": 1}', "created_at": 1e300, "updated_at": -1e300},
    {"fields": '{"size": NaN}', "files": '["a.png", 5, null]', "cost": "free", "images": "x"},
    {"fields": '{"a": ' + "[" * 5_000 + "]" * 5_000 + "}", "files": "[" * 5_000},
    {"task_id": 7, "prompt": 8, "state": 9, "expires_at": "soon", "saved_at": 1e300},
]


@pytest.mark.parametrize("row", HOSTILE_ROWS)
def test_hostile_values_in_a_row_are_read_as_absent(path: Path, row: dict[str, object]) -> None:
    import sqlite3

    with History.open(path) as history:
        history.record_submission(
            "task_1", base_url=BASE, prompt="p", fields={"size": "1:1"}, idempotency_key="k"
        )
    with sqlite3.connect(path) as conn:
        for column, value in row.items():
            conn.execute(f"UPDATE tasks SET {column} = ?", (value,))  # noqa: S608
    conn.close()

    with History.open(path) as history:
        [record] = history.list()
        history.update(record.task_id or "task_1", state="completed", files=["b.png"])
        history.learned()
    assert isinstance(record.fields, dict)
    assert all(isinstance(name, str) for name in record.files)
    assert 0 <= record.created_at <= 253402300799
    assert record.cost is None or isinstance(record.cost, float)


@pytest.mark.parametrize(
    "body", ["[" * 5000 + "]" * 5000, 5, b"\x00\xff", "[1, 2]"], ids=["deep", "int", "blob", "list"]
)
def test_a_bound_body_that_cannot_be_read_is_none_never_an_error(path: Path, body: object) -> None:
    import sqlite3

    with History.open(path) as history:
        history.record_sending(
            base_url=BASE, prompt="p", fields={}, idempotency_key="k", body={"prompt": "p"}
        )
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tasks SET body = ?", (body,))
    conn.close()

    with History.open(path) as history:
        assert history.bound_body("k") is None


def test_a_records_kind_comes_from_its_operation_or_its_saved_files() -> None:
    from apimart_cli.history import TaskRecord

    def record(fields: dict[str, object], files: tuple[str, ...] = ()) -> TaskRecord:
        return TaskRecord(
            "task_1", 0.0, 0.0, "https://api.test", "p", fields, "k", "completed", None, files, None
        )

    video = record({"model": "veo", "operation": "video_generation", "duration": 8})
    assert (video.kind, video.duration) == ("video", 8.0)
    # A model with no schema whose result held a video: its file says so.
    assert record({"model": "m"}, ("/out/task_1_0.MP4",)).kind == "video"
    image = record({"model": "gpt-image-2", "duration": 8}, ("/out/task_1_0.png",))
    assert (image.kind, image.duration) == ("image", None)
    assert record({"operation": "video_generation", "duration": True}).duration is None
