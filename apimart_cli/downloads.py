"""Save result images: named by task, streamed to a part file, checked, renamed.

No half-written image ever sits under its final name. The part file has a fixed
name (`.<task>_<i>.part`) so that the next run into the same folder can resume
what a killed run left (a `Range` request) or remove it; beside it,
`.<task>_<i>.validator` keeps the host's `ETag` or `Last-Modified`, so that a
resume asks (`If-Range`) for the rest of the same file and nothing else.

Nothing here writes through a link or into a file it did not make: the part
file is opened without following a link, and whatever sits at its name that is
not a plain file of ours (a link, a FIFO, a hard link to a file elsewhere) is
removed, not used. The final name is taken by a rename, which replaces a link
rather than writing through it.

A PNG that is to carry the provenance chunk (a `Stamp`) gets it as the bytes
stream past its IHDR, so the image is written once, already stamped; the
validator file records how long the chunk is, so that a resume asks the host
for the rest from the right offset.

Each try streams through `Client.stream` (which fails a stalled transfer) and
the retries go through `retry.retrying`, both bounded by the client's
deadline; a download the deadline cuts short keeps its part file, flushed as
each piece arrived, for the next run to resume.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import errno
import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from apimart_cli import safefiles
from apimart_cli.constants import MAX_IMAGE_DOWNLOAD_BYTES, MAX_VIDEO_DOWNLOAD_BYTES
from apimart_cli.errors import (
    ApimartError,
    ServiceError,
    TaskError,
    UsageError,
    WaitTimeout,
    named,
    shown,
)
from apimart_cli.images import (
    EXTENSIONS,
    IHDR_END,
    VIDEO_CONTENT_TYPES,
    VIDEO_EXTENSIONS,
    extension_for,
    is_png_head,
    is_whole_png_chunk,
    media_extension,
    sniff_mime,
    sniff_video,
)
from apimart_cli.integrity import flaw, is_video
from apimart_cli.retry import RETRYABLE_STATUSES, Transient, parse_retry_after, retrying
from apimart_cli.tasks import ResultImage, validate_task_id

if TYPE_CHECKING:
    from apimart_cli.client import Client, Reply

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_GONE_STATUSES = frozenset({403, 404, 410})
_IDENTITY = ("", "identity")

_VALIDATOR_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Stamp:
    """A chunk that goes into a PNG as it is saved, right after its IHDR (the provenance).

    `chunk` is asked for once the image's head has arrived, on the download thread;
    an image that is not a PNG is saved as served.
    """

    chunk: Callable[[], bytes]


# What `download` does before the name: a step run on the verified part file before it
# takes its final name, or a `Stamp` put in as the bytes arrive.
Finish = Callable[[Path], None] | Stamp
# Told of a download's progress: bytes in the part file so far (a resumed part
# included), and the full size where the host said it (None where it did not).
OnProgress = Callable[[int, "int | None"], None]


@dataclass(frozen=True)
class SavedFile:
    path: Path
    kept_existing: bool = False  # the file was there already and was not overwritten


class _Retry(Exception):
    """A transient download failure: try again, resuming from what was written."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def format_time(unix_seconds: int) -> str:
    try:
        moment = datetime.fromtimestamp(unix_seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):  # -1e18: no calendar holds it
        return f"{unix_seconds} (a time out of any calendar's range)"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


# A host name is at most 253 characters, each dot-separated label at most 63 (RFC 1035).
_MAX_HOST_CHARS = 253
_MAX_LABEL_CHARS = 63


