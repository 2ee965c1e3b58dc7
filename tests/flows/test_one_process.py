"""Runs in one process, as the MCP server's tools and these flows make them: what one
run leaves behind never reaches the next, and the command is `apimart` however it is
started."""

from __future__ import annotations

import errno
import io

import pytest

from apimart_cli import console
from tests.helpers.commands import run as apimart


class _FullDisk(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_output_lost_by_one_run_is_not_lost_by_the_next(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with monkeypatch.context() as full:
        full.setattr("sys.stdout", _FullDisk())
        console.data("task_one")  # the disk is full: the line is kept to be named
    assert console.lost_output()[1] == ["task_one"]

    console.open_missing_streams()  # the next run starts
    console.data("task_two")

    assert console.lost_output() == (None, [])
    assert capsys.readouterr().out == "task_two\n"


def test_a_usage_error_names_the_command_apimart(env: dict[str, str]) -> None:
    run = apimart("generate", "a fox", "--no-such-option", env=env)

    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == "Try 'apimart generate -h' for help.", run.stderr
