"""Uploads: one reference shared by a batch, and many large files uploaded.

1. `apimart batch` of 50 jobs sharing one 15 MiB reference, `--refs upload`
   against `--refs inline`, one after the other in each run: the bytes sent to
   the service (counted by a loopback TCP relay in front of the sandbox, headers
   and all; target: upload at most 5% of inline) and the wall time.
2. `apimart upload` of 16 files of 20 MiB: its peak RSS (target: at most
   100 MiB), since each file is streamed from disk.

Each run gets a fresh data folder, so the upload run really uploads.
"""

from __future__ import annotations

import json
import socket
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


def _batch(smoke: bool) -> list[Result]:
    """One upload run and one inline run, alternately (python -m benchmarks repeats it)."""
    jobs_count, size = (5, 1 * MIB) if smoke else (50, 15 * MIB)
    wall: dict[str, float] = {}
    sent: dict[str, int] = {}
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
        for mode in ("upload", "inline"):
            run_home = folder / mode  # a fresh data folder: nothing remembered
            env = user_env(f"http://127.0.0.1:{counter.port}", run_home)
            counter.take()
            argv = [*APIMART, "-q", "batch", str(jobs), "-o", str(run_home / "out")]
            wall[mode] = timed_run([*argv, "--refs", mode], env)
            sent[mode] = counter.take()
    name = f"batch of {jobs_count} jobs sharing one {size // MIB} MiB reference"
    return [
        Result(
            f"{name}: MiB sent, --refs upload",
            sent["upload"] / MIB,
            sent["inline"] / MIB,
            0.05,
            unit="MiB",
            notes={"baseline": "--refs inline", "bytes": f"{sent['upload']} / {sent['inline']}"},
        ),
        Result(
            f"{name}: wall time, --refs upload",
            wall["upload"],
            wall["inline"],
            notes={"baseline": "--refs inline"},
        ),
    ]


def _upload_memory(smoke: bool) -> Result:
    count, size = (2, 1 * MIB) if smoke else (16, 20 * MIB)
    with Sandbox(SandboxConfig()) as sandbox, tempfile.TemporaryDirectory() as home:
        folder = Path(home)
        files = [folder / f"file{i}.png" for i in range(count)]
        for path in files:
            _png_like(path, size)
        env = user_env(sandbox.base_url, folder / "home")
        elapsed, peak = run_with_peak_memory([*APIMART, "upload", *map(str, files)], env)
    return Result(
        f"upload {count} files of {size // MIB} MiB: peak RSS (MiB)",
        peak,
        unit="MiB",
        notes={
            "target": "≤ 100 MiB",
            "wall s": f"{elapsed:.2f}",
            "MiB/s": f"{count * size / MIB / elapsed:.0f}",
        },
    )


def run(smoke: bool = False) -> list[Result]:
    return [*_batch(smoke), _upload_memory(smoke)]