def check_result_url(client: Client, task_id: str, index: int, url: str) -> None:
    """A ServiceError for a result URL that cannot be fetched as it is, before anything
    is: not http(s), unparsable (`http://[::1`), a host no resolver takes (a label of 300
    characters), control characters that would reach the terminal in a message, or the
    API key, which the image host is never sent (the message does not show it)."""
    from urllib.parse import unquote, urlsplit

    where = f"image {index} of task {task_id}"
    if client.carries_key(url) or client.carries_key(unquote(url)):
        raise ServiceError(
            f"The service sent a result URL for {where} that holds the API key; "
            "it was not fetched, so the image host never sees the key.",
            "Tell APIMart's support; the URL is the service's mistake.",
        )
    problem = None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - parsing it is the check: a bad port raises
    except ValueError as exc:
        problem = str(exc) or "it cannot be parsed"
    else:
        labels = host.rstrip(".").split(".")
        if parts.scheme.lower() not in ("http", "https"):
            problem = "it is not http or https"
        elif not host:
            problem = "it names no host"
        elif not all(c.isprintable() and not c.isspace() for c in url):
            problem = "it holds spaces or control characters"
        elif len(host) > _MAX_HOST_CHARS or any(len(label) > _MAX_LABEL_CHARS for label in labels):
            problem = "its host name is longer than a host name can be"
        else:
            try:
                host.encode("idna")
            except UnicodeError:
                problem = "its host name cannot be looked up"
    if problem is not None:
        raise ServiceError(
            f"The service sent a result URL for {where} that cannot be fetched ({problem}): "
            f"{shown(url)}.",
            "Check the task with `apimart status`; generate the image again if it stays so.",
        )


def _expired(task_id: str, expires_at: int) -> TaskError:
    return TaskError(
        f"The images of task {task_id} expired at {format_time(expires_at)}.",
        "The service no longer serves them; generate the image again.",
    )


def image_stem(task_id: str, index: int) -> str:
    """`<task_id>_<index>`: the task id is checked, so the name cannot leave the folder."""
    return f"{validate_task_id(task_id)}_{index}"


def existing_file(folder: Path, stem: str) -> Path | None:
    """An image already saved under this name, with any image extension.

    A link counts as a file there (it is kept, or replaced with --force, never
    written through); a folder or anything else that cannot be an image is an
    error naming it, never reported as a saved image.
    """
    for extension in (*EXTENSIONS.values(), *VIDEO_EXTENSIONS.values()):
        candidate = folder / f"{stem}{extension}"
        try:
            mode = candidate.lstat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        if candidate.is_dir():
            raise UsageError(
                f"{named(candidate)} is a folder, where an image is to be saved.",
                "Move it away, or choose another folder with -o/--output.",
            )
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            raise UsageError(
                f"{named(candidate)} is not a regular file, where an image is to be saved.",
                "Move it away, or choose another folder with -o/--output.",
            )
        return candidate
    return None


def _not_a_folder(folder: Path) -> UsageError:
    """The output folder cannot be made: what is in the way, at which of its names."""
    in_the_way = folder
    for name in (folder, *folder.parents):
        if os.path.lexists(name) and not name.is_dir():
            in_the_way = name
            break
    if in_the_way.is_symlink():
        what = "a link to nothing" if not in_the_way.exists() else "a link to a file"
    elif in_the_way.exists():
        what = "a file"
    else:  # gone meanwhile
        what = "not a folder"
    where = "" if in_the_way == folder else f"Cannot use {named(folder)} as the output folder: "
    return UsageError(
        f"{where}{named(in_the_way)} is {what}, not a folder.",
        "Choose another folder with -o/--output.",
    )


