"""The use-cases, called as the MCP server and the commands call them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli import app
from apimart_cli.deadline import Deadline
from apimart_cli.downloads import Downloader
from apimart_cli.engine import WaitPlan
from apimart_cli.payload import build_request
from apimart_cli.progress import SilentReporter
from apimart_cli.sandbox import Sandbox, SandboxConfig
from apimart_cli.settings import resolve

SAID: list[str] = []
UI = app.Ui(SAID.append, SAID.append, hide=lambda secret: None, redact=lambda text: text)


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.1)) as server:
        yield server


def test_generate_and_wait_checks_the_folder_once_and_saves_into_it(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared: list[Path] = []
    prepare = Downloader.prepare

    def counted(self: Downloader) -> None:
        prepared.append(self.folder)
        prepare(self)

    monkeypatch.setattr(Downloader, "prepare", counted)
    out = tmp_path / "out"
    settings = resolve(
        api_key="sk-app",
        base_url=sandbox.base_url,
        output_dir=str(out),
        info=SAID.append,
        warn=SAID.append,
    )
    deadline = Deadline.after(30)
    waiting = app.Waiting(WaitPlan(deadline, folder=out, interval=0.05), SilentReporter)
    heard: list[list[str]] = []

    generated = app.generate(
        build_request("a fox"),
        settings,
        UI,
        deadline=deadline,
        waiting=waiting,
        on_submitted=heard.append,
    )

    assert heard == [generated.task_ids] and generated.outcome is not None
    assert prepared == [out], "one Downloader checks the folder the wait saves into"
    (task_id,) = generated.task_ids
    assert generated.outcome.files[task_id] == [out / f"{task_id}_0.png"]
