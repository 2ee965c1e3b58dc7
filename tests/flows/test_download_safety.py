"""`apimart download` in a folder where things were planted, and from an image host
that cuts, encodes, changes or breaks what it sends: the command run in this process.

Nothing is written through a link or into a file the tool did not make; a folder at
an image's name is an error, not a saved image; an image cut short is resumed, never
saved cut. A download interrupted by a signal, and two downloads at once, need
processes of their own: tests/e2e/test_download_safety.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, RecordedRequest, Sandbox, SandboxConfig
from tests.helpers.commands import run as apimart
from tests.helpers.records import everything_in, image_of, submit_direct, wait_completed


@pytest.fixture
def task_id(sandbox: Sandbox) -> str:
    task = submit_direct(sandbox)
    sandbox.advance(1)  # completed now, not in the sandbox's 0.6 s
    wait_completed(sandbox, task)
    return task


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("planted", ["{id}_0.part", "{id}_0.validator"])
def test_a_link_planted_at_a_working_file_is_never_written_through(
    sandbox: Sandbox,
    env: dict[str, str],
    task_id: str,
    out: Path,
    victim: Path,
    planted: str,
) -> None:
    (out / ("." + planted.format(id=task_id))).symlink_to(victim)
    run = apimart("download", task_id, "-o", str(out), "--no-metadata", env=env)
    assert run.returncode == 0, run.stderr
    assert victim.read_bytes() == b"precious"
    assert Path(run.stdout.strip()).read_bytes() == image_of(sandbox, task_id)
    assert everything_in(out) == [f"{task_id}_0.png"]


def test_a_fifo_at_the_part_file_does_not_hang_the_download(
    env: dict[str, str], task_id: str, out: Path
) -> None:
    os.mkfifo(out / f".{task_id}_0.part")
    run = apimart("download", task_id, "-o", str(out), "--no-metadata", env=env, timeout=30)
    assert run.returncode == 0, run.stderr
    assert everything_in(out) == [f"{task_id}_0.png"]


def test_a_link_at_the_image_name_is_kept_without_force_and_replaced_with_it(
    sandbox: Sandbox, env: dict[str, str], task_id: str, out: Path, victim: Path
) -> None:
    final = out / f"{task_id}_0.png"
    final.symlink_to(victim)

    kept = apimart("download", task_id, "-o", str(out), "--no-metadata", env=env)
    assert kept.returncode == 0, kept.stderr
    assert kept.lines == [str(final)]
    assert "kept" in kept.stderr
    assert final.is_symlink() and victim.read_bytes() == b"precious"

    forced = apimart("download", task_id, "-o", str(out), "--no-metadata", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert not final.is_symlink() and final.read_bytes() == image_of(sandbox, task_id)
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_folder_at_the_image_name_is_an_error_naming_it(
    env: dict[str, str], task_id: str, out: Path, force: list[str]
) -> None:
    (out / f"{task_id}_0.png").mkdir()
    run = apimart("download", task_id, "-o", str(out), "--no-metadata", *force, env=env)
    assert run.returncode == 2, run.stderr
    assert run.stdout == ""  # never printed as a saved image
    assert str(out / f"{task_id}_0.png") in run.stderr
    assert "kept" not in run.stderr


def test_a_link_planted_at_a_batch_sidecar_is_never_written_through(
    env: dict[str, str], tmp_path: Path, out: Path, victim: Path
) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text("a fox\n")
    for planted in (".1-a-fox-0.json.part", "1-a-fox-0.json"):
        (out / planted).symlink_to(victim)
    args = ["batch", str(jobs), "-o", str(out), "--name", "{line}-{slug}-{index}", "--metadata"]
    run = apimart(*args, "--no-metadata", env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert victim.read_bytes() == b"precious"
    assert json.loads((out / "1-a-fox-0.json").read_text())["prompt"] == "a fox"


# -- what the image host sends: cut without a length, encoded, changed, broken ------------


@pytest.fixture
def noisy(env: dict[str, str]) -> Iterator[tuple[Sandbox, str, dict[str, str]]]:
    """A sandbox with a completed task whose image (about 1.2 MB) does not compress."""
    with Sandbox(SandboxConfig(duration=0.1, noise=True)) as sandbox:
        task = submit_direct(sandbox, size="640x640")
        wait_completed(sandbox, task)
        yield sandbox, task, {**env, "APIMART_BASE_URL": sandbox.base_url}


def image_requests(sandbox: Sandbox) -> list[RecordedRequest]:
    """The command's requests to the image host (not this test's own)."""
    return [
        r
        for r in sandbox.requests
        if r.origin == "image" and r.headers.get("user-agent", "").startswith("apimart")
    ]


def test_an_image_cut_short_without_a_length_is_resumed_to_its_end(
    noisy: tuple[Sandbox, str, dict[str, str]], out: Path
) -> None:
    sandbox, task, user = noisy
    expected = image_of(sandbox, task)
    sandbox.inject(Fault("unsized", path="/f/", cut=0.5))
    run = apimart("download", task, "-o", str(out), "--no-metadata", env=user)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).read_bytes() == expected
    assert everything_in(out) == [f"{task}_0.png"]
    assert any("range" in r.headers for r in image_requests(sandbox))


def test_an_image_cut_short_without_a_length_is_never_saved_and_the_retry_saves_it_whole(
    noisy: tuple[Sandbox, str, dict[str, str]], out: Path
) -> None:
    sandbox, task, user = noisy
    sandbox.inject(Fault("unsized", path="/f/", cut=0.5, times=1))
    run = apimart("download", task, "-o", str(out), "--no-metadata", env=user)
    assert run.returncode == 0, run.stderr
    assert "cut short" in run.stderr  # the first try, refused and retried
    # Had the cut image been saved, the retry would have found it there and kept it.
    assert Path(run.stdout.strip()).read_bytes() == image_of(sandbox, task)
    assert everything_in(out) == [f"{task}_0.png"]


def test_a_gzip_encoded_image_is_decoded_and_saved(
    sandbox: Sandbox, env: dict[str, str], task_id: str, out: Path
) -> None:
    expected = image_of(sandbox, task_id)
    sandbox.inject(Fault("gzip", path="/f/", times=6))  # every try: one would do, retried
    run = apimart("download", task_id, "-o", str(out), "--no-metadata", env=env)
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()).read_bytes() == expected
    assert len(image_requests(sandbox)) == 1
    assert image_requests(sandbox)[0].headers["accept-encoding"] == "identity"


def test_a_resume_after_the_image_changed_saves_the_new_image_whole(
    noisy: tuple[Sandbox, str, dict[str, str]], out: Path
) -> None:
    sandbox, task, user = noisy
    old = image_of(sandbox, task)
    sandbox.inject(Fault("truncate", path="/f/"))
    sandbox.inject(Fault("swap", path="/f/"))  # the resume finds another picture
    run = apimart("download", task, "-o", str(out), "--no-metadata", env=user)
    assert run.returncode == 0, run.stderr
    saved = Path(run.stdout.strip()).read_bytes()
    new = image_of(sandbox, task)
    assert new != old
    assert saved == new  # whole, not the old image's first half and the new one's rest
    cut, resume = image_requests(sandbox)
    assert "range" not in cut.headers and "if-range" in resume.headers


def test_a_png_signature_followed_by_garbage_is_not_saved(
    sandbox: Sandbox, env: dict[str, str], task_id: str, out: Path
) -> None:
    sandbox.inject(Fault("garbage", path="/f/"))
    run = apimart("download", task_id, "-o", str(out), "--no-metadata", env=env)
    assert run.returncode == 5, run.stderr
    assert run.stdout == ""
    assert "broken image" in run.stderr
    assert everything_in(out) == []