class Downloader:
    """Downloads a task's images into one folder."""

    def __init__(
        self,
        client: Client,
        folder: Path,
        *,
        force: bool = False,
        on_retry: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.folder = folder
        self._force = force
        self._on_retry = on_retry or client.on_retry  # by default, as the API calls are told
        self._sleep = sleep
        self._now = now

    def prepare(self) -> None:
        """Create the output folder; UsageError (nothing sent yet) if it cannot hold images."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise _not_a_folder(self.folder) from None
        except OSError as exc:
            raise UsageError(
                f"Cannot create the output folder {named(self.folder)}: {exc.strerror or exc}",
                "Choose another folder with -o/--output.",
            ) from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise UsageError(
                f"Cannot write to the output folder {named(self.folder)}: permission denied.",
                "Choose another folder with -o/--output.",
            )

    def download(
        self,
        task_id: str,
        index: int,
        image: ResultImage,
        finish: Finish | None = None,
        *,
        on_progress: OnProgress | None = None,
    ) -> SavedFile:
        """One image, saved as `<task_id>_<index><ext>`.

        `finish`, if given, runs on the complete, checked part file just before
        it takes its final name (which stays one atomic rename): it may rewrite
        the file, in place or by renaming another file onto it. If it raises,
        nothing is saved and the error goes to the caller. A `Stamp` instead
        goes into a PNG as it streams past the IHDR: the file is written once.
        `on_progress` hears the bytes as they arrive (the image's, not the chunk's).
        """
        try:
            return self._download(task_id, index, image, finish, on_progress)
        except OSError as exc:  # the disk, not the service: a full disk, a folder in the way
            where = exc.filename or self.folder
            hint = "Check the output folder's permissions and free space, then download again."
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                hint = "Raise the limit on open files (ulimit -n), then download again."
            raise ApimartError(
                f"Cannot write {named(where)}: {exc.strerror or exc}", hint
            ) from None

    def _download(
        self,
        task_id: str,
        index: int,
        image: ResultImage,
        finish: Finish | None,
        on_progress: OnProgress | None,
    ) -> SavedFile:
        stem = image_stem(task_id, index)
        found = existing_file(self.folder, stem)
        if found is not None and not self._force:
            return SavedFile(found, kept_existing=True)
        is_data = image.url.startswith("data:")
        if not is_data:
            check_result_url(self._client, task_id, index, image.url)
        if not is_data and image.expires_at is not None and image.expires_at <= self._now():
            raise _expired(task_id, image.expires_at)
        stamp = finish if isinstance(finish, Stamp) else None
        after = None if isinstance(finish, Stamp) else finish
        with _Part.open(self.folder, stem) as part:
            # Two runs into one folder never write the same part file at once.
            safefiles.lock(part.handle.fileno())
            if not part.still_there():
                # Another run held the lock, then renamed its part file into place or
                # removed it: what this handle holds is no longer the part file.
                return self._download(task_id, index, image, finish, on_progress)
            try:
                if is_data:
                    extension = _write_data_uri(stem, image.url, part.handle, stamp)
                else:
                    extension = self._fetch_with_retries(image, task_id, part, on_progress, stamp)
                # On disk before it takes its name; where `finish` replaces the file,
                # the replacement is what must be, and `finish` syncs it.
                part.seal(sync=after is None)
                if after is not None:
                    after(part.path)
                    if part.still_there():  # `finish` left the file as it was
                        part.sync()
                target = self.folder / f"{stem}{extension}"
                # Renamed only once complete and checked: no partial file under a final name.
                kept = not safefiles.move_into_place(part.path, target, force=self._force)
            except WaitTimeout:  # out of time: what arrived stays, for the next run to resume
                raise
            except Exception:
                # A failure removes the part file; only a run interrupted, killed or out
                # of time (Ctrl-C, SIGTERM, kill -9, --timeout) leaves it, to resume.
                part.remove()
                raise
            part.forget_validator()
        return SavedFile(target, kept_existing=kept)

    def _fetch_with_retries(
        self,
        image: ResultImage,
        task_id: str,
        part: _Part,
        on_progress: OnProgress | None,
        stamp: Stamp | None,
    ) -> str:
        def attempt() -> str:
            try:
                return self._fetch(image, task_id, part, on_progress, stamp)
            except _Retry as failure:  # the error the user sees if no try succeeds
                error = ServiceError(
                    f"Downloading {image.url} failed: {failure}",
                    f"Run `apimart download {task_id}` again later.",
                )
                raise Transient(error, failure.retry_after) from None

        return retrying(
            attempt, deadline=self._client.deadline, sleep=self._sleep, on_retry=self._on_retry
        )

    def _fetch(
        self,
        image: ResultImage,
        task_id: str,
        part: _Part,
        on_progress: OnProgress | None,
        stamp: Stamp | None,
    ) -> str:
        """One try: stream into the part file, resuming it; the extension to save under."""
        size = part.size()
        known = part.validator() if size else None
        if size and (
            known is None or known.url != image.url or not part.holds(known, stamp is not None)
        ):
            # No way to ask for the rest of that same file, or the part holds a chunk this
            # run does not want (or lacks one it does): start again.
            part.restart()
            size, known = 0, None
        # The image's bytes in the part file: all of it but the chunk put in after IHDR.
        offset = size - (known.inserted or 0) if known is not None else 0
        # Images are compressed already; asking for them as they are keeps ranges simple.
        headers = {"Accept-Encoding": "identity"}
        if known is not None:
            headers["Range"] = f"bytes={offset}-"
            if known.if_range:
                headers["If-Range"] = known.if_range
        resumable = True
        try:
            with self._client.stream(image.url, headers) as reply:
                if known is not None and reply.status == 416:
                    part.restart()  # what we had is not a prefix of this image
                    raise _Retry("the partial file did not match the image; starting again")
                start, total = self._check_reply(reply, image, task_id, offset)
                # A decoded body cannot be resumed by a range of the encoded one, and
                # its Content-Length counts the encoded bytes.
                resumable = reply.headers.get("content-encoding", "").lower() in _IDENTITY
                if not resumable:
                    total = None
                served = _Validator.of(reply, image.url, total)
                if start and not (resumable and known is not None and known.same(served)):
                    part.restart()
                    raise _Retry("the image changed since the partial download; starting again")
                if not start:
                    part.begin(served, stamping=stamp is not None)
                else:
                    assert known is not None  # a range is asked only where one is known
                    part.resume(known)
                extension = extension_for(reply.headers.get("content-type"))
                written = self._copy(reply, part, start, image, total, on_progress, stamp)
            if total is not None and written != total:
                raise _Retry(f"got {written} of {total} bytes")
            # Without a length, or resumed without the host naming the file's version,
            # the image's own structure is what says it is whole and all of one piece.
            unchecked = bool(start) and known is not None and not known.if_range
            head = self._check_image(
                part, image.url, whole=total is None or unchecked, resumed=start > 0
            )
            # A video's extension is its bytes', as is a file labelled with a type
            # that names none.
            if image.kind == "video" or is_video(head) or extension is None:
                extension = media_extension(head)
        except Transient as failure:  # the transfer failed or stalled
            if not resumable:
                part.restart()
            raise _Retry(failure.error.message) from None
        except _Retry:
            if not resumable:
                part.restart()
            raise
        if extension is None:  # pragma: no cover - _check_reply refuses these
            raise ServiceError(f"{image.url} is not an image.")
        return extension

    def _check_reply(
        self, reply: Reply, image: ResultImage, task_id: str, offset: int
    ) -> tuple[int, int | None]:
        """Where writing starts and the full size, or an error for a reply to refuse."""
        status = reply.status
        if status in RETRYABLE_STATUSES:
            raise _Retry(f"the image host answered {status}", _retry_after(reply.headers))
        if status in _GONE_STATUSES:
            if image.expires_at is not None and image.expires_at <= self._now():
                raise _expired(task_id, image.expires_at)
            raise TaskError(f"The image host answered {status} for {image.url}.")
        if status not in (200, 206):
            raise ServiceError(f"The image host answered {status} for {image.url}.")
        content_type = reply.headers.get("content-type", "")
        mime = content_type.split(";", 1)[0].strip().lower()
        # A video's bytes say what it is: a video type, or a generic one for a result
        # the service listed as a video.
        video = mime.startswith("video/") or (image.kind == "video" and mime in VIDEO_CONTENT_TYPES)
        if extension_for(content_type) is None and not video:
            raise ServiceError(
                f"The {image.kind} host sent {content_type or 'no content type'}, not "
                f"{'a video' if image.kind == 'video' else 'an image'}, for {image.url}.",
                "The URL may have expired or been replaced; check the task with `apimart status`.",
            )
        start, total = 0, _int_header(reply.headers, "content-length")
        if status == 206:
            match = _CONTENT_RANGE_RE.fullmatch(reply.headers.get("content-range", ""))
            first, last, size = match.groups() if match else ("", "", "")
            whole = first == "0" and size != "*" and int(last) == int(size) - 1
            if not whole and (not offset or not match or int(first) != offset):
                raise ServiceError(f"The image host sent an unexpected range for {image.url}.")
            # The whole file after all (`bytes 0-N/N+1`) is written from the start.
            start = 0 if whole else offset
            total = None if size == "*" else int(size)
        if total is not None and total > _largest(image):
            raise ServiceError(f"The {image.kind} at {image.url} is too large ({total} bytes).")
        return start, total

    def _copy(
        self,
        reply: Reply,
        part: _Part,
        start: int,
        image: ResultImage,
        total: int | None,
        on_progress: OnProgress | None,
        stamp: Stamp | None,
    ) -> int:
        """The body into the part file, each piece written through as it arrives (so a
        run cut short leaves all it got, to resume), with the stamp's chunk put in as
        the bytes pass the end of a PNG's IHDR; the image's bytes in the part file."""
        url, largest = image.url, _largest(image)
        handle = part.handle
        handle.seek(start + part.inserted)
        handle.truncate()
        written = start
        stamping = stamp is not None and start < IHDR_END  # the chunk is still to go in
        for chunk in reply.body:
            if written == 0 and sniff_mime(chunk) is None and sniff_video(chunk) is None:
                raise ServiceError(
                    f"The host sent something that is not an image or a video for {url}."
                )
            before, written = written, written + len(chunk)
            if written > largest:
                raise ServiceError(f"The {image.kind} at {url} is larger than {largest} bytes.")
            if stamping and written >= IHDR_END:
                assert stamp is not None
                stamping = False
                handle.write(chunk[: IHDR_END - before])
                chunk = chunk[IHDR_END - before :]
                handle.flush()
                head = os.pread(handle.fileno(), IHDR_END, 0)
                inserted = stamp.chunk() if is_png_head(head) else b""
                part.record_insertion(len(inserted))  # said before it is there
                handle.write(inserted)
            handle.write(chunk)
            handle.flush()
            if on_progress is not None:
                on_progress(written, total)
        if written == 0:  # no first chunk to sniff: an empty body is no image either
            raise ServiceError(f"The image host sent an empty body for {url}.")
        return written

    def _check_image(self, part: _Part, url: str, *, whole: bool, resumed: bool) -> bytes:
        """The part file is an image, checked to its own end where no length said where,
        or a video, always checked to its end; its first bytes."""
        import mmap

        with mmap.mmap(part.handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            head = bytes(data[:64])
            video = is_video(head)
            whole = whole or video
            problem = flaw(data, to_the_end=whole)
        if problem is None:
            return head
        what = "video" if video else "image"
        if problem.short and whole:
            # A length the host announced and met said nothing: only the host's
            # version of the file (ETag, Last-Modified) may let the rest be asked for.
            part.distrust_length()
            raise _Retry(f"the {what} was cut short ({problem.reason})")
        if resumed:  # the rest did not fit what was there: fetch it all again
            part.restart()
            raise _Retry(f"the resumed {what} is broken ({problem.reason}); starting again")
        raise ServiceError(f"The host sent a broken {what} for {url}: {problem.reason}.")


def _largest(image: ResultImage) -> int:
    return MAX_VIDEO_DOWNLOAD_BYTES if image.kind == "video" else MAX_IMAGE_DOWNLOAD_BYTES


def _write_data_uri(stem: str, uri: str, handle: IO[bytes], stamp: Stamp | None) -> str:
    """A `data:` URI's image written to the part file (a PNG with the stamp's chunk after
    its IHDR); the extension to save under."""
    header, _, encoded = uri.partition(",")
    try:
        content = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ServiceError(f"Task result {stem} is a data: URI that is not base64.") from None
    mime = sniff_mime(content)
    if mime is None or ";base64" not in header or flaw(content, to_the_end=False) is not None:
        raise ServiceError(f"Task result {stem} is a data: URI that is not an image.")
    if stamp is not None and is_png_head(content[:IHDR_END]):
        content = content[:IHDR_END] + stamp.chunk() + content[IHDR_END:]
    handle.seek(0)
    handle.truncate()
    handle.write(content)
    return EXTENSIONS[mime]


@dataclass(frozen=True)
class _Validator:
    """Which file a host sent: its URL, `ETag` or `Last-Modified`, and full length.

    A resume asks for the rest of that version (`If-Range`); a host that names no
    version is resumed only where the length it announced still matches, and
    the result is then checked to the image's own end. `inserted` is what the part
    file holds beyond the host's bytes: the length of the chunk put in after a PNG's
    IHDR, 0 where a stamping run found no PNG, None where none was to go in.
    """

    url: str
    etag: str | None = None
    last_modified: str | None = None
    length: int | None = None
    inserted: int | None = None

    @classmethod
    def of(cls, reply: Reply, url: str, length: int | None) -> _Validator:
        etag = reply.headers.get("etag")
        strong = etag if etag and not etag.startswith("W/") else None  # If-Range wants strong
        return cls(url, strong, reply.headers.get("last-modified"), length)

    @property
    def if_range(self) -> str:
        return self.etag or self.last_modified or ""

    def usable(self) -> bool:
        return bool(self.if_range) or self.length is not None

    def same(self, served: _Validator) -> bool:
        """False if the reply names another version (a host that ignored If-Range)."""
        if self.length is not None and served.length is not None and self.length != served.length:
            return False
        if self.etag and served.etag:
            return self.etag == served.etag
        if self.last_modified and served.last_modified:
            return self.last_modified == served.last_modified
        return bool(self.if_range) or (self.length is not None and served.length is not None)

    def dumps(self) -> str:
        return json.dumps(
            {
                "url": self.url,
                "etag": self.etag,
                "last_modified": self.last_modified,
                "length": self.length,
                "inserted": self.inserted,
            }
        )

    @classmethod
    def loads(cls, text: str) -> _Validator | None:
        try:
            fields = json.loads(text)
            found = cls(
                fields["url"],
                fields.get("etag"),
                fields.get("last_modified"),
                fields.get("length"),
                fields.get("inserted"),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        texts = all(isinstance(v, str | None) for v in (found.etag, found.last_modified))
        length = found.length is None or (type(found.length) is int and found.length > 0)
        inserted = found.inserted is None or (type(found.inserted) is int and found.inserted >= 0)
        usable = isinstance(found.url, str) and found.usable()
        return found if texts and length and inserted and usable else None


class _Part:
    """The part file of one image, open, with the validator kept beside it."""

    def __init__(self, folder: Path, stem: str, handle: IO[bytes]) -> None:
        self.folder = folder
        self.path = folder / f".{stem}.part"
        self.handle = handle
        self._validator_path = folder / f".{stem}.validator"
        self.inserted = 0  # bytes of a chunk put in after IHDR, beyond the host's
        self._served: _Validator | None = None  # as remembered beside the part file

    @classmethod
    @contextlib.contextmanager
    def open(cls, folder: Path, stem: str) -> Iterator[_Part]:
        with _open_own_file(folder / f".{stem}.part") as handle:
            yield cls(folder, stem, handle)

    def still_there(self) -> bool:
        """True while the open file is still the one at the part file's name."""
        try:
            return os.path.samestat(os.fstat(self.handle.fileno()), self.path.lstat())
        except FileNotFoundError:
            return False

    def size(self) -> int:
        self.handle.flush()
        return os.fstat(self.handle.fileno()).st_size

    def restart(self) -> None:
        """Drop what was written, and what said which file it came from."""
        self.handle.seek(0)
        self.handle.truncate()
        self.forget_validator()
        self.inserted, self._served = 0, None

    def begin(self, served: _Validator, *, stamping: bool) -> None:
        """A download from the start: remember which file, if the host says. Where a
        chunk may go in (`stamping`), that is remembered once it is known, in the same
        write (`record_insertion`): a kill before then leaves no more than a PNG's head."""
        self.restart()
        if served.usable():
            self._served = served
            if not stamping:
                self._remember(served)

    def resume(self, known: _Validator) -> None:
        """A download going on from what the part file holds, as `known` describes it."""
        self.inserted, self._served = known.inserted or 0, known

    def holds(self, known: _Validator, stamped: bool) -> bool:
        """Whether the part file can be resumed by a run that stamps or not: past the
        IHDR, a stamping run needs the chunk `known` says is there, whole, and a run
        that does not stamp needs none to be there."""
        if self.size() < IHDR_END:
            return True  # the chunk, if any, is still to go in
        if not stamped:
            return not known.inserted
        if known.inserted is None:
            return False  # saved by a run that did not stamp
        if not known.inserted:
            return True  # a stamping run found it was no PNG
        found = os.pread(self.handle.fileno(), known.inserted, IHDR_END)
        return len(found) == known.inserted and is_whole_png_chunk(found)

    def record_insertion(self, length: int) -> None:
        """Before a chunk of `length` bytes goes in after IHDR (0: none): remember it
        beside the part file, so that a resume after a kill knows where the host's
        bytes go on. Killed before the chunk is whole, the part is not resumed."""
        self.inserted = length
        if self._served is not None:
            self._served = dataclasses.replace(self._served, inserted=length)
            self._remember(self._served)

    def _remember(self, served: _Validator) -> None:
        """`served` beside the part file. Only a hint for a resume, as the part file is
        until it is sealed: replaced atomically, but not synced (a power cut that loses
        it costs a download from the start)."""
        safefiles.write_atomic(self._validator_path, served.dumps().encode(), durable=False)

    def validator(self) -> _Validator | None:
        try:
            with _open_own_file(self._validator_path, create=False) as handle:
                text = handle.read(_VALIDATOR_MAX_BYTES + 1)
        except (FileNotFoundError, _NotOurs):
            return None
        if len(text) > _VALIDATOR_MAX_BYTES:
            return None
        return _Validator.loads(text.decode("utf-8", "replace"))

    def distrust_length(self) -> None:
        """The length remembered for this file was wrong (the file was short of its own
        end at that length): forget it, and without a version to resume, start again."""
        known = self.validator()
        if known is None or known.length is None:
            return
        if known.etag or known.last_modified:
            self._remember(replace(known, length=None))
        else:
            self.restart()

    def seal(self, *, sync: bool = True) -> None:
        """Complete: with the usual permissions of a new file, and on disk (`sync`)."""
        self.handle.flush()
        os.fchmod(self.handle.fileno(), safefiles.usual_mode())
        if sync:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.handle.fileno())

    def forget_validator(self) -> None:
        _remove(self._validator_path)

    def remove(self) -> None:
        _remove(self.path)
        self.forget_validator()


