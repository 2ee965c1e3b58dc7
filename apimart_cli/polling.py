"""Wait for many tasks at once.

Two parts. `Schedule` decides, without any I/O, when each task is next polled
and how many polls may be in flight: it forecasts when each task will end from
what is known (its progress, the service's `estimated_time` corrected by how
wrong such estimates have been, how long tasks of the same kind took) and aims
the next poll just after that moment. `Poller` runs it: one loop on the
calling thread owns the schedule; polls run on a small thread pool and report
back through one event queue, as do the ids that arrive on standard input while
the loop runs. The clock is injected, so tests never really wait.
"""

from __future__ import annotations

import heapq
import math
import queue
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from apimart_cli.constants import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_POLL_INTERVAL,
    MAX_POLL_INTERVAL,
    MIN_POLL_INTERVAL,
)
from apimart_cli.errors import (
    ApimartError,
    APIStatusError,
    NotCompleted,
    TaskError,
    WaitTimeout,
)
from apimart_cli.pacing import Aimd
from apimart_cli.tasks import Task
from apimart_cli.workers import WorkerPool, take

# A completion is noticed within this share of the task's duration.
NOTICE_SHARE = 0.1
# A forecast from progress narrower than this share of the duration is aimed at;
# a vaguer one is sharpened first by a poll this share of the way to it.
SHARP_SHARE = 0.03
PROBE_SHARE = 0.75
# Progress seen once tells the pace since the start only once this far along.
HALF_WAY = 50
# Actual / estimated time when nothing has been learned yet: the service has been
# seen to estimate twice too long, and nothing says it cannot be twice too short.
PRIOR_RATIOS = (0.25, 2.5)
# What is learned during a run is kept for this many recent tasks (of each kind).
LEARNED_SAMPLES = 64
# The first polls: this many at once, until polls wait for a free slot (then one
# more per success, up to the ceiling, until the first 429).
START_IN_FLIGHT = 8


# -- forecasting: when will a task end? (pure) ---------------------------------------


@dataclass(frozen=True)
class Learned:
    """What earlier tasks taught, given by the caller (the history's, for one).

    `ratios`: actual over estimated time of recently completed tasks.
    `durations`: seconds they took, by kind (`task_kind` of their size and resolution).
    """

    ratios: tuple[float, ...] = ()
    durations: Mapping[str, tuple[float, ...]] = field(default_factory=dict)


def task_kind(size: object, resolution: object) -> str:
    """Tasks of the same kind take about as long: the key for `Learned.durations`."""
    return f"{size or '1:1'}/{resolution or '1k'}"


def spread(values: Iterable[float]) -> tuple[float, float] | None:
    """The range most of `values` fall in (the 10th to the 90th percentile), widened 10%."""
    ordered = sorted(v for v in values if v > 0)
    if not ordered:
        return None
    cut = len(ordered) // 10
    return ordered[cut] * 0.9, ordered[-1 - cut] * 1.1


PACE = "pace"  # from the pace of its progress
LEARNED = "learned"  # from how long earlier tasks took, or how right their estimates were
GUESS = "guess"  # from the service's estimate alone, which may be far out

Sample = tuple[float, int]  # (when, progress): a poll's view of a processing task


class Window(NamedTuple):
    """When a task should end: not before `earliest`, by `latest`."""

    earliest: float
    latest: float
    source: str = GUESS  # PACE, LEARNED or GUESS: how far it can be trusted


class Track:
    """What is known of one task: when it started, its estimate, its progress seen."""

    __slots__ = ("estimate", "first", "kind", "last", "polls", "seen", "start_hi", "start_lo")

    def __init__(self, seen: float, kind: str | None = None, started: float | None = None):
        self.seen = seen  # when it was added (it existed by then)
        self.kind = kind
        self.start_lo = self.start_hi = started  # when it started, within these bounds
        self.estimate: float | None = None  # the service's estimated_time
        self.first: Sample | None = None  # the first and latest progress seen between 0 and 100
        self.last: Sample | None = None
        self.polls = 0

    @property
    def start(self) -> float:
        if self.start_lo is None or self.start_hi is None:
            return self.seen
        return (self.start_lo + self.start_hi) / 2

    def observe(self, task: Task, when: float, wall_offset: float) -> None:
        """Take in a reply that described the task as it was at `when`."""
        if task.estimated_time is not None and task.estimated_time > 0:
            self.estimate = task.estimated_time
        if task.created is not None and self.start_lo is None:
            # `created` is whole seconds of the server's clock: the start is within a second.
            created = task.created - wall_offset
            self.start_lo = min(created, self.seen)
            self.start_hi = min(created + 1, self.seen)
        if task.status == "processing" and task.progress is not None and 0 < task.progress < 100:
            sample = (when, task.progress)
            if self.first is None:
                self.first = sample
            elif task.progress > self.first[1] and when > self.first[0]:
                self.last = sample


