"""Files written safely: made new, opened never through a link, replaced atomically.

Every file the tool writes goes through one of these, so each write gives the
same guarantees:

- `create_new`: a file made by this call and no other, never through whatever
  is at its name (a link planted there is an error, not followed), with the
  mode asked for exactly.
- `open_no_follow`: an existing name opened never through a symbolic link,
  never blocking on a FIFO, never inherited by a child process.
- `replacing` / `write_atomic`: a file's new content written to a temporary
  file beside it, flushed and synced, renamed over it, and the folder synced
  where the platform allows. At every moment the name holds the old content or
  the new, whole; a link at the name is replaced, never written through; on any
  failure the temporary file is removed and the old file is left as it was.
  A file that is only a hint (`durable=False`: a download's validator) is not
  synced: a power cut may lose it, or leave it empty, never half-written.
- `move_into_place`: a finished file renamed to its name, never replacing one
  already there unless told to, and the name synced with its folder.
- `lock`: an open file locked against other processes for as long as it is open,
  waiting for another holder or saying at once that there is one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import IO

# Never through a link at the last name, never blocking on a FIFO, never inherited.
NO_FOLLOW = (
    getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)
PRIVATE = 0o600  # only this user reads or writes it
_TEMPORARY_TRIES = 100  # random names taken before giving up: a collision is one in 2**48


def open_no_follow(path: Path, flags: int, mode: int = PRIVATE) -> int:
    """`os.open(path, flags)` never through a symbolic link at `path` (that is an OSError,
    ELOOP), never blocking on a FIFO, never inherited. A file it creates gets `mode`
    less the umask, as `os.open` makes it."""
    return os.open(path, flags | NO_FOLLOW, mode)


def create_new(path: Path, mode: int = PRIVATE) -> int:
    """A new file at `path`, open for writing: made by this call, so no other process
    can have it open, and never through anything at the name (a file, a link, dangling
    or not, is FileExistsError). Its permissions are exactly `mode`, the umask aside."""
    descriptor = open_no_follow(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode & 0o700)
    try:
        os.fchmod(descriptor, mode)
    except BaseException:
        os.close(descriptor)
        path.unlink(missing_ok=True)
        raise
    return descriptor


@contextlib.contextmanager
def replacing(path: Path, mode: int = PRIVATE, *, durable: bool = True) -> Iterator[IO[bytes]]:
    """A file to write `path`'s new content into, which replaces `path` atomically.

    The content goes into a new file (`create_new`) beside `path` under a name of
    its own; when the block ends it is flushed and synced to disk, renamed over
    `path` (`os.replace`: a link at `path` is replaced, not followed), and the
    folder is synced so that the rename survives a crash, where the platform lets a
    folder be synced. If anything fails, or the block raises, the temporary file is
    removed and `path` is as it was. The new file's permissions are exactly `mode`.
    Not `durable`: neither synced (a power cut may lose the new content, or leave the
    name empty), for a file nothing is lost without.
    """
    temporary, descriptor = _temporary_beside(path, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if durable:
        sync_folder(path.parent)


def write_atomic(path: Path, content: bytes, mode: int = PRIVATE, *, durable: bool = True) -> None:
    """`content` at `path`, replacing what was there atomically (see `replacing`)."""
    with replacing(path, mode, durable=durable) as handle:
        handle.write(content)


def _temporary_beside(path: Path, mode: int) -> tuple[Path, int]:
    """A new file of a name nobody could guess in `path`'s folder: its path, open for writing."""
    for _ in range(_TEMPORARY_TRIES):
        temporary = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return temporary, create_new(temporary, mode)
        except FileExistsError:
            continue
    raise FileExistsError(f"No free name for a temporary file beside {path}")


def sync_folder(folder: Path) -> None:
    """Make the names in `folder` durable (a rename into it); nothing where the platform
    cannot open or sync a folder."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some file systems refuse to sync a folder: the rename stands
        pass
    finally:
        os.close(descriptor)


def move_into_place(source: Path, target: Path, *, force: bool) -> bool:
    """Rename `source` to `target`; False (`source` removed) if `target` exists, unless force.

    Both are renames or links of names: a link at `target` is replaced (with
    force) or kept, never written through. Moved, the name is synced with its folder
    (`sync_folder`): a power cut after this returns keeps it, as the history that
    records it next keeps its record.
    """
    moved = _move(source, target, force=force)
    if moved:
        sync_folder(target.parent)
    return moved


def _move(source: Path, target: Path, *, force: bool) -> bool:
    if force:
        source.replace(target)
        return True
    try:
        os.link(source, target, follow_symlinks=False)  # fails if target exists: no race
    except FileExistsError:
        source.unlink(missing_ok=True)
        return False
    except OSError:  # no hard links on this file system
        if os.path.lexists(target):
            source.unlink()
            return False
        source.replace(target)
        return True
    # Linked, `source` has two names until this unlink: another run that opens it then
    # may take it for a planted hard link and remove it. The file is in place either way.
    source.unlink(missing_ok=True)
    return True


def lock(fd: int, *, wait: bool = True) -> bool:
    """Lock the open file `fd` against other processes (an advisory, exclusive lock held
    until it is closed), waiting for another holder to let go; with `wait=False`, False
    at once if another process holds it. Where the platform has no such lock, True."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock to take
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def usual_mode(bits: int = 0o666) -> int:
    """The permissions a new file gets from `bits` under the process's umask."""
    return bits & ~umask()


@cache
def umask() -> int:
    """The process's umask, read without changing it (other threads create files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022