class _NotOurs(Exception):
    """A name that holds something the tool must not open."""


@contextlib.contextmanager
def _open_own_file(path: Path, *, create: bool = True) -> Iterator[IO[bytes]]:
    """`path` opened for reading and writing, never through a link or into another file.

    Whatever is at the name that is not a plain file of ours, alone under its
    name (a link, a FIFO, a socket, a hard link to a file elsewhere, a file of
    another user), is removed and a new file made; a folder there is an error.
    Without `create`, such a thing is `_NotOurs` and a missing file FileNotFoundError.
    """
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    for _ in range(3):
        try:
            fd = safefiles.open_no_follow(path, flags)
        except IsADirectoryError:
            raise _folder_in_the_way(path) from None
        except OSError as exc:
            # A link (ELOOP, EMLINK), a socket (ENXIO), or a file this user may not open
            # (EACCES: another user's): none of them ours.
            theirs = exc.errno == errno.EACCES and os.path.lexists(path)
            if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.ENXIO) and not theirs:
                raise
        else:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 and _is_ours(info):
                with os.fdopen(fd, "r+b") as handle:
                    yield handle
                return
            os.close(fd)
        if not create:
            raise _NotOurs(path)
        _remove_planted(path)
    raise UsageError(
        f"Something keeps replacing {named(path)} with a link or a special file.",
        "Make sure no other program writes into the output folder, then download again.",
    )


def _is_ours(info: os.stat_result) -> bool:
    getuid = getattr(os, "getuid", None)
    return getuid is None or info.st_uid == getuid()


def _remove_planted(path: Path) -> None:
    """Remove what is at `path` (a link itself, not its target), or refuse with exit 2."""
    try:
        _remove(path)
    except OSError as exc:
        raise UsageError(
            f"{named(path)} is a link, a special file or another user's file that cannot "
            f"be removed: {exc.strerror or exc}",
            "Remove it, then download again.",
        ) from None


def _remove(path: Path) -> None:
    """Remove the name `path` (a link itself, never its target); a folder there is an error."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        if path.is_dir() and not path.is_symlink():
            raise _folder_in_the_way(path) from None
        raise


def _folder_in_the_way(path: Path) -> UsageError:
    what = "a partial download" if path.suffix == ".part" else "a file of the download"
    return UsageError(
        f"{named(path)} is a folder, where {what} is to be written.",
        "Move it away, or choose another folder with -o/--output.",
    )


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    return int(value) if value and value.isdigit() else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    return parse_retry_after(headers.get("retry-after"))
