"""References: sending 16 references of 15 MiB each (240 MiB of files).

`apimart generate -i ... x16` against `curl --data-binary @body.json` sending
the same body from a file, alternately, and the peak memory of apimart.
"""

from __future__ import annotations

import os
import shutil
import statistics
import struct
import tempfile
import zlib
from pathlib import Path

from apimart_cli.payload import build_request
from apimart_cli.sandbox import Sandbox, SandboxConfig
from benchmarks.common import APIMART, Result, run_with_peak_memory, timed_run, user_env

MIB = 1024 * 1024


def _png_like(path: Path, size: int) -> None:
    """A file that sniffs as a 64x64 PNG, padded with random bytes to `size`."""
    ihdr = struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0)
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
    head += struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    with path.open("wb") as handle:
        handle.write(head)
        remaining = size - len(head)
        while remaining > 0:
            chunk = os.urandom(min(remaining, 4 * MIB))
            handle.write(chunk)
            remaining -= len(chunk)


def run(smoke: bool = False) -> list[Result]:
    count, each, rounds = (2, 1 * MIB, 2) if smoke else (16, 15 * MIB, 5)
    curl = shutil.which("curl")
    with Sandbox(SandboxConfig(duration=60)) as sandbox, tempfile.TemporaryDirectory() as home:
        files = [Path(home) / f"ref{i}.png" for i in range(count)]
        for path in files:
            _png_like(path, each)
        request = build_request("benchmark", images=[str(p) for p in files])
        body = Path(home) / "body.json"
        with body.open("wb") as handle:
            for chunk in request.iter_body():
                handle.write(chunk)
        env = user_env(sandbox.base_url, Path(home))
        argv = [*APIMART, "generate", "benchmark"]
        for path in files:
            argv += ["-i", str(path)]
        apimart_times, curl_times, peaks = [], [], []
        for _ in range(rounds):
            elapsed, peak = run_with_peak_memory(argv, env)
            apimart_times.append(elapsed)
            peaks.append(peak)
            if curl:
                curl_times.append(
                    timed_run(
                        [
                            curl,
                            "-sS",
                            "--fail",
                            "-o",
                            os.devnull,
                            "-H",
                            "Authorization: Bearer sk-bench",
                            "-H",
                            "Content-Type: application/json",
                            "--data-binary",
                            f"@{body}",
                            f"{sandbox.base_url}/v1/images/generations",
                        ]
                    )
                )
    return [
        Result(
            f"send {count} references of {each // MIB} MiB",
            statistics.median(apimart_times),
            statistics.median(curl_times) if curl_times else None,
            1.5,
            notes={
                "baseline": "curl --data-binary @body.json" if curl else "no curl here",
                "body bytes": request.body_length(),
                "peak RSS MiB (target ≤ 100)": f"{max(peaks):.0f}",
            },
        )
    ]
