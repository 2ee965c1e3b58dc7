"""Waiting for many tasks at once, on a fake clock: no test ever really waits."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from apimart_cli.errors import ApimartError, ExitCode, RateLimitedError, ServiceError, TaskError
from apimart_cli.polling import (
    GUESS,
    LEARNED,
    PACE,
    InFlight,
    Learned,
    Poller,
    Schedule,
    Track,
    Window,
    forecast,
    next_delay,
    progress_window,
    spread,
)
from apimart_cli.tasks import Task
from tests.helpers.clocks import FakeClock
from tests.helpers.polling_sim import SimTask, simulate

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


WALL_NOW = 1_800_000_000.0  # the wall clock when the fake clock starts


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


# --- forecasting rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        ([0.0, -1.0], None),  # nothing usable
        ([0.5], (0.45, 0.55)),
        ([0.5, 0.6, 0.4], (0.36, 0.66)),
        # The outer tenth on each side is left out: one odd task does not widen it.
        ([0.5] * 9 + [3.0, 0.1], (0.45, 0.55)),
    ],
)
def test_spread(values: list[float], expected: tuple[float, float] | None) -> None:
    result = spread(values)
    assert result == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        # 10 points a second, known within one point: 50 points left take 4.9 to 5.6 s.
        ((0.0, 10), (4.0, 50), (4.0 + 49 / 10.25, 4.0 + 50 / 9.75)),
        ((2.0, 20), (3.0, 40), (3.0 + 59 / 21, 3.0 + 60 / 19)),
        ((0.0, 10), (1.0, 11), None),  # one point is no pace
        ((0.0, 10), (1.0, 10), None),
        ((1.0, 10), (1.0, 50), None),  # no time between them
    ],
)
def test_progress_window(
    first: tuple[float, int], last: tuple[float, int], expected: tuple[float, float] | None
) -> None:
    window = progress_window(first, last)
    if expected is None:
        assert window is None
    else:
        assert window is not None and window.source == PACE
        assert (window.earliest, window.latest) == pytest.approx(expected)


def tracked(
    *,
    seen: float = 100.0,
    started: float | None = None,
    estimate: float | None = None,
    **kw: object,
) -> Track:
    track = Track(seen, started=started)
    track.estimate = estimate
    for name, value in kw.items():
        setattr(track, name, value)
    return track


@pytest.mark.parametrize(
    ("track", "ratios", "durations", "expected"),
    [
        # Nothing known: no forecast.
        (tracked(), None, None, None),
        # An estimate, corrected by what estimates turned out to be.
        (tracked(started=90, estimate=20), (0.5, 0.6), None, (100.0, 102.0, LEARNED)),
        (tracked(started=90, estimate=20), None, None, (95.0, 140.0, GUESS)),
        # `created` puts the start within a second.
        (tracked(start_lo=90, start_hi=91, estimate=10), (1.0, 1.0), None, (100.0, 101.0, LEARNED)),
        # No estimate: how long tasks of its kind took.
        (tracked(started=90), None, (20.0, 30.0), (110.0, 120.0, LEARNED)),
        # Progress beats both.
        (
            tracked(started=90, estimate=200, first=(100.0, 10), last=(104.0, 50)),
            None,
            (1.0, 2.0),
            (104 + 49 / 10.25, 104 + 50 / 9.75, PACE),
        ),
        # Progress too slight to show a pace: the estimate still counts.
        (
            tracked(started=90, estimate=20, first=(100.0, 10), last=(101.0, 11)),
            (1.0, 1.0),
            None,
            (110.0, 110.0, LEARNED),
        ),
        # Without a known start, it started by the time it was added.
        (tracked(seen=100, estimate=10), (1.0, 2.0), None, (110.0, 120.0, LEARNED)),
    ],
)
def test_forecast(
    track: Track,
    ratios: tuple[float, float] | None,
    durations: tuple[float, float] | None,
    expected: tuple[float, float, str] | None,
) -> None:
    window = forecast(track, ratios, durations)
    if expected is None:
        assert window is None
    else:
        assert window is not None
        assert (window.earliest, window.latest) == pytest.approx(expected[:2])
        assert window.source == expected[2]


@pytest.mark.parametrize(
    ("track", "now", "window", "lead", "expected"),
    [
        # Nothing known: half its age, at least 0.25 s, the first time at most --interval.
        (tracked(started=90, polls=1), 100.0, None, 0.0, 2.0),
        (tracked(started=90, polls=3), 100.0, None, 0.0, 5.0),
        (tracked(started=99.9, polls=3), 100.0, None, 0.0, 0.25),
        (tracked(started=0, polls=3), 100.0, None, 0.0, 10.0),
        # A forecast from an estimate: aimed at its earliest moment, one tenth of the
        # duration after it at most; never later than twice its age.
        (tracked(started=95, polls=2), 100.0, Window(104.0, 200.0), 0.0, 4.9),
        (tracked(started=90, polls=2), 100.0, Window(130.0, 200.0), 0.0, 10.0),
        (tracked(started=98, polls=2), 100.0, Window(110.0, 200.0), 0.0, 2.0),
        # A poll is seen `lead` after it is sent.
        (tracked(started=95, polls=2), 100.0, Window(104.0, 200.0), 0.2, 4.7),
        # Inside the window: every tenth of the duration, or sooner at its end.
        (tracked(started=90, polls=4), 100.0, Window(99.0, 200.0), 0.0, 1.0),
        (tracked(started=90, polls=4), 100.0, Window(99.0, 100.4), 0.0, 0.4),
        (tracked(started=99, polls=4), 100.0, Window(99.5, 100.1), 0.0, 0.25),  # at least 0.25
        # Overdue: every tenth of its age.
        (tracked(started=50, polls=4), 100.0, Window(90.0, 95.0), 0.0, 5.0),
        # Learned from earlier tasks: trusted as far ahead as it says.
        (tracked(started=60, polls=1), 100.0, Window(145.0, 155.0, LEARNED), 0.0, 53.5),
        # Paced by progress and sharp: just after its latest moment, however far.
        (tracked(started=80, polls=3), 100.0, Window(105.0, 105.5, PACE), 0.0, 5.5),
        (tracked(started=80, polls=3), 100.0, Window(115.0, 115.5, PACE), 0.0, 15.5),
        # Paced but vague: a closer look three quarters of the way first.
        (tracked(started=80, polls=3), 100.0, Window(108.0, 112.0, PACE), 0.0, 6.0),
        # ...unless it is too near for a look in between.
        (tracked(started=80, polls=3), 100.0, Window(100.3, 103.0, PACE), 0.0, 0.909),
    ],
)
def test_next_delay(
    track: Track, now: float, window: Window | None, lead: float, expected: float
) -> None:
    assert next_delay(track, now, window, lead=lead) == pytest.approx(expected)


def test_inflight_grows_while_polls_wait_and_halves_on_429() -> None:
    limit = InFlight(ceiling=12, start=4)
    assert limit.limit == 4
    limit.count = 4
    assert not limit.free(0.0)
    limit.done(waiting=False)  # nothing waits: no need for more
    assert limit.limit == 4
    for _ in range(3):
        limit.count += 1
        limit.done(waiting=True)
    assert limit.limit == 7
    limit.rate_limited(10.0, retry_after=2.0)
    assert limit.limit == 3
    limit.rate_limited(10.5, retry_after=None)  # the same pause: not halved again
    assert limit.limit == 3
    limit.count = 2
    assert not limit.free(11.9) and limit.free(12.0)
    for _ in range(50):
        limit.count += 1
        limit.done(waiting=True)
    assert limit.limit == 12  # recovered, up to the ceiling


def test_inflight_doubles_each_round_trip_until_the_first_429_then_grows_slowly() -> None:
    # Growing by one for every quarter of the limit, it was about 40 when 100 tasks
    # ended together, and their last polls left 0.2-0.3 s after they were due.
    limit = InFlight(ceiling=64, start=8)

    def round_trip() -> None:  # every slot in use, and more polls waiting
        for _ in range(limit.limit):
            limit.count += 1
            limit.done(waiting=True)

    round_trip()
    assert limit.limit == 16
    round_trip()
    assert limit.limit == 32
    limit.rate_limited(0.0, retry_after=1.0)
    assert limit.limit == 16
    round_trip()
    assert limit.limit == 20  # one for every quarter of the limit now
    limit.rate_limited(5.0, retry_after=1.0)
    assert limit.limit == 10
    round_trip()
    assert limit.limit == 14  # not 20: the slow start is over for good


def test_schedule_polls_each_id_once() -> None:
    schedule = Schedule()
    assert schedule.add("a", 0.0)
    assert not schedule.add("a", 0.0)
    assert schedule.take(0.0) == ["a"]
    assert schedule.replied("a", task("a", "completed"), 0.1) is None
    assert not schedule.add("a", 1.0)  # ended: not polled again
    assert schedule.take(5.0) == []


def test_schedule_learns_from_completed_tasks() -> None:
    schedule = Schedule(Learned(ratios=(0.5, 0.5), durations={"1:1/1k": (50.0,) * 3}))
    assert schedule.ratios() is None  # two are not enough to go by
    assert schedule.durations("1:1/1k") == pytest.approx((45.0, 55.0))
    schedule.add("a", 0.0, kind="2:3/2k")
    schedule.take(0.0)
    done = Task("a", "completed", 100, 100.0, raw={"actual_time": 52})
    schedule.replied("a", done, 1.0)
    assert schedule.ratios() == pytest.approx((0.45, 0.572))
    schedule = Schedule()
    for n in range(3):
        schedule.add(f"t{n}", 0.0, kind="2:3/2k")
        schedule.take(0.0)
        schedule.replied(f"t{n}", Task(f"t{n}", "completed", raw={"actual_time": 30}), 1.0)
    assert schedule.durations("2:3/2k") == pytest.approx((27.0, 33.0))


# --- the whole schedule, simulated -------------------------------------------------------


def scenario(
    count: int, durations: tuple[float, float], factor: float | None, spread_over: float
) -> list[SimTask]:
    rng = random.Random(7)
    tasks = []
    for n in range(count):
        duration = rng.uniform(*durations)
        estimate = None if factor is None else duration * factor
        tasks.append(SimTask(f"t{n}", rng.uniform(0, spread_over), duration, estimate))
    return tasks


@pytest.mark.parametrize("factor", [2.0, 0.5, None, 1.0], ids=["2x", "half", "none", "right"])
@pytest.mark.parametrize(
    ("count", "durations", "spread_over", "latency", "most_ratio"),
    [
        (100, (8.0, 8.0), 0.8, 0.25, 1.03),  # the benchmark's
        (300, (20.0, 30.0), 5.0, 0.25, 1.03),
        (20, (45.0, 60.0), 2.0, 0.5, 1.03),  # the real service's
        (20, (2.0, 4.0), 0.0, 0.05, 1.10),
    ],
)
def test_simulated_waits_notice_each_end_soon_with_few_polls(
    factor: float | None,
    count: int,
    durations: tuple[float, float],
    spread_over: float,
    latency: float,
    most_ratio: float,
) -> None:
    tasks = scenario(count, durations, factor, spread_over)
    result = simulate(tasks, latency=latency, started=spread_over + 0.3, max_in_flight=64)
    assert all(task.noticed is not None for task in tasks)
    assert result.most_polls <= 12
    assert result.worst_lateness_share() <= 0.1
    assert result.ratio <= most_ratio


def test_a_real_service_that_sees_sooner_is_polled_as_well() -> None:
    """A server that reads the task half way through the round trip, not at its end."""
    tasks = scenario(100, (8.0, 8.0), 2.0, 0.8)
    result = simulate(tasks, latency=0.25, started=1.1, seen_at=0.5, max_in_flight=64)
    assert result.most_polls <= 12
    assert result.worst_lateness_share() <= 0.1


def test_learned_ratios_save_polls() -> None:
    """History says estimates are twice too long: fewer polls go before the ends."""
    blind = simulate(scenario(50, (45.0, 60.0), 2.0, 2.0), latency=0.5, started=2.5)
    learned = Learned(ratios=(0.5,) * 20)
    tasks = scenario(50, (45.0, 60.0), 2.0, 2.0)
    taught = simulate(tasks, latency=0.5, started=2.5, learned=learned)
    assert taught.polls < blind.polls
    assert taught.worst_lateness_share() <= 0.1


@pytest.mark.parametrize(("rate_limit", "most_ratio"), [(100, 1.05), (40, 1.3)])
def test_polls_answered_429_slow_down_and_every_task_still_ends(
    rate_limit: float, most_ratio: float
) -> None:
    """The service allows `rate_limit` polls a second: the first round of 300 is too much."""
    tasks = scenario(300, (20.0, 30.0), 2.0, 5.0)
    result = simulate(tasks, latency=0.25, started=5.3, max_in_flight=64, rate_limit=rate_limit)
    assert result.rate_limited > 0
    assert all(task.noticed is not None for task in tasks)
    assert result.ratio <= most_ratio
    assert result.rate_limited < result.polls / 4


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


def test_a_task_with_no_hints_is_polled_at_half_its_age(clock: FakeClock) -> None:
    created = WALL_NOW - 8  # seconds ago, by the server's clock
    script: Script = [task("a", created=created)] * 6 + [task("a", "completed")]
    fetch = FakeFetch({"a": script}, clock)
    poll, _, _ = poller(fetch, clock, interval=2.0, wall=lambda: WALL_NOW + clock.time - 1000)
    poll.add("a")
    poll.run()
    start = fetch.calls["a"][0]
    gaps = [round(t - start, 3) for t in fetch.calls["a"]]
    # Created 7 to 8 s before: at most --interval (2 s) the first time, then half its
    # age (9.5 s, then 14.25 s), 10 s at most.
    assert gaps == [0.0, 2.0, 6.75, 13.875, 23.875, 33.875, 43.875]


@pytest.mark.parametrize("known", [True, False], ids=["described", "unknown"])
def test_an_id_the_history_describes_is_aimed_at_its_kinds_durations(known: bool) -> None:
    """Submitted 40 s ago, of a kind that takes about 60 s, no estimate: from what the
    history says the poller aims at its end; knowing nothing, it polls as it ages."""
    clock = FakeClock(1000.0)
    added_at = clock.time
    done_at = added_at + 20.0
    polled: list[float] = []
    described: list[str] = []

    def fetch(task_id: str) -> Task:
        polled.append(clock.now() - added_at)
        return task(task_id, "completed" if clock.now() >= done_at else "processing")

    def describe(task_id: str) -> tuple[float | None, str | None]:
        described.append(task_id)
        return WALL_NOW - 40.0, "2:3/2k"

    poll, _, _ = poller(
        fetch,
        clock,
        wall=lambda: WALL_NOW + clock.time - 1000,
        learned=Learned(durations={"2:3/2k": (58.0, 60.0, 62.0)}),
        describe=describe if known else None,
    )
    poll.add("a")
    poll.run()
    late = polled[-1] - (done_at - added_at)
    if known:
        assert described == ["a"]
        assert len(polled) <= 4 and late <= 6.0  # a tenth of its 60 s
    else:
        assert len(polled) > 4


def test_polls_rate_limited_to_the_end_are_polled_again(clock: FakeClock) -> None:
    limited = RateLimitedError(
        "The server answered 429: slow down", status_code=429, retry_after=3.0
    )
    scripts: dict[str, Script] = {
        "a": [limited, task("a", "completed")],
        "b": [task("b", "completed")],
    }
    fetch = FakeFetch(scripts, clock)
    poll, _, _ = poller(fetch, clock)
    poll.add("a")
    poll.add("b")
    poll.rate_limited(None)  # the client's hook: a 429 it retried by itself
    outcome = poll.run()
    assert outcome.errors == {}
    assert sorted(outcome.finished) == ["a", "b"]
    assert outcome.rate_limited == 1
    assert fetch.calls["a"][1] - fetch.calls["a"][0] >= 3.0


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


def test_ids_arriving_faster_than_polls_are_all_polled_once(clock: FakeClock) -> None:
    """Standard input at any rate: every id is taken in as it comes, none twice."""
    ids = [f"task_{n:05d}" for n in range(3000)]
    fetch = FakeFetch({task_id: [task(task_id, "completed")] for task_id in ids}, clock)
    poll, _, finished = poller(fetch, clock)
    poll.open_input()

    def feed() -> None:
        for task_id in ids + ids[:100]:  # as fast as a thread can, some twice
            poll.add(task_id)
        poll.close_input()

    feeder = threading.Thread(target=feed)
    feeder.start()
    outcome = poll.run()
    feeder.join()
    assert sorted(outcome.finished) == ids
    assert len(finished) == len(ids)
    assert all(len(fetch.calls[task_id]) == 1 for task_id in ids)
    assert poll.unfinished() == []


def test_a_schedule_forgets_what_it_no_longer_needs() -> None:
    """Memory: what a finished task leaves behind is its id, nothing of its forecast."""
    schedule = Schedule()
    for n in range(1000):
        schedule.add(f"t{n}", 0.0)
    taken = schedule.take(0.0)
    while taken:
        for task_id in taken:
            schedule.replied(task_id, task(task_id, "completed"), 0.1)
        taken = schedule.take(0.2)
    assert schedule.tracks == {} and schedule.sent == {}
    assert len(schedule.ended) == 1000
