"""The history stays fast as it grows: `apimart history` on 100,000 rows against an empty one.

Both runs are the real command in a subprocess, alternately; the rows are
written straight into a history file the command opens as it is (schema and
indexes made by `History.open`). Also measured, against the same empty
baseline: the filters that cannot use the time index alone (`--pending`,
`--search`, `--state`).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path

from apimart_cli.history import History
from benchmarks.common import APIMART, Result, alternate, timed_run, user_env

STATES = ("completed", "completed", "completed", "failed", "processing")


def fill(path: Path, rows: int) -> None:
    """``rows`` tasks over the last 100 days, a few unfinished, as a busy user's history."""
    History.open(path).close()  # the schema, as the command makes it
    now = time.time()
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO tasks (task_id, created_at, updated_at, base_url, prompt, fields,"
            " idempotency_key, state, cost, files, images, expires_at, saved_at)"
            " VALUES (?, ?, ?, ?, ?, '{}', ?, ?, ?, ?, 1, ?, ?)",
            (
                (
                    f"task_{n:08d}",
                    now - (rows - n) * 86.4,
                    now - (rows - n) * 86.4,
                    "https://api.apimart.ai",
                    f"prompt {n} of a fox in the snow",
                    f"key-{n}",
                    STATES[n % len(STATES)],
                    0.05,
                    json.dumps([f"/home/me/out/task_{n:08d}_0.png"]),
                    now + 86400,
                    now if STATES[n % len(STATES)] == "completed" else None,
                )
                for n in range(rows)
            ),
        )
    db.close()


def run(smoke: bool = False) -> list[Result]:
    rows = 1_000 if smoke else 100_000
    rounds = 3 if smoke else 20
    results = []
    with tempfile.TemporaryDirectory() as big, tempfile.TemporaryDirectory() as empty:
        big_env = user_env("https://api.apimart.ai", Path(big))
        empty_env = user_env("https://api.apimart.ai", Path(empty))
        fill(Path(big) / "data" / "history.sqlite3", rows)
        History.open(Path(empty) / "data" / "history.sqlite3").close()
        for name, args, target in (
            ("history --limit 20", ["history", "--limit", "20"], 1.15),
            ("history --pending", ["history", "--pending"], 1.5),
            (
                "history --search TEXT --limit 20",
                ["history", "--search", "99 of", "--limit", "20"],
                1.5,
            ),
            (
                "history --state failed --limit 20",
                ["history", "--state", "failed", "--limit", "20"],
                1.15,
            ),
        ):
            measured, baseline = alternate(
                lambda args=args: timed_run([*APIMART, "-q", *args], big_env),
                lambda args=args: timed_run([*APIMART, "-q", *args], empty_env),
                rounds,
            )
            results.append(
                Result(
                    f"{name} on {rows:,} rows",
                    measured,
                    baseline,
                    target,
                    notes={"baseline": "the same on an empty history"},
                )
            )
    return results
