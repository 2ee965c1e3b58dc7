"""Waiting for many tasks at once, on a fake clock: no test ever really waits."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from apimart_cli.errors import ApimartError, ExitCode, ServiceError, TaskError
from apimart_cli.models import Task
from apimart_cli.polling import Event, Poller, next_delay


class FakeClock:
    """Fake time that moves only when the loop would wait with nothing to do."""

    def __init__(self) -> None:
        self.time = 1000.0

    def now(self) -> float:
        return self.time

    def wait(self, events: queue.Queue[Event], timeout: float | None) -> Event | None:
        if timeout is None:  # only a poll or an id can wake the loop: they come quickly
            return events.get(timeout=10)
        try:
            return events.get(timeout=0.05)
        except queue.Empty:
            self.time += timeout
            return None


Script = Sequence["Task | ApimartError"]


@dataclass
class FakeFetch:
    """Replies scripted per task id (the last one repeats); counts concurrent calls."""

    scripts: dict[str, Script]
    clock: FakeClock
    block: float = 0.0
    calls: dict[str, list[float]] = field(default_factory=dict)
    active: int = 0
    most_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, task_id: str) -> Task:
        with self.lock:
            times = self.calls.setdefault(task_id, [])
            times.append(self.clock.now())
            script = self.scripts[task_id]
            reply = script[min(len(times), len(script)) - 1]
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            if self.block:
                time.sleep(self.block)
            if isinstance(reply, ApimartError):
                raise reply
            return reply
        finally:
            with self.lock:
                self.active -= 1


def task(
    task_id: str,
    status: str = "processing",
    *,
    progress: int | None = None,
    estimated_time: float | None = None,
    created: float | None = None,
) -> Task:
    return Task(
        task_id,
        status,
        progress=progress,
        estimated_time=estimated_time,
        created=None if created is None else int(created),
    )


def poller(
    fetch: Callable[[str], Task], clock: FakeClock, **options: object
) -> tuple[Poller, list[Task], list[Task]]:
    updates: list[Task] = []
    finished: list[Task] = []
    poll = Poller(
        fetch,
        clock=clock,
        on_update=updates.append,
        on_finished=finished.append,
        **options,  # type: ignore[arg-type]
    )
    return poll, updates, finished


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- next_delay --------------------------------------------------------------------


NOW = 1_000_000.0  # the wall clock in these tests


@pytest.mark.parametrize(
    ("current", "previous", "expected"),
    [
        # No hints: the base, then x1.5 up to 10 s.
        (task("t"), 0.0, 2.0),
        (task("t"), 2.0, 3.0),
        (task("t"), 3.0, 4.5),
        (task("t"), 4.5, 6.75),
        (task("t"), 6.75, 10.0),
        (task("t"), 10.0, 10.0),
        (task("t"), 0.5, 3.0),  # never below the base once backing off
        (task("t", progress=50), 2.0, 3.0),  # progress alone is no hint
        (task("t", estimated_time=100), 2.0, 3.0),  # nor a time without a start
        (task("t", progress=30, estimated_time=0), 6.0, 9.0),
        # Processing with progress: just past the remaining share of the estimate.
        (task("t", progress=50, estimated_time=20), 2.0, 10.0),  # at most 10 s ahead
        (task("t", progress=80, estimated_time=20), 5.0, 4.25),
        (task("t", progress=90, estimated_time=8), 2.0, 1.05),
        (task("t", progress=99, estimated_time=20), 1.0, 0.45),
        # Before progress, from when the task was created (server time).
        (task("t", "submitted", progress=0, estimated_time=8, created=NOW - 1), 0.0, 7.25),
        (task("t", "submitted", progress=0, estimated_time=100, created=NOW), 0.0, 10.0),
        # Overdue: soon, backing off the later it is, never beyond the base.
        (task("t", progress=100, estimated_time=20), 0.25, 0.25),
        (task("t", "submitted", estimated_time=8, created=NOW - 9), 5.0, 0.25),
        (task("t", "submitted", estimated_time=8, created=NOW - 12), 5.0, 1.0),
        (task("t", "submitted", estimated_time=8, created=NOW - 60), 5.0, 2.0),
    ],
)
def test_next_delay(current: Task, previous: float, expected: float) -> None:
    assert next_delay(current, previous, wall_now=NOW) == pytest.approx(expected)


def test_next_delay_with_another_base() -> None:
    assert next_delay(task("t"), 0.0, base=0.5) == 0.5
    assert next_delay(task("t"), 0.5, base=0.5) == 0.75
    late = task("t", "submitted", estimated_time=8, created=NOW - 60)
    assert next_delay(late, 4.0, base=0.5, wall_now=NOW) == 0.5


# --- Poller --------------------------------------------------------------------------


def test_many_tasks_all_finish(clock: FakeClock) -> None:
    ids = [f"task_{n:03d}" for n in range(60)]
    scripts: dict[str, Script] = {
        task_id: [task(task_id, "submitted"), task(task_id), task(task_id, "completed")]
        for task_id in ids
    }
    fetch = FakeFetch(scripts, clock)
    poll, updates, finished = poller(fetch, clock, timeout=600)
    for task_id in ids:
        poll.add(task_id)
    outcome = poll.run()
    assert not outcome.timed_out
    assert outcome.unfinished == []
    assert outcome.errors == {}
    assert sorted(outcome.finished) == ids
    assert sorted(t.task_id for t in finished) == ids  # each once
    assert len(updates) == 3 * len(ids)
    assert all(len(fetch.calls[task_id]) == 3 for task_id in ids)


def test_polls_follow_the_backoff_schedule(clock: FakeClock) -> None:
    script: Script = [task("a")] * 4 + [task("a", "completed")]
    fetch = FakeFetch({"a": script}, clock)
    poll, _, _ = poller(fetch, clock, interval=2.0)
    poll.add("a")
    poll.run()
    start = fetch.calls["a"][0]
    gaps = [round(t - start, 6) for t in fetch.calls["a"]]
    assert gaps == [0.0, 2.0, 5.0, 9.5, 16.25]


@pytest.mark.parametrize("limit", [1, 3, 8])
def test_at_most_max_in_flight_fetches_run_at_once(clock: FakeClock, limit: int) -> None:
    ids = [f"task_{n}" for n in range(24)]
    fetch = FakeFetch(
        {task_id: [task(task_id), task(task_id, "completed")] for task_id in ids},
        clock,
        block=0.01,
    )
    poll, _, _ = poller(fetch, clock, max_in_flight=limit)
    for task_id in ids:
        poll.add(task_id)
    outcome = poll.run()
    assert sorted(outcome.finished) == sorted(ids)
    assert fetch.most_active == limit


def test_ids_added_while_running(clock: FakeClock) -> None:
    ids = [f"task_{n}" for n in range(10)]
    fetch = FakeFetch(
        {task_id: [task(task_id), task(task_id, "completed")] for task_id in ids}, clock
    )
    poll, _, finished = poller(fetch, clock)
    poll.open_input()

    def feed() -> None:  # like lines arriving on standard input
        for task_id in ids:
            poll.add(task_id)
            time.sleep(0.002)
        poll.close_input()

    feeder = threading.Thread(target=feed)
    feeder.start()
    outcome = poll.run()
    feeder.join()
    assert sorted(outcome.finished) == ids
    assert len(finished) == 10


def test_open_input_with_nothing_added_ends_when_closed(clock: FakeClock) -> None:
    poll, _, _ = poller(FakeFetch({}, clock), clock)
    poll.open_input()
    threading.Timer(0.01, poll.close_input).start()
    outcome = poll.run()
    assert outcome.finished == {} and outcome.unfinished == [] and not outcome.timed_out


def test_no_ids_ends_at_once(clock: FakeClock) -> None:
    poll, _, _ = poller(FakeFetch({}, clock), clock, timeout=10)
    outcome = poll.run()
    assert outcome.finished == {} and not outcome.timed_out


def test_duplicate_ids_are_polled_once(clock: FakeClock) -> None:
    fetch = FakeFetch(
        {"a": [task("a", "completed")], "b": [task("b"), task("b", "completed")]}, clock
    )
    poll, updates, finished = poller(fetch, clock)
    for task_id in ["a", "b", "a", "a", "b"]:
        poll.add(task_id)
    outcome = poll.run()
    assert len(fetch.calls["a"]) == 1
    assert len(fetch.calls["b"]) == 2
    assert [t.task_id for t in finished].count("a") == 1
    assert len(updates) == 3
    assert sorted(outcome.finished) == ["a", "b"]


def test_timeout_lists_the_unfinished(clock: FakeClock) -> None:
    fetch = FakeFetch(
        {
            "a": [task("a"), task("a", "completed")],
            "b": [task("b")],
            "c": [task("c", "submitted")],
        },
        clock,
    )
    poll, _, finished = poller(fetch, clock, timeout=30)
    start = clock.now()
    for task_id in "abc":
        poll.add(task_id)
    outcome = poll.run()
    assert outcome.timed_out
    assert list(outcome.finished) == ["a"]
    assert outcome.unfinished == ["b", "c"]
    assert poll.unfinished() == ["b", "c"]
    assert [t.task_id for t in finished] == ["a"]
    assert clock.now() == pytest.approx(start + 30)  # no wait went past the deadline
    assert max(fetch.calls["b"]) <= start + 30


def test_timeout_lists_ids_not_yet_polled(clock: FakeClock) -> None:
    poll, _, _ = poller(FakeFetch({}, clock), clock, timeout=0)
    for task_id in ["a", "b", "a"]:
        poll.add(task_id)
    outcome = poll.run()
    assert outcome.timed_out
    assert outcome.unfinished == ["a", "b"]


def test_interrupted_run_lists_ids_that_arrived_meanwhile(clock: FakeClock) -> None:
    """After Ctrl-C, `unfinished()` names every id given, even one not yet scheduled."""
    fetch = FakeFetch({"a": [task("a")], "b": [task("b", "completed")]}, clock)

    def interrupt(update: Task) -> None:
        poll.add("late")  # an id read from standard input just before Ctrl-C
        raise KeyboardInterrupt

    poll = Poller(fetch, clock=clock, on_update=interrupt)
    poll.open_input()
    poll.add("a")
    poll.add("b")
    with pytest.raises(KeyboardInterrupt):
        poll.run()
    assert "late" in poll.unfinished()
    assert "a" in poll.unfinished()


def test_fetch_errors_are_recorded_and_the_others_go_on(clock: FakeClock) -> None:
    gone = TaskError("Task b does not exist (404).")
    down = ServiceError("The service failed.")
    fetch = FakeFetch(
        {"a": [task("a"), task("a", "completed")], "b": [gone], "c": [task("c"), down]}, clock
    )
    poll, _, finished = poller(fetch, clock)
    for task_id in "abc":
        poll.add(task_id)
    outcome = poll.run()
    assert list(outcome.finished) == ["a"]
    assert outcome.errors == {"b": gone, "c": down}
    assert outcome.errors["c"].exit_code == ExitCode.SERVICE
    assert outcome.unfinished == []
    assert not outcome.timed_out
    assert len(fetch.calls["b"]) == 1
    assert [t.task_id for t in finished] == ["a"]


def test_once_polls_each_task_once(clock: FakeClock) -> None:
    fetch = FakeFetch(
        {
            "done": [task("done", "completed")],
            "bad": [task("bad", "failed")],
            "busy": [task("busy", progress=40)],
            "new": [task("new", "submitted")],
        },
        clock,
    )
    poll, updates, finished = poller(fetch, clock, once=True)
    for task_id in ["done", "bad", "busy", "new"]:
        poll.add(task_id)
    outcome = poll.run()
    assert sorted(outcome.finished) == ["bad", "done"]
    assert sorted(outcome.errors) == ["busy", "new"]
    busy = outcome.errors["busy"]
    assert isinstance(busy, TaskError)
    assert busy.exit_code == ExitCode.FAILED
    assert "busy is processing (40%), not completed" in busy.message
    assert busy.hint == "Wait for it with `apimart wait busy`."
    assert all(len(calls) == 1 for calls in fetch.calls.values())
    assert len(updates) == 4
    assert sorted(t.task_id for t in finished) == ["bad", "done"]


def test_callbacks(clock: FakeClock) -> None:
    fetch = FakeFetch(
        {
            "a": [task("a", "submitted"), task("a", progress=50), task("a", "completed")],
            "b": [task("b"), task("b", "cancelled")],
            "c": [task("c", "queued"), task("c", "failed")],  # an unknown state: still polled
        },
        clock,
    )
    poll, updates, finished = poller(fetch, clock)
    for task_id in "abc":
        poll.add(task_id)
    poll.run()
    by_task: dict[str, list[str]] = {}
    for update in updates:
        by_task.setdefault(update.task_id, []).append(update.status)
    assert by_task == {
        "a": ["submitted", "processing", "completed"],
        "b": ["processing", "cancelled"],
        "c": ["queued", "failed"],
    }
    assert sorted((t.task_id, t.status) for t in finished) == [
        ("a", "completed"),
        ("b", "cancelled"),
        ("c", "failed"),
    ]


def test_on_finished_runs_before_the_others_end(clock: FakeClock) -> None:
    fetch = FakeFetch(
        {
            "fast": [task("fast", "completed")],
            "slow": [task("slow")] * 5 + [task("slow", "completed")],
        },
        clock,
    )
    order: list[str] = []
    poll = Poller(
        fetch,
        clock=clock,
        on_update=lambda t: order.append(f"update {t.task_id}"),
        on_finished=lambda t: order.append(f"finished {t.task_id}"),
    )
    poll.add("fast")
    poll.add("slow")
    poll.run()
    assert order.index("finished fast") < order.index("update slow", 2)
    assert order[-1] == "finished slow"


def test_on_idle_is_called(clock: FakeClock) -> None:
    ticks: list[None] = []
    fetch = FakeFetch({"a": [task("a"), task("a", "completed")]}, clock)
    poll = Poller(fetch, clock=clock, on_idle=lambda: ticks.append(None))
    poll.add("a")
    poll.run()
    assert len(ticks) >= 2


def test_retries_cut_short_by_the_deadline_are_a_timeout(clock: FakeClock) -> None:
    from apimart_cli.errors import WaitTimeout

    fetch = FakeFetch({"a": [WaitTimeout("out of time")], "b": [task("b", "completed")]}, clock)
    poll, _, finished = poller(fetch, clock, timeout=60)
    poll.add("a")
    poll.add("b")
    outcome = poll.run()
    assert outcome.timed_out
    assert outcome.unfinished == ["a"]
    assert outcome.errors == {}
    assert [t.task_id for t in finished] == ["b"]
