"""The gallery at 10,000 images: `apimart gallery DIR` within a second.

A folder of 10,000 PNGs named after their tasks, and a history of 100,000
tasks that holds them (written as `bench_history` writes it). Measured: the
whole command in a subprocess, which lists the folder, looks each task up in
the history, reads each image's header for its width and height and writes
the page; and, in this process, the page alone (`gallery.write` of the 10,000
gathered entries). The budget is absolute: one second for each.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from apimart_cli import gallery
from apimart_cli.history import History
from apimart_cli.sandbox import gradient_png
from benchmarks.bench_history import fill
from benchmarks.common import APIMART, Result, timed_run, user_env

BUDGET = 1.0  # seconds


def run(smoke: bool = False) -> list[Result]:
    images, rows, rounds = (200, 1_000, 2) if smoke else (10_000, 100_000, 5)
    with tempfile.TemporaryDirectory() as home:
        env = user_env("https://api.apimart.ai", Path(home))
        data = Path(home) / "data" / "history.sqlite3"
        data.parent.mkdir()
        fill(data, rows)
        folder = Path(home) / "out"
        folder.mkdir()
        picture = gradient_png(64, 48, "bench", 0)
        for n in range(rows - images, rows):  # the newest tasks' images
            (folder / f"task_{n:08d}_0.png").write_bytes(picture)
        command = [timed_run([*APIMART, "-q", "gallery", str(folder)], env) for _ in range(rounds)]
        page = folder / gallery.PAGE_NAME
        size = page.stat().st_size
        shown = page.read_text("utf-8").count("<img ")
        with History(data) as history:
            entries = gallery.entries_for_folder(
                folder, history=history.get, history_files=history.list(limit=images)
            )
        writes = []
        for _ in range(rounds):
            started = time.perf_counter()
            gallery.write(folder, entries)
            writes.append(time.perf_counter() - started)
    label = f"{images:,} images"
    return [
        Result(
            f"apimart gallery of {label}, history of {rows:,} rows",
            statistics.median(command),
            BUDGET,
            1.0,
            notes={"baseline": "the 1 s budget", "images shown": shown, "page bytes": size},
        ),
        Result(
            f"gallery page of {label} written (in process)",
            statistics.median(writes),
            BUDGET,
            1.0,
            notes={"baseline": "the 1 s budget", "entries": len(entries)},
        ),
    ]