def progress_window(first: Sample, last: Sample) -> Window | None:
    """When a task progressing from `first` to `last` ends, at the pace between them.

    Progress is a whole percentage, so each is up to one short of the truth: the
    pace is known within one point either way. None if that is no pace at all.
    """
    (t1, p1), (t2, p2) = first, last
    points = p2 - p1
    if points <= 1 or t2 <= t1:
        return None
    fastest, slowest = (points + 1) / (t2 - t1), (points - 1) / (t2 - t1)
    return Window(t2 + (99 - p2) / fastest, t2 + (100 - p2) / slowest, PACE)


def forecast(
    track: Track, ratios: tuple[float, float] | None, durations: tuple[float, float] | None
) -> Window | None:
    """The earliest and latest the task should end, or None if nothing says.

    The pace of its progress is the best guide; failing that, the service's
    estimate times what such estimates turned out to be (`ratios`; None: not
    known, so anything from a quarter to two and a half times it); failing
    that, how long tasks of its kind took (`durations`).
    """
    if track.first is not None and track.last is not None:
        window = progress_window(track.first, track.last)
        if window is not None:
            return window
    start_lo = track.start if track.start_lo is None else track.start_lo
    start_hi = track.start if track.start_hi is None else track.start_hi
    if track.first is not None and track.first[1] >= HALF_WAY and track.start_lo is not None:
        # Seen once, past half way, since a known start: its pace since then.
        when, progress = track.first
        slowest, fastest = progress / (when - start_lo), (progress + 1) / (when - start_hi)
        return Window(when + (99 - progress) / fastest, when + (100 - progress) / slowest, LEARNED)
    if track.estimate is not None:
        low, high = PRIOR_RATIOS if ratios is None else ratios
        source = GUESS if ratios is None else LEARNED
        return Window(start_lo + low * track.estimate, start_hi + high * track.estimate, source)
    if durations is not None:
        return Window(start_lo + durations[0], start_hi + durations[1], LEARNED)
    return None


def next_delay(
    track: Track,
    now: float,
    window: Window | None,
    *,
    lead: float = 0.0,
    first_interval: float = DEFAULT_POLL_INTERVAL,
) -> float:
    """Seconds until the next poll of an unfinished task.

    A poll sees the task about `lead` seconds after it is sent (half its round
    trip). Each poll is aimed at the first moment the task may have ended,
    looking again every tenth of its duration while it may end. On a mere
    guess, never later than twice its age so far nor than 10 s, and the
    first time not later than `first_interval`.
    """
    age = max(now - track.start, 0.0)
    latest = min(max(age, MIN_POLL_INTERVAL), MAX_POLL_INTERVAL)
    if track.polls <= 1:
        latest = min(latest, max(first_interval, MIN_POLL_INTERVAL))
    if window is None:  # nothing says when: look again at half its age (its pace shows)
        return min(max(age / 2, MIN_POLL_INTERVAL), latest)
    earliest, last, source = window
    paced = source == PACE
    if source != GUESS:
        latest = math.inf
    duration = max(earliest - track.start, age)
    # While it may end, look again every tenth of its duration; more often (down to
    # 3%) when the forecast is sharper: then a late end is a slight one.
    step = min(max(last - earliest, SHARP_SHARE * duration), NOTICE_SHARE * duration)
    if paced:
        step = SHARP_SHARE * duration
    seen = now + lead
    if paced and seen < earliest and last - earliest > SHARP_SHARE * duration:
        # Too vague to aim at: a closer look, while there is time, sharpens the pace.
        target = seen + (earliest - seen) * PROBE_SHARE
        if earliest - target < MIN_POLL_INTERVAL:
            target = min(last, earliest + step)
    elif seen < earliest:
        target = min(last, earliest + step)
    else:
        target = seen + step if seen >= last else min(last, seen + step)
    return min(max(target - seen, MIN_POLL_INTERVAL), latest)


