"""A small pool of daemon threads, for status requests and downloads.

Unlike `concurrent.futures`, whose threads the interpreter waits for at exit,
these never keep the process alive: on Ctrl-C or a timeout the command ends at
once. What they run is safe to abandon: a GET, or a download whose part file
the next run resumes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from apimart_cli.errors import WaitTimeout

if TYPE_CHECKING:
    from apimart_cli.retry import Deadline

Job = tuple[Callable[..., Any], tuple[Any, ...]]
T = TypeVar("T")


def run_until(deadline: Deadline, function: Callable[[], T]) -> T:
    """`function()` on a daemon thread, its result or its exception; WaitTimeout if the
    deadline comes first (the thread is abandoned, never joined). The calling thread
    thus ends at the deadline whatever a server does to the request."""
    done: queue.Queue[tuple[bool, Any]] = queue.Queue()

    def work() -> None:
        try:
            done.put((True, function()))
        except BaseException as exc:  # handed to the caller, who raises it
            done.put((False, exc))

    threading.Thread(target=work, name="request", daemon=True).start()
    try:
        ok, value = done.get(timeout=deadline.remaining())
    except queue.Empty:
        raise WaitTimeout("Out of time waiting for the service.") from None
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


class WorkerPool:
    def __init__(self, size: int, name: str) -> None:
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(max(1, size))
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Run `function(*args)` on a worker; it must handle its own errors."""
        self._jobs.put((function, args))

    def join(self) -> None:
        """Wait until every job submitted so far is done."""
        self._jobs.join()

    def close(self) -> None:
        """Let idle workers end; busy ones finish their job first (or die with the process)."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            function, args = job
            try:
                function(*args)
            finally:
                self._jobs.task_done()
        self._jobs.task_done()
