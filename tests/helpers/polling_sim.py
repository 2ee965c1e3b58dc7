"""A deterministic simulation of waiting: tasks with true durations and wrong estimates,
a service that answers after a latency, and `polling.Schedule` deciding when to poll.

No threads, no sleeping: time is a number that jumps from one event to the next.
The tasks behave as the sandbox's do: "submitted" (progress 0) for the first tenth
of their duration, then "processing" with progress growing evenly, capped at 99.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from apimart_cli.polling import Learned, Schedule
from apimart_cli.tasks import Task

WALL = 1_800_000_000.0  # the wall clock at simulated time 0


@dataclass
class SimTask:
    task_id: str
    start: float  # simulated seconds
    duration: float
    estimate: float | None  # what the service says; None: it says nothing
    polls: int = 0
    noticed: float | None = None  # when a reply first said it had ended

    @property
    def end(self) -> float:
        return self.start + self.duration

    def view(self, at: float) -> Task:
        """The task as `GET /v1/tasks/{id}` shows it at simulated time `at`."""
        elapsed = at - self.start
        estimate = None if self.estimate is None else float(math.ceil(self.estimate))
        created = int(WALL + self.start)
        if elapsed >= self.duration:
            raw = {"actual_time": math.ceil(self.duration)}
            return Task(self.task_id, "completed", 100, estimate, created, raw=raw)
        if elapsed < 0.1 * self.duration:
            return Task(self.task_id, "submitted", 0, estimate, created)
        progress = min(99, int(100 * elapsed / self.duration))
        return Task(self.task_id, "processing", progress, estimate, created)


@dataclass
class SimResult:
    tasks: list[SimTask]
    last_end: float  # when the last task ended
    last_noticed: float  # when the last end was noticed
    started: float  # when the wait began
    peak_in_flight: int = 0
    polls: int = 0
    rate_limited: int = 0
    lateness: list[float] = field(default_factory=list)  # noticed - end, per task

    @property
    def most_polls(self) -> int:
        return max(task.polls for task in self.tasks)

    @property
    def ratio(self) -> float:
        return (self.last_noticed - self.started) / (self.last_end - self.started)

    def worst_lateness_share(self) -> float:
        """The latest a completion was noticed, as a share of that task's duration."""
        return max(
            (task.noticed - task.end) / task.duration
            for task in self.tasks
            if task.noticed is not None
        )


def simulate(
    tasks: list[SimTask],
    *,
    latency: float,
    started: float = 0.0,
    max_in_flight: int = 16,
    learned: Learned | None = None,
    rate_limit: float | None = None,
    seen_at: float = 1.0,
) -> SimResult:
    """Wait for `tasks` from time `started`; each reply comes `latency` after its poll and
    shows the task as it was `seen_at * latency` after the poll. With `rate_limit`,
    the service answers 429 (Retry-After: 1) to polls beyond that many per second."""
    schedule = Schedule(learned, max_in_flight=max_in_flight, wall_offset=WALL)
    by_id = {task.task_id: task for task in tasks}
    for task in tasks:
        schedule.add(task.task_id, started)
    replies: list[tuple[float, int, str, float]] = []  # (arrival, order, id, sent)
    order = 0
    now = started
    window: list[float] = []  # poll times within the last second, for the rate limit
    result = SimResult(tasks, max(t.end for t in tasks), started, started)
    while schedule.tracks:
        for task_id in schedule.take(now):
            order += 1
            by_id[task_id].polls += 1
            result.polls += 1
            heapq.heappush(replies, (now + latency, order, task_id, now))
        result.peak_in_flight = max(result.peak_in_flight, len(replies))
        due = schedule.next_time()
        arrival = replies[0][0] if replies else math.inf
        now = min(arrival, math.inf if due is None else max(due, now))
        assert now < math.inf, "the schedule stalled"
        while replies and replies[0][0] <= now:
            _, _, task_id, sent = heapq.heappop(replies)
            window = [t for t in window if t > sent - 1.0]
            if rate_limit is not None and len(window) >= rate_limit:
                result.rate_limited += 1
                schedule.failed(task_id, now, retry_after=1.0)
                continue
            window.append(sent)
            task = by_id[task_id]
            view = task.view(sent + seen_at * latency)
            if schedule.replied(task_id, view, now) is None:
                task.noticed = now
                result.lateness.append(now - task.end)
                result.last_noticed = max(result.last_noticed, now)
    return result