# -- how many polls at once (pure) ---------------------------------------------------


class InFlight(Aimd):
    """How many polls may be in flight: more while polls wait for a free slot (doubling
    every round trip until the first 429, then four more every round trip), up to
    `ceiling`; halved by a 429, which also holds new polls back. So the pace follows
    the latency and the service's limit, and when many tasks end together their
    polls go when they are due."""

    def __init__(self, ceiling: int, start: int = START_IN_FLIGHT) -> None:
        super().__init__(ceiling, start=start, run=lambda limit: limit // 4, slow_start=True)

    def done(self, *, waiting: bool) -> None:
        """A poll came back; `waiting`: others are due and want its slot."""
        self.ended(success=waiting)


# -- the schedule (pure) -------------------------------------------------------------


class Schedule:
    """When each task is next polled, and which polls may go now. No I/O, no threads:
    the caller says what time it is, what came back, and sends what `take` returns."""

    def __init__(
        self,
        learned: Learned | None = None,
        *,
        first_interval: float = DEFAULT_POLL_INTERVAL,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        wall_offset: float = 0.0,
    ) -> None:
        learned = learned or Learned()
        self.first_interval = first_interval
        self.in_flight = InFlight(max_in_flight)
        self.wall_offset = wall_offset  # wall clock minus this clock (for `created`)
        self.latency = 0.0  # recent polls' round trip, seconds
        self.tracks: dict[str, Track] = {}
        self.sent: dict[str, float] = {}  # polls in flight: when each was sent
        self.ended: set[str] = set()  # tasks no longer polled (added again, they stay so)
        self._due: list[tuple[float, int, str]] = []  # (when, order, task id)
        self._order = 0
        self._ratios: deque[float] = deque(learned.ratios[-LEARNED_SAMPLES:], LEARNED_SAMPLES)
        self._durations = {
            kind: deque(values[-LEARNED_SAMPLES:], LEARNED_SAMPLES)
            for kind, values in learned.durations.items()
        }

    def add(
        self, task_id: str, now: float, *, started: float | None = None, kind: str | None = None
    ) -> bool:
        """Poll a new task at once; False if it is already known. `started`: wall clock."""
        if task_id in self.tracks or task_id in self.ended:
            return False
        begun = None if started is None else min(started - self.wall_offset, now)
        self.tracks[task_id] = Track(now, kind, begun)
        self._push(task_id, now)
        return True

    def take(self, now: float) -> list[str]:
        """The polls to send now (each counted in flight until `replied` or `failed`)."""
        ids = []
        while self._due and self._due[0][0] <= now and self.in_flight.free(now):
            _, _, task_id = heapq.heappop(self._due)
            if task_id not in self.tracks:
                continue
            self.in_flight.count += 1
            self.sent[task_id] = now
            self.tracks[task_id].polls += 1
            ids.append(task_id)
        return ids

    def next_time(self) -> float | None:
        """When `take` next has something to give (None: only a reply or an id can change it)."""
        if not self._due:
            return None
        if self.in_flight.count >= self.in_flight.limit:
            return None
        return max(self._due[0][0], self.in_flight.paused_until)

    def replied(self, task_id: str, task: Task, now: float) -> float | None:
        """A poll's reply: the delay until the next poll, or None if the task has ended."""
        sent = self._returned(task_id, now)
        track = self.tracks[task_id]
        self.latency = 0.8 * self.latency + 0.2 * (now - sent) if self.latency else now - sent
        seen = (sent + now) / 2
        track.observe(task, seen, self.wall_offset)
        if task.finished:
            self._learn(track, task, seen)
            self._end(task_id)
            return None
        delay = next_delay(
            track,
            now,
            forecast(track, self.ratios(), self.durations(track.kind)),
            lead=self.latency / 2,
            first_interval=self.first_interval,
        )
        self._push(task_id, now + delay)
        return delay

    def failed(self, task_id: str, now: float, *, retry_after: float | None = None) -> None:
        """A poll was rate limited: slow down, and poll this task again later."""
        self._returned(task_id, now)
        self.in_flight.rate_limited(now, retry_after)
        self._push(task_id, self.in_flight.paused_until)

    def drop(self, task_id: str, now: float) -> None:
        """A poll failed for good: forget the task."""
        self._returned(task_id, now)
        self._end(task_id)

    def _end(self, task_id: str) -> None:
        self.tracks.pop(task_id, None)
        self.ended.add(task_id)

    def ratios(self) -> tuple[float, float] | None:
        return spread(self._ratios) if len(self._ratios) >= 3 else None

    def durations(self, kind: str | None) -> tuple[float, float] | None:
        samples = self._durations.get(kind or "", ())
        return spread(samples) if len(samples) >= 3 else None

    def _returned(self, task_id: str, now: float) -> float:
        sent = self.sent.pop(task_id, now)
        waiting = bool(self._due) and self._due[0][0] <= now
        self.in_flight.done(waiting=waiting)
        return sent

    def _push(self, task_id: str, when: float) -> None:
        self._order += 1
        heapq.heappush(self._due, (when, self._order, task_id))

    def _learn(self, track: Track, task: Task, seen: float) -> None:
        """A completed task says how long tasks take, and how good estimates are."""
        if task.status != "completed":
            return
        actual = task.raw.get("actual_time")
        took = float(actual) if isinstance(actual, (int, float)) and actual > 0 else None
        if took is None and track.first is not None:  # seen while running: it ended by now
            took = seen - track.start
        if took is None or took <= 0:
            return
        if track.estimate:
            self._ratios.append(took / track.estimate)
        if track.kind:
            self._durations.setdefault(track.kind, deque(maxlen=LEARNED_SAMPLES)).append(took)


# -- running it ------------------------------------------------------------------------


def _not_finished(task: Task) -> TaskError:
    progress = f" ({task.progress}%)" if task.progress is not None else ""
    return NotCompleted(
        f"Task {task.task_id} is {task.status}{progress}, not completed.",
        f"Wait for it with `apimart wait {task.task_id}`.",
    )


class Clock(Protocol):
    """Time for the poll loop: what time it is, and waiting for the next event."""

    def now(self) -> float: ...
    def wait(self, events: queue.Queue[Event], timeout: float | None) -> Event | None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def wait(self, events: queue.Queue[Event], timeout: float | None) -> Event | None:
        try:
            return take(events, timeout)
        except queue.Empty:
            return None


@dataclass(frozen=True)
class Event:
    """Something for the loop: an id to add, a poll's outcome, or the end of input."""

    task_id: str | None = None
    task: Task | None = None
    error: ApimartError | None = None
    poll_done: bool = False
    started: float | None = None  # an added id: when it was submitted (wall clock)
    kind: str | None = None  # an added id: its `task_kind`
    rate_limited: bool = False  # the client met a 429
    retry_after: float | None = None


@dataclass
class PollOutcome:
    """How each task ended: its final state, or the error that stopped its polls."""

    finished: dict[str, Task] = field(default_factory=dict)
    errors: dict[str, ApimartError] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    timed_out: bool = False
    rate_limited: int = 0  # polls answered 429 to the end of their retries (polled again later)


class Poller:
    """Poll tasks until each is completed, failed or cancelled, or time runs out.

    `on_update` sees every reply; `on_finished` sees each task once, as it ends
    (downloads start there, while the other tasks are still being polled).
    `learned` is what earlier tasks taught (see `Learned`); `describe` says, of an
    id added without them, when it was submitted and its kind (from the history);
    `max_in_flight` is the most polls at once (fewer while the service answers 429).
    """

    def __init__(
        self,
        fetch: Callable[[str], Task],
        *,
        interval: float = DEFAULT_POLL_INTERVAL,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        timeout: float | None = None,
        on_update: Callable[[Task], None] = lambda task: None,
        on_finished: Callable[[Task], None] = lambda task: None,
        on_idle: Callable[[], None] = lambda: None,
        clock: Clock | None = None,
        wall: Callable[[], float] = time.time,
        learned: Learned | None = None,
        describe: Callable[[str], tuple[float | None, str | None]] | None = None,
        once: bool = False,
    ) -> None:
        self._fetch = fetch
        self._describe = describe  # called on the loop's thread: the history's
        self._once = once  # poll each task once; an unfinished task is an error
        self._max_in_flight = max(1, max_in_flight)
        self._on_update = on_update
        self._on_finished = on_finished
        self._on_idle = on_idle
        self._clock = clock or RealClock()
        now = self._clock.now()
        self._deadline = None if timeout is None else now + timeout
        self._schedule = Schedule(
            learned,
            first_interval=interval,
            max_in_flight=self._max_in_flight,
            wall_offset=wall() - now,
        )
        self._events: queue.Queue[Event] = queue.Queue()
        self._added: dict[str, None] = {}  # every id given to `add`, even one not yet handled
        self._input_open = False
        self.outcome = PollOutcome()

    # -- feeding ids (any thread) ------------------------------------------------

    def add(self, task_id: str, *, started: float | None = None, kind: str | None = None) -> None:
        """Poll `task_id`; `started` (wall clock) and `kind` (`task_kind`) help forecast it."""
        self._added[task_id] = None
        self._events.put(Event(task_id=task_id, started=started, kind=kind))

    def open_input(self) -> None:
        """More ids will come through `add` until `close_input`."""
        self._input_open = True

    def close_input(self) -> None:
        self._events.put(Event())

    def rate_limited(self, retry_after: float | None) -> None:
        """The service answered a poll 429 (the client's hook; it retries by itself)."""
        self._events.put(Event(rate_limited=True, retry_after=retry_after))

    # -- the loop ------------------------------------------------------------------

    def unfinished(self) -> list[str]:
        """Ids not yet finished, in the order they were added (still queued ones too)."""
        done = self.outcome.finished.keys() | self.outcome.errors.keys()
        return [task_id for task_id in list(self._added) if task_id not in done]

    def run(self) -> PollOutcome:
        """Poll until done or the deadline; on Ctrl-C `unfinished()` says what was left."""
        pool = WorkerPool(self._max_in_flight, "poll")
        try:
            self._loop(pool)
        finally:
            pool.close()  # a poll still in flight is abandoned, not waited for
        self.outcome.unfinished = self.unfinished()
        return self.outcome

    def _loop(self, pool: WorkerPool) -> None:
        schedule = self._schedule
        while self._input_open or schedule.tracks or schedule.sent or not self._events.empty():
            now = self._clock.now()
            if self._deadline is not None and now >= self._deadline:
                self.outcome.timed_out = True
                return
            for task_id in schedule.take(now):
                pool.submit(self._poll, task_id)
            self._on_idle()
            event = self._clock.wait(self._events, self._wait_time(now))
            if event is not None:
                self._handle(event)

    def _wait_time(self, now: float) -> float | None:
        times = []
        due = self._schedule.next_time()
        if due is not None:
            times.append(due - now)
        if self._deadline is not None:
            times.append(self._deadline - now)
        return max(min(times), 0.0) if times else None

    def _poll(self, task_id: str) -> None:
        try:
            self._events.put(Event(task_id=task_id, task=self._fetch(task_id), poll_done=True))
        except ApimartError as error:
            self._events.put(Event(task_id=task_id, error=error, poll_done=True))
        except Exception as error:  # pragma: no cover - a bug; report it, keep the others going
            failure = ApimartError(f"Internal error while polling {task_id}: {error!r}")
            self._events.put(Event(task_id=task_id, error=failure, poll_done=True))

    def _handle(self, event: Event) -> None:
        task_id = event.task_id
        now = self._clock.now()
        schedule = self._schedule
        if event.rate_limited:
            schedule.in_flight.rate_limited(now, event.retry_after)
        elif task_id is None:
            self._input_open = False
        elif not event.poll_done:
            started, kind = event.started, event.kind
            if started is None and kind is None and self._describe is not None:
                started, kind = self._describe(task_id)
            schedule.add(task_id, now, started=started, kind=kind)
        elif _is_rate_limited(event.error):  # never an error: poll it again, more slowly
            assert isinstance(event.error, APIStatusError)
            self.outcome.rate_limited += 1
            schedule.failed(task_id, now, retry_after=event.error.retry_after)
        elif isinstance(event.error, WaitTimeout):
            schedule.drop(task_id, now)
            self.outcome.timed_out = True  # its retries would end past the deadline
        elif event.error is not None:
            schedule.drop(task_id, now)
            self.outcome.errors[task_id] = event.error
        elif event.task is not None:
            self._on_update(event.task)
            if self._once and not event.task.finished:
                schedule.drop(task_id, now)
                self.outcome.errors[task_id] = _not_finished(event.task)
            elif schedule.replied(task_id, event.task, now) is None:
                self.outcome.finished[task_id] = event.task
                self._on_finished(event.task)


def _is_rate_limited(error: ApimartError | None) -> bool:
    return isinstance(error, APIStatusError) and error.status_code == 429
