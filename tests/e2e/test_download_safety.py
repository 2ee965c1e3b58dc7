"""End-to-end: `apimart download` cut short by a signal, or run twice at once.

An interrupted download leaves its part file for the next run; two runs into one
folder save one whole image. Each needs a process of its own (a signal; a lock
between two runs); the run that follows is in this process. What a planted folder
or a misbehaving image host does: tests/flows/test_download_safety.py.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox, SandboxConfig
from tests.e2e.conftest import COMMAND, finish, start
from tests.helpers.commands import run as apimart
from tests.helpers.records import (
    everything_in,
    final_images,
    image_of,
    submit_direct,
    wait_completed,
)
from tests.helpers.waiting import wait_until


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.fixture
def slow_image(env: dict[str, str]) -> Iterator[tuple[Sandbox, str, dict[str, str]]]:
    """A sandbox serving a 1.2 MB image at 400 kB/s: a download lasts about 3 s."""
    with Sandbox(SandboxConfig(duration=0.1, noise=True, download_rate=400_000)) as sandbox:
        task = submit_direct(sandbox, size="640x640")
        wait_completed(sandbox, task)
        yield sandbox, task, {**env, "APIMART_BASE_URL": sandbox.base_url}


def wait_for_bytes(part: Path, at_least: int) -> None:
    wait_until(
        lambda: part.exists() and part.stat().st_size >= at_least,
        what=f"{part} reaching {at_least} bytes",
    )


def test_sigterm_during_a_download_leaves_the_part_file_to_resume(
    slow_image: tuple[Sandbox, str, dict[str, str]], out: Path
) -> None:
    sandbox, task, user = slow_image
    process = subprocess.Popen(
        [*COMMAND, "download", task, "-o", str(out), "--no-metadata"],
        env=user,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    part = out / f".{task}_0.part"
    wait_for_bytes(part, 100_000)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)
    assert part.exists() and final_images(out) == []
    assert (out / f".{task}_0.validator").exists()  # which file the part holds

    sandbox.configure(download_rate=None)  # the resume need not crawl
    run = apimart("download", task, "-o", str(out), "--no-metadata", env=user)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).read_bytes() == image_of(sandbox, task)
    assert everything_in(out) == [f"{task}_0.png"]
    resumed = [r for r in sandbox.requests if r.origin == "image" and "range" in r.headers]
    assert resumed, "the second run should resume with a Range request"


def test_two_downloads_of_one_task_into_one_folder_save_one_whole_image(
    slow_image: tuple[Sandbox, str, dict[str, str]], out: Path
) -> None:
    sandbox, task, user = slow_image
    first = start("download", task, "-o", str(out), "--no-metadata", env=user)
    wait_for_bytes(out / f".{task}_0.part", 100_000)  # the first run is writing...
    second = apimart("download", task, "-o", str(out), "--no-metadata", env=user)  # ...now
    first_out, first_err = finish(first)
    assert [first.returncode, second.returncode] == [0, 0], [first_err, second.stderr]
    final = out / f"{task}_0.png"
    assert [first_out, second.stdout] == [f"{final}\n"] * 2
    sandbox.configure(download_rate=None)  # the image to compare with need not crawl
    digest = hashlib.sha256(final.read_bytes()).digest()
    assert digest == hashlib.sha256(image_of(sandbox, task)).digest()
    assert everything_in(out) == [final.name]
