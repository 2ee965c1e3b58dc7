"""Uploads: one reference shared by a batch, and many large files uploaded.

1. `apimart batch` of 50 jobs sharing one 15 MiB reference, `--refs upload`
   against `--refs inline`, run alternately: the bytes sent to the service
   (counted by a loopback TCP relay in front of the sandbox; target: upload at
   most 5% of inline) and the wall time.
2. `apimart upload` of 16 files of 20 MiB: its peak RSS (target: at most
   100 MiB), since each file is streamed from disk.

Each run gets a fresh data folder, so the upload run really uploads.
"""

from __future__ import annotations

import json
import socket
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from apimart_cli.sandbox import Sandbox, SandboxConfig
from benchmarks.bench_references import _png_like
from benchmarks.common import APIMART, Result, run_with_peak_memory, timed_run, user_env

MIB = 1024 * 1024


class ByteCounter:
    """A TCP relay on 127.0.0.1 that counts the bytes the client sends through it."""

    def __init__(self, target_port: int) -> None:
        self.sent = 0
        self._target = target_port
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def take(self) -> int:
        """The bytes counted since the last call."""
        with self._lock:
            sent, self.sent = self.sent, 0
        return sent

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self._target))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while chunk := source.recv(256 * 1024):
                sink.sendall(chunk)
                if counted:
                    with self._lock:
                        self.sent += len(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


@contextmanager
def _counted(sandbox: Sandbox) -> Iterator[ByteCounter]:
    port = int(sandbox.base_url.rsplit(":", 1)[1])
    counter = ByteCounter(port)
    try:
        yield counter
    finally:
        counter.close()


def _batch(smoke: bool) -> Result:
    jobs_count, size, rounds = (5, 1 * MIB, 1) if smoke else (50, 15 * MIB, 3)
    times: dict[str, list[float]] = {"inline": [], "upload": []}
    sent: dict[str, list[int]] = {"inline": [], "upload": []}
    with (
        Sandbox(SandboxConfig(duration=0.5)) as sandbox,
        _counted(sandbox) as counter,
        tempfile.TemporaryDirectory() as home,
    ):
        folder = Path(home)
        _png_like(folder / "shared.png", size)
        jobs = folder / "jobs.txt"
        jobs.write_text(
            "".join(
                json.dumps({"prompt": f"job {i}", "size": "64x64", "images": ["shared.png"]}) + "\n"
                for i in range(jobs_count)
            )
        )
        for round_ in range(rounds):
            for mode in ("upload", "inline"):
                run_home = folder / f"{mode}-{round_}"  # a fresh data folder: nothing remembered
                env = user_env(f"http://127.0.0.1:{counter.port}", run_home)
                counter.take()
                argv = [*APIMART, "-q", "batch", str(jobs), "-o", str(run_home / "out")]
                times[mode].append(timed_run([*argv, "--refs", mode], env))
                sent[mode].append(counter.take())
    ratios = [u / i for u, i in zip(sent["upload"], sent["inline"], strict=True)]
    return Result(
        f"batch of {jobs_count} jobs sharing one {size // MIB} MiB reference, --refs upload",
        statistics.median(times["upload"]),
        statistics.median(times["inline"]),
        notes={
            "baseline": "--refs inline",
            "bytes sent upload": statistics.median(sent["upload"]),
            "bytes sent inline": statistics.median(sent["inline"]),
            "bytes ratio (target ≤ 0.05)": f"{statistics.median(ratios):.4f}",
            "wall upload s": _spread(times["upload"]),
            "wall inline s": _spread(times["inline"]),
        },
    )


def _upload_memory(smoke: bool) -> Result:
    count, size, rounds = (2, 1 * MIB, 1) if smoke else (16, 20 * MIB, 3)
    peaks, walls = [], []
    with Sandbox(SandboxConfig()) as sandbox, tempfile.TemporaryDirectory() as home:
        folder = Path(home)
        files = [folder / f"file{i}.png" for i in range(count)]
        for path in files:
            _png_like(path, size)
        for round_ in range(rounds):
            env = user_env(sandbox.base_url, folder / f"run-{round_}")
            elapsed, peak = run_with_peak_memory([*APIMART, "upload", *map(str, files)], env)
            walls.append(elapsed)
            peaks.append(peak)
    return Result(
        f"upload {count} files of {size // MIB} MiB",
        statistics.median(walls),
        notes={
            "peak RSS MiB (target ≤ 100)": _spread(peaks, "{:.0f}"),
            "MiB/s": f"{count * size / MIB / statistics.median(walls):.0f}",
        },
    )


def _spread(values: list[float], form: str = "{:.2f}") -> str:
    """The median, and the lowest and highest of the runs."""
    median = form.format(statistics.median(values))
    return f"{median} ({form.format(min(values))}-{form.format(max(values))})"


def run(smoke: bool = False) -> list[Result]:
    return [_batch(smoke), _upload_memory(smoke)]
