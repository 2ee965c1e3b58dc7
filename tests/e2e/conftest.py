"""End-to-end: the real `apimart` command in a subprocess, against a sandbox on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.helpers.commands import API_KEY as API_KEY
from tests.helpers.commands import Run as Run
from tests.helpers.commands import checked
from tests.helpers.commands import env as env
from tests.helpers.commands import sandbox as sandbox
from tests.helpers.images import png_size as png_size  # the e2e tests' own name for it

# The same tests, with the installed console script where there is one.
_SCRIPT = Path(sys.executable).with_name("apimart")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "apimart_cli"]


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
    return checked(Run(result.returncode, result.stdout, result.stderr))


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
    return checked(Run(result.returncode, result.stdout, result.stderr))


def start(*args: str, env: Mapping[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    """The real command started, its output piped: for a test that signals it midway."""
    return subprocess.Popen(
        [*COMMAND, *args],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    """What a started command printed, once it ended: no key and no traceback in it."""
    stdout, stderr = process.communicate(timeout=30)
    checked(Run(process.returncode, stdout, stderr))
    return stdout, stderr
