"""Shared pieces: alternating timed runs, medians, the command under test."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

if TYPE_CHECKING:
    from apimart_cli.sandbox import Sandbox

_SCRIPT = Path(sys.executable).with_name("apimart")
APIMART = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "apimart_cli"]


@dataclass
class Result:
    """One benchmark's figures: a name, the measured and baseline medians, extras."""

    name: str
    measured: float
    baseline: float | None = None
    target: float | None = None
    unit: str = "s"
    notes: dict[str, object] = field(default_factory=dict)

    ratios: list[float] = field(default_factory=list)  # every run's, when there were several

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.measured / self.baseline

    @staticmethod
    def combine(runs: Sequence[Result]) -> Result:
        """Several runs of one benchmark: the run with the median ratio, and the spread."""
        ranked = sorted(runs, key=lambda r: r.ratio or r.measured)
        middle = ranked[len(ranked) // 2]
        ratios = [r.ratio for r in runs if r.ratio is not None]
        return dataclasses.replace(middle, ratios=ratios if len(runs) > 1 else [])

    def row(self) -> str:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        if self.ratios:
            ratio += f" ({min(self.ratios):.2f}-{max(self.ratios):.2f}, {len(self.ratios)} runs)"
        target = "" if self.target is None else f"≤ {self.target:g}x"
        met = (
            ""
            if self.ratio is None or self.target is None
            else ("yes" if self.ratio <= self.target else "NO")
        )
        baseline = "" if self.baseline is None else f"{self.baseline:.3f}"
        extra = ", ".join(f"{k}: {v}" for k, v in self.notes.items())
        cells = [self.name, f"{self.measured:.3f}", baseline, ratio, target, met, extra]
        return "| " + " | ".join(cells) + " |"


def alternate(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Medians of `a` and `b`, run A B A B ... so that drift hits both alike."""
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(a())
        times_b.append(b())
    return statistics.median(times_a), statistics.median(times_b)


def timed_run(argv: Sequence[str], env: dict[str, str] | None = None, **kwargs: object) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def run_with_peak_memory(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command, measured by benchmarks/peak_rss.py."""
    wrapper = [sys.executable, str(Path(__file__).with_name("peak_rss.py"))]
    started = time.perf_counter()
    result = subprocess.run(
        [*wrapper, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, list(argv), stderr=result.stderr)
    kib = int(result.stderr.strip().splitlines()[-1].split()[-1])
    return elapsed, kib / 1024


def user_env(base_url: str, home: Path) -> dict[str, str]:
    """An environment pointed at a sandbox, with its own config and history."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("APIMART_") and not k.lower().endswith("_proxy")
    }
    env.update(
        APIMART_API_KEY="sk-bench",
        APIMART_BASE_URL=base_url,
        APIMART_CONFIG=str(home / "config.toml"),
        APIMART_DATA_DIR=str(home / "data"),
    )
    return env


_POLL_LINE = re.compile(r"^api\s+GET /v1/tasks/([A-Za-z0-9_-]+)")
_SUBMIT_LINE = re.compile(r"^api\s+POST /v1/images/generations 200 ")
_IMAGE_LINE = re.compile(r"^image\s+GET ")


class Timeline(io.TextIOBase):
    """The sandbox's request log (`Sandbox(log=timeline.stream())`), each line timed
    as it is written: when the reply went out, just after the sandbox read the task."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def stream(self) -> TextIO:
        return cast(TextIO, self)

    def write(self, text: str) -> int:
        with self._lock:
            self.lines.append((time.monotonic(), text))
        return len(text)

    def times(self, pattern: re.Pattern[str]) -> list[float]:
        return [when for when, line in self.lines if pattern.match(line)]

    def polls(self) -> Counter[str]:
        """Status requests, by task id."""
        found = (_POLL_LINE.match(line) for _, line in self.lines)
        return Counter(match.group(1) for match in found if match)

    def where_the_time_went(
        self, started: float, ended: float, ends: dict[str, float]
    ) -> dict[str, str]:
        """From `started` to `ended` (a command's run), given when each task ended."""
        noticed: dict[str, float] = {}
        for when, line in self.lines:
            match = _POLL_LINE.match(line)
            if match and match.group(1) not in noticed and when >= ends[match.group(1)]:
                noticed[match.group(1)] = when
        late = [noticed[task_id] - end for task_id, end in ends.items() if task_id in noticed]
        last_noticed = max(noticed.values(), default=started)
        images = self.times(_IMAGE_LINE)
        submitted = self.times(_SUBMIT_LINE)
        times = {
            "start-up s": min(self.times(_POLL_LINE) + submitted, default=ended) - started,
            "last submission at s": max(submitted, default=started) - started,
            "last end noticed after s": last_noticed - max(ends.values()),
            "median end noticed after s": statistics.median(late) if late else 0.0,
            "downloads after s": max(images, default=last_noticed) - last_noticed,
            "exit after s": ended - max([last_noticed, *images]),
        }
        if not submitted:
            del times["last submission at s"]
        return {name: f"{value:.2f}" for name, value in times.items()}


def task_ends(sandbox: Sandbox) -> dict[str, float]:
    """When each task ended (monotonic): its start plus its own, perhaps random, duration."""
    tasks = sandbox._tasks.values()  # the sandbox's own truth, read once the run is over
    return {task.id: task.started + _duration(sandbox, task) for task in tasks}


def _duration(sandbox: Sandbox, task: object) -> float:
    duration = getattr(task, "duration", None)  # per task since durations may be a range
    return float(duration if duration is not None else sandbox.config.duration)


class CpuTime:
    """CPU seconds used meanwhile by this process (the in-process sandbox) and by the
    commands it ran: `with CpuTime() as cpu: ...`, then `cpu.notes()`."""

    def __enter__(self) -> CpuTime:
        self._start = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.own = _cpu(resource.RUSAGE_SELF) - self._start[0]
        self.command = _cpu(resource.RUSAGE_CHILDREN) - self._start[1]

    def notes(self) -> dict[str, str]:
        return {"CPU s, apimart": f"{self.command:.1f}", "CPU s, sandbox": f"{self.own:.1f}"}


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime
