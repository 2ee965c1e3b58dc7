"""What batch writes in the output folder: never through a link, never the key,
and one run at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from apimart_cli import console
from apimart_cli.batch.jobs import parse_line
from apimart_cli.batch.manifest import MANIFEST_NAME, JobRun, Manifest
from apimart_cli.batch.saving import write_metadata
from apimart_cli.errors import UsageError
from apimart_cli.tasks import Task

KEY = 'sk-batch\\files"0123456789'


@pytest.fixture(autouse=True)
def hidden_key() -> None:
    console.hide(KEY)


def a_run() -> JobRun:
    job = parse_line(1, "a fox", Path.cwd())
    return JobRun(job, job.request.fields())


def test_a_second_run_into_the_folder_is_refused_while_the_first_holds_it(
    tmp_path: Path,
) -> None:
    first = Manifest(tmp_path)
    first.open()
    with pytest.raises(UsageError) as caught:
        Manifest(tmp_path).open()
    assert "nothing was sent" in caught.value.message
    first.close()
    second = Manifest(tmp_path)
    second.open()  # free once the first has closed it
    second.close()


def test_the_manifest_is_made_private_and_a_loose_one_is_tightened(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path)
    manifest.open()
    manifest.close()
    assert (tmp_path / MANIFEST_NAME).stat().st_mode & 0o777 == 0o600
    (tmp_path / MANIFEST_NAME).chmod(0o644)
    Manifest(tmp_path).open()
    assert (tmp_path / MANIFEST_NAME).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("link", [os.symlink, os.link])
def test_a_link_planted_at_the_manifest_is_never_written_through(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me\n")
    folder = tmp_path / "out"
    folder.mkdir()
    link(elsewhere, folder / MANIFEST_NAME)
    with pytest.raises(UsageError):
        Manifest(folder).open()
    assert elsewhere.read_text() == "keep me\n"


def test_no_record_holds_the_key_in_any_form(tmp_path: Path) -> None:
    run = a_run()
    run.error = f"the service said: bad key {KEY}"
    manifest = Manifest(tmp_path)
    manifest.open()
    manifest.append(run.record())
    manifest.close()
    text = (tmp_path / MANIFEST_NAME).read_text()
    for form in (KEY, json.dumps(KEY)[1:-1]):
        assert form not in text
    [record] = [json.loads(line) for line in text.splitlines()]
    assert record["error"] == "the service said: bad key [API key]"


def test_the_metadata_sidecar_holds_no_key_and_follows_no_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("keep me\n")
    image = tmp_path / "fox.png"
    (tmp_path / ".fox.json.part").symlink_to(elsewhere)  # the name it once used
    (tmp_path / "fox.json").symlink_to(elsewhere)
    task = Task("task_01", "completed", raw={"created": KEY, "completed": 2})
    write_metadata(a_run(), task, 0, image)
    assert elsewhere.read_text() == "keep me\n"
    sidecar = json.loads((tmp_path / "fox.json").read_text())
    assert sidecar["created"] == "[API key]" and sidecar["task_id"] == "task_01"
    assert not (tmp_path / "fox.json").is_symlink()
    assert (tmp_path / "fox.json").stat().st_mode & 0o777 == 0o600  # private, as the manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".fox.json.part",
        "elsewhere.txt",
        "fox.json",
    ]


def test_the_metadata_sidecar_is_on_disk_before_it_takes_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    write_metadata(a_run(), Task("task_01", "completed"), 0, tmp_path / "fox.png")
    assert (tmp_path / "fox.json").stat().st_ino in synced
    assert tmp_path.stat().st_ino in synced  # and its name, in the folder
