"""What a person watching the screen sees: the real command in a real terminal (tmux,
80 columns), its screen captured at several moments of a wait and of a download."""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.e2e.conftest import COMMAND
from tests.helpers.terminal import WIDTH, Terminal

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

CLOCK = re.compile(r"\b\d+:\d\d:\d\d\b")


@pytest.fixture
def slow_sandbox() -> Iterator[Sandbox]:
    # Long enough to see a wait move, images big enough to see a download move.
    config = SandboxConfig(duration=4.0, download_rate=400_000, noise=True)
    with Sandbox(config) as server:
        yield server


class Valve:
    """The sandbox's throttled downloads, held where they are while the valve is shut;
    once it opens, the rest of each flows at once. A test watches a download move for as
    long as it needs, on a machine however slow, and waits no longer than that."""

    def __init__(self, sandbox: Sandbox, *, shut: bool = False) -> None:
        self._shut = shut
        self._open = threading.Event()
        real = sandbox.pause

        def pause(seconds: float | None) -> bool:
            if seconds is None or seconds <= 0:  # not a download's: as it was
                return real(seconds)
            if self._open.is_set():
                return real(0)
            if not self._shut:
                return real(seconds)
            while not self._open.wait(0.05) and real(0):  # until open, or the sandbox stops
                pass
            return real(0)

        sandbox.pause = pause  # type: ignore[method-assign]

    def shut(self) -> None:
        self._shut = True

    def open(self) -> None:
        self._open.set()


@pytest.fixture
def terminal_env(slow_sandbox: Sandbox, isolated: Path) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("APIMART_", "TMUX")) and key != "NO_COLOR"
    }
    environment.update(
        APIMART_API_KEY="sk-screens-0123456789",
        APIMART_BASE_URL=slow_sandbox.base_url,
        APIMART_CONFIG=str(isolated / "config.toml"),
        APIMART_DATA_DIR=str(isolated / "data"),
        TERM="xterm-256color",
    )
    return environment


@pytest.fixture
def run_in_terminal(
    terminal_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., Terminal]]:
    terminals: list[Terminal] = []

    def start(*args: str) -> Terminal:
        terminal = Terminal([*COMMAND, *args], terminal_env, tmp_path)
        terminals.append(terminal)
        return terminal

    yield start
    for terminal in terminals:
        terminal.close()


def _row(screen: list[str], start: str) -> str | None:
    return next((line for line in screen if line.startswith(start)), None)


def test_a_wait_and_its_downloads_on_an_80_column_terminal(
    run_in_terminal: Callable[..., Terminal], slow_sandbox: Sandbox, tmp_path: Path
) -> None:
    valve = Valve(slow_sandbox)
    terminal = run_in_terminal("generate", "a fox", "-n", "2", "--wait", "-o", "out")

    # While it waits: the label moves between polls, each line has one clock.
    labels: set[str] = set()

    def waiting(screen: list[str]) -> bool:
        for line in screen:
            if line.startswith("task_") and "left" in line:
                assert len(CLOCK.findall(line)) == 1 and len(line) <= WIDTH, line
                labels.add(CLOCK.sub("", line))  # the label, not the clock, must move
        return len(labels) >= 3

    terminal.until(waiting)
    task_id = next(iter(labels)).split()[0]

    # While both images download: a line each, bytes and rate in full, the clock running.
    screen = terminal.until(
        lambda s: sum(bool(re.search(r"image \d .* of .* MiB, \d+ KiB/s", line)) for line in s) == 2
    )
    valve.shut()  # the downloads go no further until the clock is seen to run
    downloading = [line for line in screen if line.lstrip().startswith("image")]
    assert all(len(CLOCK.findall(line)) == 1 and len(line) <= WIDTH for line in downloading)
    first = CLOCK.findall(downloading[0])[0]
    screen = terminal.until(
        lambda s: any(
            "image 0" in line and CLOCK.findall(line) and CLOCK.findall(line)[0] != first
            for line in s
        )
    )
    valve.open()

    # Saved: the saved state replaces the downloading line, and nothing was cut.
    assert terminal.exit_code() == 0
    screen = terminal.screen()
    images = [line for line in screen if line.lstrip().startswith("image")]
    assert len(images) == 2 and all("saved" in line for line in images), screen
    assert not any("downloading" in line or "of " in line for line in images), screen
    assert all(len(line) <= WIDTH and "…" not in line for line in screen), screen
    assert any(line.startswith(f"{task_id} ") and "2 images saved" in line for line in screen)
    paths = [line for line in screen if line.startswith("out/")]
    assert len(paths) == 2, screen  # each path once, as the data it is
    assert any(line.startswith("2 images saved, 0 tasks failed") for line in screen)


def test_a_batch_on_a_terminal_prints_each_path_once_and_its_clock_runs(
    run_in_terminal: Callable[..., Terminal], slow_sandbox: Sandbox, tmp_path: Path
) -> None:
    # The jobs end at once but for their downloads, held until the clock is seen to run.
    slow_sandbox.configure(duration=0.6)
    valve = Valve(slow_sandbox, shut=True)
    (tmp_path / "jobs.txt").write_text("a fox\nan owl\n")
    terminal = run_in_terminal("batch", "jobs.txt", "-o", "out")
    clocks: set[str] = set()

    def ticking(screen: list[str]) -> bool:
        clocks.update(clock for line in screen for clock in CLOCK.findall(line))
        return len(clocks) >= 2

    terminal.until(ticking)  # the bar's clock runs while the jobs process
    valve.open()
    assert terminal.exit_code(timeout=120) == 0
    screen = terminal.screen()
    paths = [line for line in screen if "out/" in line]
    assert len(paths) == 2 and all(line.startswith("out/") for line in paths), screen
    assert all(len(line) <= WIDTH for line in screen), screen
