"""Each guarantee of safefiles: a planted link never followed, a failure leaving the old
file whole and no temporary file, the mode asked for."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli import safefiles
from tests.helpers.waiting import HANG_GUARD


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file elsewhere that a planted link points at: it must never change."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "victim"
    path.write_bytes(b"precious")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "out"
    path.mkdir()
    return path


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    safefiles.umask.cache_clear()
    try:
        yield
    finally:
        os.umask(old)
        safefiles.umask.cache_clear()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# --- create_new ------------------------------------------------------------------------


def test_create_new_never_follows_a_planted_link(folder: Path, victim: Path) -> None:
    (folder / "new").symlink_to(victim)
    with pytest.raises(FileExistsError):
        safefiles.create_new(folder / "new")
    assert victim.read_bytes() == b"precious"


def test_create_new_never_follows_a_dangling_link(folder: Path, tmp_path: Path) -> None:
    (folder / "new").symlink_to(tmp_path / "would-be-made")
    with pytest.raises(FileExistsError):
        safefiles.create_new(folder / "new")
    assert not (tmp_path / "would-be-made").exists()


def test_create_new_refuses_an_existing_file(folder: Path) -> None:
    (folder / "new").write_bytes(b"old")
    with pytest.raises(FileExistsError):
        safefiles.create_new(folder / "new")
    assert (folder / "new").read_bytes() == b"old"


@pytest.mark.usefixtures("umask_027")
@pytest.mark.parametrize("wanted", [0o600, 0o644, 0o666])
def test_create_new_gives_the_mode_exactly(folder: Path, wanted: int) -> None:
    os.close(safefiles.create_new(folder / "new", wanted))
    assert mode(folder / "new") == wanted


# --- open_no_follow ----------------------------------------------------------------------


def test_open_no_follow_refuses_a_link(folder: Path, victim: Path) -> None:
    (folder / "file").symlink_to(victim)
    with pytest.raises(OSError) as caught:
        safefiles.open_no_follow(folder / "file", os.O_RDWR | os.O_APPEND)
    assert caught.value.errno == errno.ELOOP
    assert victim.read_bytes() == b"precious"


def test_open_no_follow_does_not_wait_on_a_fifo(folder: Path) -> None:
    os.mkfifo(folder / "fifo")
    descriptor = safefiles.open_no_follow(folder / "fifo", os.O_RDONLY)  # returns at once
    try:
        assert stat.S_ISFIFO(os.fstat(descriptor).st_mode)
        assert not os.get_inheritable(descriptor)
    finally:
        os.close(descriptor)


# --- write_atomic / replacing -----------------------------------------------------------


def test_write_atomic_replaces_a_planted_link_never_writes_through_it(
    folder: Path, victim: Path
) -> None:
    path = folder / "sidecar.json"
    path.symlink_to(victim)
    safefiles.write_atomic(path, b"{}")
    assert not path.is_symlink() and path.read_bytes() == b"{}"
    assert victim.read_bytes() == b"precious"
    assert names(folder) == ["sidecar.json"]


@pytest.mark.usefixtures("umask_027")
@pytest.mark.parametrize(
    ("asked", "made"),
    [(safefiles.PRIVATE, 0o600), (0o644, 0o644), (None, 0o640)],
)
def test_write_atomic_gives_the_mode_asked_for(folder: Path, asked: int | None, made: int) -> None:
    """Exactly the mode asked for, over an old file of another mode; None: the umask's."""
    path = folder / "file"
    path.write_bytes(b"old")
    path.chmod(0o604)
    safefiles.write_atomic(path, b"new", safefiles.usual_mode() if asked is None else asked)
    assert mode(path) == made


