"""Waiting on many tasks: `apimart wait` on 100 tasks that take 8 s, 250 ms per request.

The floor is the moment the last task completed, counted from the start of the
wait; the figure is the wait's wall time over that floor, with the status
requests it needed per task.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from apimart_cli.sandbox import Sandbox, SandboxConfig
from benchmarks.common import APIMART, Result, timed_run, user_env


def submit_many(
    sandbox: Sandbox, count: int, prompt: str = "benchmark", **fields: object
) -> tuple[list[str], float]:
    """Create `count` tasks directly; their ids and when the last was created (monotonic)."""

    def one(i: int) -> tuple[str, float]:
        reply = httpx.post(
            f"{sandbox.base_url}/v1/images/generations",
            json={"model": "gpt-image-2", "prompt": f"{prompt} {i}", **fields},
            headers={"Authorization": "Bearer sk-bench"},
            timeout=60,
        )
        reply.raise_for_status()
        return str(reply.json()["data"][0]["task_id"]), time.monotonic()

    with ThreadPoolExecutor(32) as pool:
        done = list(pool.map(one, range(count)))
    return [task_id for task_id, _ in done], max(created for _, created in done)


def run(smoke: bool = False) -> list[Result]:
    count, duration, latency = (10, 1.0, 0.05) if smoke else (100, 8.0, 0.25)
    config = SandboxConfig(duration=duration, latency=latency)
    with Sandbox(config) as sandbox, tempfile.TemporaryDirectory() as home:
        ids, last_created = submit_many(sandbox, count)
        env = user_env(sandbox.base_url, Path(home))
        started = time.monotonic()
        wall = timed_run([*APIMART, "-q", "wait", "-o", str(Path(home) / "out"), *ids], env)
        floor = last_created + duration - started
        polls = [
            r for r in sandbox.requests if r.method == "GET" and r.path.startswith("/v1/tasks/")
        ]
        saved = len(list((Path(home) / "out").glob("*.png")))
    return [
        Result(
            f"wait on {count} tasks ({duration:g} s each, {latency * 1000:g} ms latency)",
            wall,
            floor,
            1.15,
            notes={
                "baseline": "last task completed",
                "status requests per task": f"{len(polls) / count:.1f}",
                "images saved": saved,
            },
        )
    ]
