"""Save a batch job's image under its `--name`, and its metadata beside it.

The download itself is `downloads.Downloader`'s, under the usual
`<task_id>_<index>` name; a `--name` other than that is a rename afterwards
that never replaces an existing file unless `--force` says so.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from apimart_cli import secrets
from apimart_cli.downloads import existing_file
from apimart_cli.safefiles import move_into_place, write_atomic

if TYPE_CHECKING:
    from apimart_cli.batch.manifest import JobRun
    from apimart_cli.downloads import Downloader, Finish, OnProgress
    from apimart_cli.tasks import Task


def save_image(
    downloader: Downloader,
    task: Task,
    index: int,
    name: str,
    *,
    force: bool,
    on_progress: OnProgress | None = None,
    before_rename: Finish | None = None,
) -> tuple[Path, bool]:
    """The image saved as `name` plus its extension; True if an existing file was kept.

    `before_rename` is the downloader's last step on the complete file (the provenance
    chunk); `on_progress` hears its bytes.
    """
    folder, stem = downloader.folder, f"{task.task_id}_{index}"
    if name != stem and not force:
        found = existing_file(folder, name)
        if found is not None:
            return found, True
    saved = downloader.download(
        task.task_id,
        index,
        task.images[index],
        before_rename,
        on_progress=on_progress,
    )
    if name == stem:
        return saved.path, saved.kept_existing
    target = folder / f"{name}{saved.path.suffix}"
    return target, not move_into_place(saved.path, target, force=force)


def write_metadata(run: JobRun, task: Task, index: int, path: Path) -> None:
    """`<name>.json` beside the image: what was asked, what it cost, when."""
    meta = {
        "file": path.name,
        "line": run.job.line,
        "prompt": run.job.request.prompt,
        "fields": run.fields,
        "task_id": task.task_id,
        "index": index,
        # A video carries no provenance inside it: this file is its record.
        **({"kind": "video", "duration": task.duration} if task.kind == "video" else {}),
        "cost": task.cost,
        "created": task.raw.get("created"),
        "completed": task.raw.get("completed"),
        "submitted_at": run.submitted_at,
        "saved_at": time.time(),
    }
    # The service's values may echo the key; the file is private, made anew and
    # never written through a link someone planted at a name it would use.
    text = json.dumps(secrets.redact_data(meta), ensure_ascii=False, indent=2) + "\n"
    write_atomic(path.with_suffix(".json"), text.encode("utf-8"))
