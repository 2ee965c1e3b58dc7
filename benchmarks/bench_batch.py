"""A batch against a rate limit: `apimart batch` of 200 jobs, the service taking 10 a second.

The sandbox answers 429 (with Retry-After) beyond 10 submissions a second, so
the floor is jobs / rate; tasks take 2 s and make 64x64 images, so waiting and
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
from benchmarks.common import APIMART, Result, timed_run, user_env

RATE = 10.0  # submissions per second before 429
DURATION = 2.0  # seconds per task


def run(smoke: bool = False) -> list[Result]:
    count = 10 if smoke else 200
    prompts = [f"benchmark job {i}" for i in range(count)]
    with Sandbox(SandboxConfig(duration=DURATION, submit_rate=RATE)) as sandbox:
        with tempfile.TemporaryDirectory() as home:
            folder = Path(home)
            jobs = folder / "jobs.txt"
            lines = (json.dumps({"prompt": p, "size": "64x64"}) for p in prompts)
            jobs.write_text("\n".join(lines) + "\n")
            env = user_env(sandbox.base_url, folder)
            started = time.monotonic()
            wall = timed_run([*APIMART, "-q", "batch", str(jobs), "-o", str(folder / "out")], env)
            elapsed = time.monotonic() - started
            saved = Counter(p.name.rsplit("_", 1)[0] for p in (folder / "out").glob("*.png"))
        made = Counter(r.json["prompt"] for r in sandbox.submissions())
        task_of = {r.task_id: r.json["prompt"] for r in sandbox.submissions()}
        refused = sum(1 for r in sandbox.requests if r.status == 429)
    with_image = {task_of[task_id] for task_id in saved if task_id in task_of}
    lost = sum(1 for p in prompts if made[p] == 0 or p not in with_image)
    duplicated = sum(n - 1 for n in made.values() if n > 1)
    return [
        Result(
            f"batch of {count} jobs, {RATE:g} submissions/s allowed, {DURATION:g} s tasks",
            wall,
            count / RATE,
            1.2,
            notes={
                "baseline": "jobs / rate",
                "lost": lost,
                "duplicated": duplicated,
                "429 replies": refused,
                "images saved": sum(saved.values()),
                "wall incl. sandbox": f"{elapsed:.2f}",
            },
        )
    ]


if __name__ == "__main__":
    for result in run():
        print(result.row())
