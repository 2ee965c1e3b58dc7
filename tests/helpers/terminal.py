"""A real terminal for tests: a command in a tmux pane, its screen read as text."""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

WIDTH = 80


class Terminal:
    """A command running in a tmux pane of 80 columns by 24 lines."""

    def __init__(
        self, command: list[str], env: dict[str, str], cwd: Path, *, interactive: bool = False
    ) -> None:
        """`command` run by bash (its exit code kept), or with `interactive` the
        command itself (a shell to type into)."""
        self.name = f"apimart-{uuid.uuid4().hex[:8]}"
        self.done = cwd / "exit-code"
        line = " ".join(shlex.quote(part) for part in command)
        script = f"{line}; echo $? > {shlex.quote(str(self.done))}; sleep 600"
        socket = cwd / f"tmux-{self.name}.sock"
        self.tmux = ["tmux", "-S", str(socket)]
        size = ["-x", str(WIDTH), "-y", "24"]
        shell = command if interactive else ["bash", "--norc", "--noprofile", "-c", script]
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-s", self.name, *size, "-c", str(cwd), *shell],
            env=env,
            check=True,
        )

    def screen(self) -> list[str]:
        result = subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-t", self.name],
            capture_output=True,
            text=True,
            check=True,
        )
        return [line.rstrip() for line in result.stdout.splitlines() if line.strip()]

    def until(self, seen: Callable[[list[str]], bool], timeout: float = 60) -> list[str]:
        """The screen once `seen` holds of it (polled, never a fixed sleep)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if seen(screen):
                return screen
            assert time.monotonic() < deadline, "\n".join(screen)
            time.sleep(0.1)

    def exit_code(self, timeout: float = 60) -> int:
        self.until(lambda _: self.done.exists(), timeout)
        return int(self.done.read_text())

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)

    def type(self, *keys: str) -> None:
        """Keys as tmux names them: text, `Tab`, `Enter`, `C-c`."""
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True)
