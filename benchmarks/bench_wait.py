"""Waiting on many tasks: `apimart wait` against a sandbox whose estimates are wrong.

Each figure is the wait's wall time over its floor: the moment the last task
completed, counted from the start of the wait. The tasks are submitted straight
to the sandbox first, so the wait knows nothing of them but their ids; every
API reply takes the latency given. The notes say where the time went: start-up
(to the first status request), noticing the last completion (from the moment
it happened to the reply that showed it), the downloads after that, and the
exit; and the status requests per task (mean and most), which must stay at 12
or fewer.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from apimart_cli.sandbox import Sandbox, SandboxConfig
from benchmarks.common import (
    APIMART,
    CpuTime,
    Result,
    Timeline,
    run_with_peak_memory,
    task_ends,
    timed_run,
    user_env,
)

LATENCY = 0.25
MOST_POLLS = 12  # status requests per task
SUBMITTERS = 64  # tasks created at once, before the wait


@dataclass(frozen=True)
class Scenario:
    name: str
    count: int
    duration: float | tuple[float, float]
    estimate_factor: float | None
    target: float
    memory: bool = False  # measure the peak RSS too (target: 100 MiB)
    latency: float = LATENCY


FULL = (
    Scenario("100 tasks of 8 s, estimates twice too long", 100, 8.0, 2.0, 1.05),
    Scenario("100 tasks of 8 s, estimates half too short", 100, 8.0, 0.5, 1.05),
    Scenario("100 tasks of 8 s, no estimates", 100, 8.0, None, 1.05),
    Scenario("1,000 tasks of 20-30 s", 1000, (20.0, 30.0), 2.0, 1.05, memory=True),
)
SMOKE = (
    Scenario("10 tasks of 1 s, estimates twice too long", 10, 1.0, 2.0, 1.5, latency=0.05),
    Scenario("10 tasks of 1 s, estimates half too short", 10, 1.0, 0.5, 1.5, latency=0.05),
    Scenario("10 tasks of 1 s, no estimates", 10, 1.0, None, 1.5, latency=0.05),
    Scenario("100 tasks of 1-2 s", 100, (1.0, 2.0), 2.0, 1.5, memory=True, latency=0.05),
)


def submit_many(
    sandbox: Sandbox, count: int, prompt: str = "benchmark", **fields: object
) -> tuple[list[str], float]:
    """Create `count` tasks directly; their ids and when the last was created (monotonic)."""

    def one(i: int) -> tuple[str, float]:
        reply = client.post(
            f"{sandbox.base_url}/v1/images/generations",
            json={"model": "gpt-image-2", "prompt": f"{prompt} {i}", **fields},
            headers={"Authorization": "Bearer sk-bench"},
        )
        reply.raise_for_status()
        return str(reply.json()["data"][0]["task_id"]), time.monotonic()

    limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
    with httpx.Client(timeout=60, limits=limits) as client, ThreadPoolExecutor(SUBMITTERS) as pool:
        done = list(pool.map(one, range(count)))
    return [task_id for task_id, _ in done], max(created for _, created in done)


def wait_once(scenario: Scenario) -> Result:
    config = SandboxConfig(
        duration=scenario.duration,
        latency=scenario.latency,
        estimate_factor=scenario.estimate_factor,
    )
    timeline = Timeline()
    with Sandbox(config, log=timeline.stream()) as sandbox, tempfile.TemporaryDirectory() as home:
        ids, _ = submit_many(sandbox, scenario.count, size="64x64")
        timeline.lines.clear()
        env = user_env(sandbox.base_url, Path(home))
        argv = [*APIMART, "-q", "wait", "-o", str(Path(home) / "out"), *ids]
        started = time.monotonic()
        peak = None
        with CpuTime() as cpu:
            if scenario.memory:
                wall, peak = run_with_peak_memory(argv, env)
            else:
                wall = timed_run(argv, env)
        ended = started + wall
        saved = len(list((Path(home) / "out").glob("*.png")))
        ends = task_ends(sandbox)
    polls = timeline.polls()
    last_end = max(ends.values())
    notes: dict[str, object] = {
        "status requests per task": f"{sum(polls.values()) / scenario.count:.1f}",
        f"most (target ≤ {MOST_POLLS})": max(polls.values()),
        **timeline.where_the_time_went(started, ended, ends),
        **cpu.notes(),
        "images saved": saved,
    }
    if peak is not None:
        notes["peak RSS MiB (target ≤ 100)"] = f"{peak:.0f}"
    return Result(f"wait: {scenario.name}", wall, last_end - started, scenario.target, notes=notes)


def run(smoke: bool = False) -> list[Result]:
    return [wait_once(scenario) for scenario in (SMOKE if smoke else FULL)]


if __name__ == "__main__":
    for result in run():
        print(result.row())