def test_a_failed_write_keeps_the_old_file_whole_and_leaves_no_temporary_file(
    folder: Path,
) -> None:
    path = folder / "index.html"
    path.write_bytes(b"old page")
    with pytest.raises(RuntimeError), safefiles.replacing(path) as handle:
        handle.write(b"half a new")
        raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"old page"
    assert names(folder) == ["index.html"]


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_a_failed_sync_or_rename_keeps_the_old_file_and_leaves_no_temporary_file(
    folder: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = folder / "config.toml"
    path.write_bytes(b"old")

    def fail(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, failing, fail)
    with pytest.raises(OSError, match="No space"):
        safefiles.write_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert names(folder) == ["config.toml"]


def test_the_new_content_is_synced_before_the_rename_and_the_folder_after(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = folder / "file"
    done: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        kind = "folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file"
        done.append(f"sync {kind}")
        real_fsync(descriptor)

    def replace(source: str | Path, target: str | Path) -> None:
        done.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    safefiles.write_atomic(path, b"new")
    assert done == ["sync file", "rename", "sync folder"]
    assert path.read_bytes() == b"new"


def test_a_folder_that_cannot_be_synced_does_not_undo_the_write(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        if stat.S_ISDIR(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    safefiles.write_atomic(folder / "file", b"new")
    assert (folder / "file").read_bytes() == b"new"


def test_a_temporary_name_taken_by_a_planted_link_is_passed_over(
    folder: Path, victim: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a link at the very name the temporary file would take is never followed."""
    draws = iter([b"\x00" * 6, b"\x01" * 6])
    monkeypatch.setattr(os, "urandom", lambda size: next(draws))
    (folder / f".file.{'00' * 6}.tmp").symlink_to(victim)
    safefiles.write_atomic(folder / "file", b"new")
    assert (folder / "file").read_bytes() == b"new"
    assert victim.read_bytes() == b"precious"
    assert names(folder) == [f".file.{'00' * 6}.tmp", "file"]


# --- move_into_place ---------------------------------------------------------------------


def test_move_into_place_keeps_a_link_at_the_target_unless_forced(
    folder: Path, victim: Path
) -> None:
    target = folder / "image.png"
    target.symlink_to(victim)
    source = folder / ".part"
    source.write_bytes(b"image")
    assert not safefiles.move_into_place(source, target, force=False)
    assert target.is_symlink() and victim.read_bytes() == b"precious"
    assert not source.exists()
    source.write_bytes(b"image")
    assert safefiles.move_into_place(source, target, force=True)
    assert not target.is_symlink() and target.read_bytes() == b"image"
    assert victim.read_bytes() == b"precious"


def test_a_move_whose_source_another_run_removed_after_the_link_is_done(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Between the link to the final name and the source's unlink, the source has two
    # names: a second run opening it then takes it for a planted hard link and removes
    # it. The image is in place all the same: that is a move done, not an error.
    target, source = folder / "image.png", folder / ".part"
    source.write_bytes(b"image")
    real_link = os.link

    def link_then_removed(src: Path, dst: Path, **kwargs: bool) -> None:
        real_link(src, dst, **kwargs)
        os.unlink(src)  # the other run

    monkeypatch.setattr(os, "link", link_then_removed)
    assert safefiles.move_into_place(source, target, force=False)
    assert target.read_bytes() == b"image"
    assert not source.exists()


def test_a_lock_is_held_until_its_file_is_closed_and_a_second_holder_waits(
    folder: Path,
) -> None:
    # flock locks an open file description: two opens contend as two processes would.
    path = folder / "part"
    path.write_bytes(b"")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        assert safefiles.lock(first, wait=False)
        assert not safefiles.lock(second, wait=False), "a second holder was let in"
        taken = threading.Event()
        waiter = threading.Thread(target=lambda: (safefiles.lock(second), taken.set()))
        waiter.start()
        assert not taken.wait(0.2), "a waiting lock was given while the first was held"
        os.close(first)
        first = -1
        waiter.join(HANG_GUARD)
        assert taken.is_set(), "the lock was not given once its holder closed the file"
    finally:
        for fd in (first, second):
            if fd >= 0:
                os.close(fd)
