"""Wait for many tasks at once.

A single loop on the calling thread owns all the state: when each task is next
due, how many polls are in flight, the deadline. Polls run on a small thread
pool and report back through one event queue, as do the ids that arrive on
standard input while the loop runs. The clock is injected, so tests never
really wait.
"""

from __future__ import annotations

import heapq
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from apimart_cli.constants import (
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_POLL_INTERVAL,
    MAX_POLL_INTERVAL,
    MIN_POLL_INTERVAL,
    POLL_BACKOFF,
)
from apimart_cli.errors import ApimartError, TaskError, WaitTimeout
from apimart_cli.models import Task
from apimart_cli.workers import WorkerPool


def remaining_estimate(task: Task, wall_now: float) -> float | None:
    """Seconds until the task should finish, by the service's own hints, if it gives any.

    Progress (while processing) says how much of `estimated_time` is left;
    before that, `created` says when the clock started (server time, so this is
    only as good as the two clocks agree).
    """
    if task.estimated_time is None or task.estimated_time <= 0:
        return None
    if task.status == "processing" and task.progress:
        done = min(max(task.progress, 0), 100) / 100
        return task.estimated_time * (1 - done)
    if task.created is not None:
        return task.created + task.estimated_time - wall_now
    return None


def next_delay(
    task: Task,
    previous: float,
    base: float = DEFAULT_POLL_INTERVAL,
    wall_now: float | None = None,
) -> float:
    """Seconds until the next poll of an unfinished task.

    With an estimate of when the task will finish, the next poll is aimed just
    past that moment (at most 10 s ahead, so a pessimistic estimate costs
    little); once the task is overdue, polls come soon and back off the later
    it is. Without one, the interval starts at `base` and grows 1.5x up to 10 s.
    """
    remaining = remaining_estimate(task, time.time() if wall_now is None else wall_now)
    if remaining is None:
        return min(max(previous, base) * POLL_BACKOFF, MAX_POLL_INTERVAL) if previous else base
    if remaining > 0:
        return min(remaining + MIN_POLL_INTERVAL, MAX_POLL_INTERVAL)
    return min(max(-remaining / 4, MIN_POLL_INTERVAL), base)


def _not_finished(task: Task) -> TaskError:
    progress = f" ({task.progress}%)" if task.progress is not None else ""
    return TaskError(
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
            return events.get(timeout=timeout)
        except queue.Empty:
            return None


@dataclass(frozen=True)
class Event:
    """Something for the loop: an id to add, a poll's outcome, or the end of input."""

    task_id: str | None = None
    task: Task | None = None
    error: ApimartError | None = None
    poll_done: bool = False


@dataclass
class PollOutcome:
    """How each task ended: its final state, or the error that stopped its polls."""

    finished: dict[str, Task] = field(default_factory=dict)
    errors: dict[str, ApimartError] = field(default_factory=dict)
    unfinished: list[str] = field(default_factory=list)
    timed_out: bool = False


class Poller:
    """Poll tasks until each is completed, failed or cancelled, or time runs out.

    `on_update` sees every reply; `on_finished` sees each task once, as it ends
    (downloads start there, while the other tasks are still being polled).
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
        once: bool = False,
    ) -> None:
        self._fetch = fetch
        self._once = once  # poll each task once; an unfinished task is an error
        self._interval = interval
        self._max_in_flight = max(1, max_in_flight)
        self._on_update = on_update
        self._on_finished = on_finished
        self._on_idle = on_idle
        self._clock = clock or RealClock()
        self._deadline = None if timeout is None else self._clock.now() + timeout
        self._events: queue.Queue[Event] = queue.Queue()
        self._due: list[tuple[float, int, str]] = []  # (when, order, task id)
        self._delays: dict[str, float] = {}
        self._added: list[str] = []  # every id given to `add`, even one not yet handled
        self._order = 0
        self._in_flight = 0
        self._input_open = False
        self.outcome = PollOutcome()

    # -- feeding ids (any thread) ------------------------------------------------

    def add(self, task_id: str) -> None:
        self._added.append(task_id)
        self._events.put(Event(task_id=task_id))

    def open_input(self) -> None:
        """More ids will come through `add` until `close_input`."""
        self._input_open = True

    def close_input(self) -> None:
        self._events.put(Event())

    # -- the loop ------------------------------------------------------------------

    def unfinished(self) -> list[str]:
        """Ids not yet finished, in the order they were added (still queued ones too)."""
        done = self.outcome.finished.keys() | self.outcome.errors.keys()
        return [task_id for task_id in dict.fromkeys(list(self._added)) if task_id not in done]

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
        while self._input_open or self._due or self._in_flight or not self._events.empty():
            now = self._clock.now()
            if self._deadline is not None and now >= self._deadline:
                self.outcome.timed_out = True
                return
            while self._due and self._due[0][0] <= now and self._in_flight < self._max_in_flight:
                _, _, task_id = heapq.heappop(self._due)
                self._in_flight += 1
                pool.submit(self._poll, task_id)
            self._on_idle()
            event = self._clock.wait(self._events, self._wait_time(now))
            if event is not None:
                self._handle(event)

    def _wait_time(self, now: float) -> float | None:
        times = []
        if self._due and self._in_flight < self._max_in_flight:
            times.append(self._due[0][0] - now)
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

    def _schedule(self, task_id: str, delay: float) -> None:
        self._delays[task_id] = delay
        self._order += 1
        heapq.heappush(self._due, (self._clock.now() + delay, self._order, task_id))

    def _handle(self, event: Event) -> None:
        task_id = event.task_id
        if task_id is None:
            self._input_open = False
        elif not event.poll_done:
            if task_id not in self._delays:  # the same id twice is polled once
                self._schedule(task_id, 0.0)
        else:
            self._in_flight -= 1
            if isinstance(event.error, WaitTimeout):
                self.outcome.timed_out = True  # its retries would end past the deadline
            elif event.error is not None:
                self.outcome.errors[task_id] = event.error
            elif event.task is not None:
                self._on_update(event.task)
                if event.task.finished:
                    self.outcome.finished[task_id] = event.task
                    self._on_finished(event.task)
                elif self._once:
                    self.outcome.errors[task_id] = _not_finished(event.task)
                else:
                    previous = self._delays[task_id]
                    self._schedule(task_id, next_delay(event.task, previous, self._interval))
