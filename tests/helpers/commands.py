"""Running `apimart` against the sandbox on 127.0.0.1: as the user's environment has it,
and in this process, through the console script's own entry point.

A flow test (`tests/flows/`) needs the real HTTP of the sandbox but not a process of
its own: `run` gives it the command's exit code and its standard output and error
apart, at a fraction of a process's start-up. What only a process shows (signals,
pipes, a terminal, the installed script) is for `tests/e2e/`, whose `apimart` runs the
same arguments in a subprocess and returns the same `Run`.
"""

from __future__ import annotations

import faulthandler
import gc
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from apimart_cli import console
from apimart_cli.sandbox import Sandbox, SandboxConfig

API_KEY = "sk-e2e-secret-key-0123456789abcdef"  # distinctive, so that a leak is easy to spot


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stdout.splitlines()


def user_environment(base_url: str, home: Path) -> dict[str, str]:
    """The environment of a user pointed at `base_url`, with their own config and data
    folder under `home`, and none of this machine's apimart settings."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("APIMART_") and key != "NO_COLOR"
    }
    environment.update(
        APIMART_API_KEY=API_KEY,
        APIMART_BASE_URL=base_url,
        APIMART_CONFIG=str(home / "config.toml"),
        APIMART_DATA_DIR=str(home / "data"),
    )
    return environment


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A sandbox on 127.0.0.1 whose tasks take 0.6 s."""
    with Sandbox(SandboxConfig(duration=0.6)) as server:
        yield server


@pytest.fixture
def env(sandbox: Sandbox, isolated: Path) -> dict[str, str]:
    """The environment of a user pointed at the sandbox, with their own config and history."""
    return user_environment(sandbox.base_url, isolated)


def checked(run: Run) -> Run:
    """`run`, once sure that it printed neither the key nor a traceback."""
    for said in (run.stdout, run.stderr):
        assert API_KEY not in said, said
        assert "Traceback" not in said, said
    return run


def run(
    *args: str,
    env: Mapping[str, str],
    input: str | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> Run:
    """`apimart ARGS...` in this process, with exactly `env` as its environment, `cwd`
    as its folder and `input` (else nothing) on its standard input.

    A run that outlives `timeout` is a hang: the worker prints every thread's stack and
    ends, failing the test, rather than holding the whole suite.
    """
    from apimart_cli.__main__ import main

    faulthandler.dump_traceback_later(timeout, exit=True, file=sys.__stderr__)
    with as_the_user(env, cwd), CliRunner().isolation(input=input or "") as (out, err, _):
        sys.argv = ["apimart", *args]
        try:
            main()
            code = 0
        except SystemExit as exiting:
            code = exiting.code if isinstance(exiting.code, int) else (exiting.code is not None)
        finally:
            faulthandler.cancel_dump_traceback_later()
            # The command leaves what it made to its process's exit (`gc.freeze`); this
            # process goes on, and collects it as usual.
            gc.unfreeze()
            sys.stdout.flush()
            sys.stderr.flush()
        said = Run(int(code), out.getvalue().decode(), err.getvalue().decode())
    return checked(said)


@contextmanager
def as_the_user(env: Mapping[str, str], cwd: Path | None) -> Iterator[None]:
    """This process's environment, folder, arguments and signal handlers as `env` and
    `cwd` would have them; everything put back afterwards."""
    saved_environ, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_environ)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        console.configure()
