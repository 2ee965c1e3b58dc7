"""Downloads: 8 incompressible 2048x2048 PNGs (12.6 MB each) at 10 MiB/s per connection.

`apimart download` against `curl --parallel` on the same URLs, alternately,
and the peak memory of apimart.
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
from benchmarks.bench_wait import submit_many
from benchmarks.common import APIMART, Result, run_with_peak_memory, timed_run, user_env

RATE = 10 * 1024 * 1024


def _image_urls(sandbox: Sandbox, ids: list[str]) -> list[str]:
    urls = []
    for task_id in ids:
        while True:
            reply = httpx.get(
                f"{sandbox.base_url}/v1/tasks/{task_id}",
                headers={"Authorization": "Bearer sk-bench"},
            ).json()["data"]
            if reply["status"] == "completed":
                urls += [image["url"][0] for image in reply["result"]["images"]]
                break
            time.sleep(0.05)
    return urls


def run(smoke: bool = False) -> list[Result]:
    count, side, rounds = (2, 256, 2) if smoke else (8, 2048, 7)
    config = SandboxConfig(duration=0.1, download_rate=RATE, noise=True)
    curl = shutil.which("curl")
    with Sandbox(config) as sandbox, tempfile.TemporaryDirectory() as home:
        ids, _ = submit_many(sandbox, count, size=f"{side}x{side}")
        urls = _image_urls(sandbox, ids)
        env = user_env(sandbox.base_url, Path(home))
        apimart_times, curl_times, peaks, unstamped_times = [], [], [], []
        for round_ in range(rounds):
            folder = Path(home) / f"a{round_}"
            elapsed, peak = run_with_peak_memory(
                [*APIMART, "-q", "download", "-o", str(folder), *ids], env
            )
            apimart_times.append(elapsed)
            peaks.append(peak)
            # The same without the provenance chunk, which rewrites each image once.
            unstamped = ["download", "--no-metadata", "-o", str(Path(home) / f"n{round_}")]
            unstamped_times.append(timed_run([*APIMART, "-q", *unstamped, *ids], env))
            if curl:
                target = Path(home) / f"c{round_}"
                target.mkdir()
                argv = [curl, "-sS", "--fail", "--parallel", "--parallel-max", str(count)]
                for i, url in enumerate(urls):
                    argv += ["-o", str(target / f"{i}.png"), url]
                curl_times.append(timed_run(argv, stderr=subprocess.DEVNULL))
        size = sum(p.stat().st_size for p in (Path(home) / "a0").glob("*.png"))
    return [
        Result(
            f"download {count} noise PNGs {side}x{side} at 10 MiB/s per connection",
            statistics.median(apimart_times),
            statistics.median(curl_times) if curl_times else None,
            1.0,
            notes={
                "baseline": "curl --parallel" if curl else "no curl here",
                "bytes": size,
                "peak RSS MiB (target ≤ 80)": f"{max(peaks):.0f}",
                "s with --no-metadata": f"{statistics.median(unstamped_times):.3f}",
            },
        )
    ]
