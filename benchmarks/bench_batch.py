"""A batch against a rate limit: `apimart batch` of 200 jobs at 10 a second, 1,000 at 20.

The sandbox answers 429 (with Retry-After) beyond the rate, so the floor is
jobs / rate; tasks take 2 s and make 64x64 images, so waiting and
downloading add little. The figure is the batch's wall time over that floor,
with the tasks lost (a job with no task or no image) and duplicated (a job
that made two tasks): both must be 0.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from pathlib import Path

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

DURATION = 2.0  # seconds per task


def run(smoke: bool = False) -> list[Result]:
    if smoke:
        return [batch_once(10, 10.0, 0.5), batch_once(40, 20.0, 0.5, memory=True)]
    return [
        batch_once(200, 10.0, DURATION, target=1.2),
        batch_once(1000, 20.0, DURATION, target=1.05, memory=True),
    ]


def batch_once(
    count: int, rate: float, duration: float, *, target: float = 1.5, memory: bool = False
) -> Result:
    """`count` jobs, the sandbox taking `rate` a second; with `memory`, the peak RSS too."""
    prompts = [f"benchmark job {i}" for i in range(count)]
    timeline = Timeline()
    config = SandboxConfig(duration=duration, submit_rate=rate)
    with Sandbox(config, log=timeline.stream()) as sandbox:
        with tempfile.TemporaryDirectory() as home:
            folder = Path(home)
            jobs = folder / "jobs.txt"
            lines = (json.dumps({"prompt": p, "size": "64x64"}) for p in prompts)
            jobs.write_text("\n".join(lines) + "\n")
            env = user_env(sandbox.base_url, folder)
            argv = [*APIMART, "-q", "batch", str(jobs), "-o", str(folder / "out")]
            started = time.monotonic()
            peak = None
            with CpuTime() as cpu:
                if memory:
                    wall, peak = run_with_peak_memory(argv, env)
                else:
                    wall = timed_run(argv, env)
            ended = time.monotonic()
            elapsed = ended - started
            saved = Counter(p.name.rsplit("_", 1)[0] for p in (folder / "out").glob("*.png"))
        made = Counter(r.json["prompt"] for r in sandbox.submissions())
        task_of = {r.task_id: r.json["prompt"] for r in sandbox.submissions()}
        refused = sum(1 for r in sandbox.requests if r.status == 429)
        ends = task_ends(sandbox)
    polls = timeline.polls()
    with_image = {task_of[task_id] for task_id in saved if task_id in task_of}
    lost = sum(1 for p in prompts if made[p] == 0 or p not in with_image)
    duplicated = sum(n - 1 for n in made.values() if n > 1)
    notes: dict[str, object] = {
        "baseline": "jobs / rate",
        "lost": lost,
        "duplicated": duplicated,
        "429 replies": refused,
        "status requests per task": f"{sum(polls.values()) / count:.1f}",
        **timeline.where_the_time_went(started, ended, ends),
        **cpu.notes(),
        "images saved": sum(saved.values()),
        "wall incl. sandbox": f"{elapsed:.2f}",
    }
    if peak is not None:
        notes["peak RSS MiB (target ≤ 100)"] = f"{peak:.0f}"
    return Result(
        f"batch of {count} jobs, {rate:g} submissions/s allowed, {duration:g} s tasks",
        wall,
        count / rate,
        target,
        notes=notes,
    )


if __name__ == "__main__":
    for result in run():
        print(result.row())
