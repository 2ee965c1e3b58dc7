"""Save result images: named by task, streamed to a temp file, checked, renamed.

No half-written image ever sits under its final name. The temp file has a fixed
name (`.<task>_<i>.part`) so that the next run into the same folder can resume
what a killed run left (a `Range` request) or remove it.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING

from apimart_cli.constants import DOWNLOAD_CHUNK_BYTES, MAX_IMAGE_DOWNLOAD_BYTES, RETRY_MAX_ATTEMPTS
from apimart_cli.errors import ApimartError, ServiceError, TaskError, UsageError
from apimart_cli.images import EXTENSIONS, extension_for, sniff_mime
from apimart_cli.models import ResultImage, Task, validate_task_id
from apimart_cli.retry import RETRYABLE_STATUSES, backoff_delay, parse_retry_after

if TYPE_CHECKING:
    import httpx

    from apimart_cli.client import Client

_CONTENT_RANGE_RE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_GONE_STATUSES = frozenset({403, 404, 410})


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
    return datetime.fromtimestamp(unix_seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _expired(task_id: str, expires_at: int) -> TaskError:
    return TaskError(
        f"The images of task {task_id} expired at {format_time(expires_at)}.",
        "Result URLs last about 24 hours; generate the image again.",
    )


def image_stem(task_id: str, index: int) -> str:
    """`<task_id>_<index>`: the task id is checked, so the name cannot leave the folder."""
    return f"{validate_task_id(task_id)}_{index}"


def existing_file(folder: Path, stem: str) -> Path | None:
    """An image already saved under this name, with any image extension."""
    for extension in EXTENSIONS.values():
        candidate = folder / f"{stem}{extension}"
        if candidate.exists():
            return candidate
    return None


class Downloader:
    """Downloads a task's images into one folder."""

    def __init__(
        self,
        client: Client,
        folder: Path,
        *,
        force: bool = False,
        on_retry: Callable[[str], None] = lambda message: None,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.folder = folder
        self._force = force
        self._on_retry = on_retry
        self._sleep = sleep
        self._now = now

    def prepare(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"Cannot create the output folder {self.folder}: {exc.strerror or exc}",
                "Choose another folder with -o/--output.",
            ) from None

    def download_task(self, task: Task) -> list[SavedFile]:
        """Every image of a completed task; TaskError if it is not completed."""
        if task.status != "completed":
            reason = f": {task.error_message}" if task.error_message else ""
            raise TaskError(f"Task {task.task_id} is {task.status}{reason}.")
        if not task.images:
            raise ServiceError(f"Task {task.task_id} completed but the service sent no images.")
        return [self.download(task.task_id, i, image) for i, image in enumerate(task.images)]

    def download(self, task_id: str, index: int, image: ResultImage) -> SavedFile:
        """One image, saved as `<task_id>_<index><ext>`."""
        try:
            return self._download(task_id, index, image)
        except OSError as exc:  # the disk, not the service: a full disk, a folder in the way
            where = exc.filename or self.folder
            raise ApimartError(
                f"Cannot write {where}: {exc.strerror or exc}",
                "Check the output folder's permissions and free space, then download again.",
            ) from None

    def _download(self, task_id: str, index: int, image: ResultImage) -> SavedFile:
        stem = image_stem(task_id, index)
        found = existing_file(self.folder, stem)
        if found is not None and not self._force:
            return SavedFile(found, kept_existing=True)
        if image.url.startswith("data:"):
            return SavedFile(self._save_data_uri(stem, image.url))
        if image.expires_at is not None and image.expires_at <= self._now():
            raise _expired(task_id, image.expires_at)
        part = self.folder / f".{stem}.part"
        with part.open("ab") as handle:
            _lock(handle)
            if not _still_at(handle, part):
                # Another run held the lock, then renamed its part file into place or
                # removed it: what this handle holds is no longer the part file.
                return self._download(task_id, index, image)
            try:
                extension = self._fetch_with_retries(image, task_id, handle)
                handle.flush()
                os.fsync(handle.fileno())
            except BaseException:  # only a killed run leaves a part file (for the next to resume)
                part.unlink(missing_ok=True)
                raise
            target = self.folder / f"{stem}{extension}"
            # Renamed only once complete and checked: no partial file under a final name.
            part.replace(target)
        return SavedFile(target)

    def _fetch_with_retries(self, image: ResultImage, task_id: str, handle: IO[bytes]) -> str:
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._fetch(image, task_id, handle)
            except _Retry as failure:
                if attempt >= RETRY_MAX_ATTEMPTS:
                    raise ServiceError(
                        f"Downloading {image.url} failed: {failure}",
                        f"Run `apimart download {task_id}` again later.",
                    ) from None
                delay = (
                    backoff_delay(attempt) if failure.retry_after is None else failure.retry_after
                )
                self._on_retry(f"{task_id}: {failure}; retrying in {delay:.1f} s")
                self._sleep(delay)

    def _fetch(self, image: ResultImage, task_id: str, handle: IO[bytes]) -> str:
        """One try: stream into the part file, resuming it; the extension to save under."""
        import httpx  # already loaded by the client; imported here for its error types

        handle.flush()
        offset = os.fstat(handle.fileno()).st_size
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with self._client.stream_image(image.url, headers) as reply:
                if offset and reply.status_code == 416:
                    handle.truncate(0)  # what we had is not a prefix of this image
                    raise _Retry("the partial file did not match the image; starting again")
                start, total = self._check_reply(reply, image, task_id, offset)
                handle.seek(start)
                handle.truncate()
                extension = extension_for(reply.headers.get("content-type"))
                written = self._copy(reply, handle, start, image.url)
        except httpx.TransportError as exc:
            raise _Retry(str(exc) or type(exc).__name__) from None
        if total is not None and written != total:
            raise _Retry(f"got {written} of {total} bytes")
        if extension is None:  # pragma: no cover - _check_reply refuses these
            raise ServiceError(f"{image.url} is not an image.")
        return extension

    def _check_reply(
        self, reply: httpx.Response, image: ResultImage, task_id: str, offset: int
    ) -> tuple[int, int | None]:
        """Where writing starts and the full size, or an error for a reply to refuse."""
        status = reply.status_code
        if status in RETRYABLE_STATUSES:
            raise _Retry(f"the image host answered {status}", _retry_after(reply))
        if status in _GONE_STATUSES:
            if image.expires_at is not None and image.expires_at <= self._now():
                raise _expired(task_id, image.expires_at)
            raise TaskError(f"The image host answered {status} for {image.url}.")
        if status not in (200, 206):
            raise ServiceError(f"The image host answered {status} for {image.url}.")
        content_type = reply.headers.get("content-type", "")
        if extension_for(content_type) is None:
            raise ServiceError(
                f"The image host sent {content_type or 'no content type'}, not an image, "
                f"for {image.url}.",
                "The URL may have expired or been replaced; check the task with `apimart status`.",
            )
        start, total = 0, _int_header(reply, "content-length")
        if status == 206:
            match = _CONTENT_RANGE_RE.fullmatch(reply.headers.get("content-range", ""))
            if not match or int(match.group(1)) != offset:
                raise ServiceError(f"The image host sent an unexpected range for {image.url}.")
            start = offset
            total = None if match.group(3) == "*" else int(match.group(3))
        if total is not None and total > MAX_IMAGE_DOWNLOAD_BYTES:
            raise ServiceError(f"The image at {image.url} is too large ({total} bytes).")
        return start, total

    def _copy(self, reply: httpx.Response, handle: IO[bytes], start: int, url: str) -> int:
        written = start
        for chunk in reply.iter_bytes(DOWNLOAD_CHUNK_BYTES):
            if written == 0 and sniff_mime(chunk) is None:
                raise ServiceError(f"The image host sent something that is not an image for {url}.")
            written += len(chunk)
            if written > MAX_IMAGE_DOWNLOAD_BYTES:
                raise ServiceError(
                    f"The image at {url} is larger than {MAX_IMAGE_DOWNLOAD_BYTES} bytes."
                )
            handle.write(chunk)
        if written == 0:  # no first chunk to sniff: an empty body is no image either
            raise ServiceError(f"The image host sent an empty body for {url}.")
        return written

    def _save_data_uri(self, stem: str, uri: str) -> Path:
        header, _, encoded = uri.partition(",")
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ServiceError(f"Task result {stem} is a data: URI that is not base64.") from None
        mime = sniff_mime(content)
        if mime is None or ";base64" not in header:
            raise ServiceError(f"Task result {stem} is a data: URI that is not an image.")
        target = self.folder / f"{stem}{EXTENSIONS[mime]}"
        part = self.folder / f".{stem}.part"
        try:
            part.write_bytes(content)
            part.replace(target)
        finally:
            part.unlink(missing_ok=True)
        return target


def _int_header(reply: httpx.Response, name: str) -> int | None:
    value = reply.headers.get(name)
    return int(value) if value and value.isdigit() else None


def _retry_after(reply: httpx.Response) -> float | None:
    return parse_retry_after(reply.headers.get("retry-after"))


def _still_at(handle: IO[bytes], path: Path) -> bool:
    """True while the open file is still the one at `path`."""
    try:
        return os.path.samestat(os.fstat(handle.fileno()), path.stat())
    except FileNotFoundError:
        return False


def _lock(handle: IO[bytes]) -> None:
    """Keep two runs into one folder from writing the same part file at once."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
