"""A large video: one 300 MiB MP4 from the sandbox, `apimart download` against `curl`.

Both fetch the same URL from the same sandbox, alternately, at 25 MiB/s (the
link of the image downloads benchmark); apimart also syncs the file and
checks its ISO-BMFF structure to its end before it takes its name, with its peak
memory measured (flat: the file is streamed to disk, its boxes read in place).
The same without a rate limit, where loopback and the in-process sandbox set the
pace, is in the notes.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from apimart_cli.sandbox import Sandbox, SandboxConfig
from apimart_cli.sandbox.rules import VIDEO_MODEL
from benchmarks.common import APIMART, Result, run_with_peak_memory, timed_run, user_env

MIB = 1024 * 1024
RATE = 25 * MIB


def _video_task(sandbox: Sandbox) -> tuple[str, str]:
    """A completed video task's id and its video's URL."""
    headers = {"Authorization": "Bearer sk-bench"}
    reply = httpx.post(
        f"{sandbox.base_url}/v1/videos/generations",
        json={"model": VIDEO_MODEL, "prompt": "benchmark waves", "duration": 8},
        headers=headers,
    )
    reply.raise_for_status()
    task_id = str(reply.json()["data"][0]["task_id"])
    while True:
        data = httpx.get(f"{sandbox.base_url}/v1/tasks/{task_id}", headers=headers).json()["data"]
        if data["status"] == "completed":
            return task_id, str(data["result"]["videos"][0]["url"][0])
        time.sleep(0.05)


def run(smoke: bool = False) -> list[Result]:
    size, rounds = (4 * MIB, 2) if smoke else (300 * MIB, 3)
    config = SandboxConfig(duration=0.1, video_bytes=size, download_rate=RATE)
    curl = shutil.which("curl")
    with Sandbox(config) as sandbox, tempfile.TemporaryDirectory() as home:
        task_id, url = _video_task(sandbox)
        httpx.get(url).raise_for_status()  # made once, before anything is timed
        env = user_env(sandbox.base_url, Path(home))
        apimart_times, curl_times, peaks = [], [], []
        free_apimart, free_curl = [], []

        def one_round(folder: Path, target: Path, into: tuple[list[float], list[float]]) -> None:
            argv = [*APIMART, "-q", "download", "-o", str(folder), task_id]
            elapsed, peak = run_with_peak_memory(argv, env)
            into[0].append(elapsed)
            peaks.append(peak)
            saved = next(folder.glob("*.mp4"))
            sizes.append(saved.stat().st_size)
            shutil.rmtree(folder)  # the disk holds one copy at a time
            if curl:
                argv = [curl, "-sS", "--fail", "-o", str(target), url]
                into[1].append(timed_run(argv, stderr=subprocess.DEVNULL))
                target.unlink()

        sizes: list[int] = []
        for _ in range(rounds):
            one_round(Path(home) / "a", Path(home) / "c.mp4", (apimart_times, curl_times))
        sandbox.configure(download_rate=None)
        for _ in range(rounds):
            one_round(Path(home) / "a", Path(home) / "c.mp4", (free_apimart, free_curl))
        saved_bytes = sizes[0]
    free = f"{statistics.median(free_apimart):.3f}"
    if free_curl:
        free += f" vs curl {statistics.median(free_curl):.3f}"
    return [
        Result(
            f"download one {size // MIB} MiB MP4 video at {RATE // MIB} MiB/s",
            statistics.median(apimart_times),
            statistics.median(curl_times) if curl_times else None,
            1.15,
            notes={
                "baseline": "curl" if curl else "no curl here",
                "bytes": saved_bytes,
                "peak RSS MiB (target ≤ 80)": f"{max(peaks):.0f}",
                "s unthrottled (loopback)": free,
            },
        )
    ]
