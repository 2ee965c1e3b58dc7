"""Shared pieces: alternating timed runs, medians, the command under test."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_SCRIPT = Path(sys.executable).with_name("apimart")
APIMART = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "apimart_cli"]


@dataclass
class Result:
    """One benchmark's figures: a name, the measured and baseline medians, extras."""

    name: str
    measured: float
    baseline: float | None = None
    target: float | None = None
    unit: str = "s"
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.measured / self.baseline

    def row(self) -> str:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        target = "" if self.target is None else f"≤ {self.target:g}x"
        met = (
            ""
            if self.ratio is None or self.target is None
            else ("yes" if self.ratio <= self.target else "NO")
        )
        baseline = "" if self.baseline is None else f"{self.baseline:.3f}"
        extra = ", ".join(f"{k}: {v}" for k, v in self.notes.items())
        cells = [self.name, f"{self.measured:.3f}", baseline, ratio, target, met, extra]
        return "| " + " | ".join(cells) + " |"


def alternate(a: Callable[[], float], b: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Medians of `a` and `b`, run A B A B ... so that drift hits both alike."""
    times_a, times_b = [], []
    for _ in range(rounds):
        times_a.append(a())
        times_b.append(b())
    return statistics.median(times_a), statistics.median(times_b)


def timed_run(argv: Sequence[str], env: dict[str, str] | None = None, **kwargs: object) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def run_with_peak_memory(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one command, measured by benchmarks/peak_rss.py."""
    wrapper = [sys.executable, str(Path(__file__).with_name("peak_rss.py"))]
    started = time.perf_counter()
    result = subprocess.run(
        [*wrapper, *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise subprocess.CalledProcessError(result.returncode, list(argv), stderr=result.stderr)
    kib = int(result.stderr.strip().splitlines()[-1].split()[-1])
    return elapsed, kib / 1024


def user_env(base_url: str, home: Path) -> dict[str, str]:
    """An environment pointed at a sandbox, with its own config and history."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("APIMART_") and not k.lower().endswith("_proxy")
    }
    env.update(
        APIMART_API_KEY="sk-bench",
        APIMART_BASE_URL=base_url,
        APIMART_CONFIG=str(home / "config.toml"),
        APIMART_DATA_DIR=str(home / "data"),
    )
    return env
