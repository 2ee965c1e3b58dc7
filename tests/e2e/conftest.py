"""End-to-end: the real `apimart` command in a subprocess, against a sandbox on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.helpers.images import png_size as png_size  # the e2e tests' own name for it

API_KEY = "sk-e2e-secret-key-0123456789abcdef"
# The same tests, with the installed console script where there is one.
_SCRIPT = Path(sys.executable).with_name("apimart")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "apimart_cli"]


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.6)) as server:
        yield server


@pytest.fixture
def env(sandbox: Sandbox, isolated: Path) -> dict[str, str]:
    """The environment of a user pointed at the sandbox, with their own config and history."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("APIMART_") and key != "NO_COLOR"
    }
    environment.update(
        APIMART_API_KEY=API_KEY,
        APIMART_BASE_URL=sandbox.base_url,
        APIMART_CONFIG=str(isolated / "config.toml"),
        APIMART_DATA_DIR=str(isolated / "data"),
    )
    return environment


def apimart(
    *args: str,
    env: Mapping[str, str],
    input: str | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> Run:
    """Run the real command; the key must never appear in what it prints."""
    result = subprocess.run(
        [*COMMAND, *args],
        input=input,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=timeout,
        cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    assert API_KEY not in result.stdout and API_KEY not in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return Run(result.returncode, result.stdout, result.stderr)


def shell(
    script: str, *, env: Mapping[str, str], timeout: float = 60, cwd: Path | None = None
) -> Run:
    """Run a shell pipeline with `apimart` on the PATH."""
    environment = dict(env)
    environment["PATH"] = f"{Path(COMMAND[0]).parent}{os.pathsep}{environment.get('PATH', '')}"
    if len(COMMAND) > 1:  # no console script: a function stands in for it
        script = f'apimart() {{ "{sys.executable}" -m apimart_cli "$@"; }}\n{script}'
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )
    assert API_KEY not in result.stdout and API_KEY not in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return Run(result.returncode, result.stdout, result.stderr)
