"""Daemon threads: a small pool for downloads (`WorkerPool`), a function mapped over
items under a deadline (`map_within`: status requests, uploads), and the client's
requests, each waited for only until its deadline (`Runner`).

Unlike `concurrent.futures`, whose threads the interpreter waits for at exit,
these never keep the process alive: on Ctrl-C or a timeout the command ends at
once. What they run is safe to abandon: a GET, or a download whose part file
the next run resumes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from apimart_cli.constants import REQUEST_THREAD_IDLE_SECONDS
from apimart_cli.errors import ApimartError, WaitTimeout

if TYPE_CHECKING:
    from apimart_cli.deadline import Deadline

Job = tuple[Callable[..., Any], tuple[Any, ...]]
Q = TypeVar("Q")

# The longest the main thread blocks in one wait. A Ctrl-C or SIGTERM that comes just as
# it starts to wait (between Python's last look at its signals and the wait itself) is
# seen only when that wait returns: a wait until the deadline could hold it for minutes.
SIGNAL_CHECK_SECONDS = 0.25


def take(source: queue.Queue[Q] | queue.SimpleQueue[Q], timeout: float | None) -> Q:
    """`source.get(timeout=timeout)` (queue.Empty once `timeout` has passed, None: never),
    in waits of at most SIGNAL_CHECK_SECONDS, so that a signal is never held up."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        left = SIGNAL_CHECK_SECONDS if end is None else end - time.monotonic()
        try:
            return source.get(timeout=max(0.0, min(left, SIGNAL_CHECK_SECONDS)))
        except queue.Empty:
            if end is not None and time.monotonic() >= end:
                raise


T = TypeVar("T")
Outcome = tuple[bool, Any]  # (True, the result) or (False, the exception)
Inbox = queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[Outcome]]]


class Runner:
    """Calls on daemon threads kept for the next one, each waited for only until its
    deadline (WaitTimeout then): the client sends every API request through one, so
    that a server dripping its reply cannot hold it. A thread kept costs 46 us a call
    where a new thread per call cost 107 us.

    A call runs on an idle thread, or a new one when none is idle. A call that
    outlives its caller's wait keeps its thread until it ends (a server dripping for
    ever keeps one thread, never the caller). `close` lets the idle threads end, as
    does REQUEST_THREAD_IDLE_SECONDS without a call (a client left open after a
    timeout, in a long-lived `apimart mcp`).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._idle: list[Inbox] = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, deadline: Deadline, function: Callable[[], T]) -> T:
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            serve = threading.Thread(target=self._serve, args=(inbox,), name=self._name)
            serve.daemon = True  # never keeps the process alive
            serve.start()
        done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        inbox.put((function, done))
        result: T = _outcome(done, deadline)
        return result

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put((_stop, queue.SimpleQueue()))

    def _serve(self, inbox: Inbox) -> None:
        while True:
            try:
                function, done = inbox.get(timeout=REQUEST_THREAD_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:  # nobody took it meanwhile: end, idle too long
                        self._idle.remove(inbox)
                        return
                continue  # a caller took it just now: its call is on the way
            if function is _stop:
                return
            outcome = _outcome_of(function)
            with self._lock:  # idle again before the caller hears: its next call finds us
                if self._closed:
                    done.put(outcome)
                    return
                self._idle.append(inbox)
            done.put(outcome)


def _stop() -> None:
    """What an idle `Runner` thread is handed to end."""


def _outcome_of(function: Callable[[], Any]) -> Outcome:
    try:
        return True, function()
    except ApimartError as error:  # a message for the user: its frames are of no use
        # Dropped, so that a hundred thousand answers do not keep a hundred thousand
        # stacks of frames alive (memory, and time to free them at exit).
        return False, error.with_traceback(None)
    except BaseException as exc:  # handed to the caller, who raises it
        return False, exc


def _outcome(done: queue.SimpleQueue[Outcome], deadline: Deadline) -> Any:
    """What a call on another thread returned (or raises what it raised); WaitTimeout if
    the deadline comes first."""
    try:
        ok, value = take(done, deadline.remaining())
    except queue.Empty:
        raise WaitTimeout("Out of time waiting for the service.") from None
    if not ok:
        raise value
    return value


class WorkerPool:
    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, size))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Run `function(*args)` on a worker; it must handle its own errors."""
        self._jobs.put((function, args))

    def close(self) -> None:
        """Let idle workers end; busy ones finish their job first (or die with the process)."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args = job
            function(*args)


def map_within(
    deadline: Deadline,
    function: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int,
    name: str,
    stop_after_failure: bool = False,
    on_answer: Callable[[int, Outcome], None] | None = None,
) -> tuple[dict[int, Outcome], bool]:
    """`function` of each item, up to `workers` at a time on daemon threads: each item's
    outcome by its index, as (True, result) or (False, the exception), and whether the
    deadline came first (then the items unanswered are missing; nothing waits past it).

    No item starts after the deadline (those still queued then are dropped, not
    started); with `stop_after_failure`, none after one has failed. `on_answer(index,
    outcome)` hears each answer on the calling thread as it comes. A Ctrl-C raised on
    a worker is raised here at once.
    """
    answers: queue.SimpleQueue[tuple[int, Outcome | None]] = queue.SimpleQueue()
    failed = threading.Event()

    def work(index: int) -> None:
        if deadline.expired() or (stop_after_failure and failed.is_set()):
            answers.put((index, None))
            return
        outcome = _outcome_of(lambda: function(items[index]))
        if not outcome[0]:
            failed.set()
        answers.put((index, outcome))

    pool = WorkerPool(min(workers, len(items)), name)
    try:
        for index in range(len(items)):
            pool.submit(work, index)
        done: dict[int, Outcome] = {}
        for _ in items:
            try:
                index, outcome = take(answers, deadline.remaining())
            except queue.Empty:
                return done, True
            if outcome is not None:
                ok, value = outcome
                if not ok and not isinstance(value, Exception):
                    raise value
                done[index] = outcome
                if on_answer is not None:
                    on_answer(index, outcome)
        return done, False
    finally:
        pool.close()
