"""`apimart batch`: many generations from one file, resumable, at the pace the service allows.

- `jobs`: every line is checked with `build_request` (the API's own rules) before
  anything is sent, and every bad line is reported at once; so are the names.
- `manifest`: `batch-manifest.jsonl` in the output folder, one JSON record per
  event, appended, flushed and fsynced. A job is a hash of its line plus which
  copy of that line it is, so an edited line is a new job while lines moved by
  an added comment are not; the latest record of a job wins.
- `pacing`: at most `AimdLimiter.limit` submissions in flight, halved by a 429.
- `run`: submit workers feed one `Poller`; each completed task downloads on a
  pool while the rest are polled (`saving` names the files, `tracker` records
  and shows every change of a job).
"""

from apimart_cli.batch.jobs import (
    MAX_REPORTED,
    Job,
    check_names,
    format_name,
    load_batch,
    parse_jobs,
    slugify,
)
from apimart_cli.batch.manifest import MANIFEST_NAME, Manifest, Records, resume_step
from apimart_cli.batch.pacing import AimdLimiter
from apimart_cli.batch.run import BatchOptions, run_batch
from apimart_cli.downloads import move_into_place

__all__ = [
    "MANIFEST_NAME",
    "MAX_REPORTED",
    "AimdLimiter",
    "BatchOptions",
    "Job",
    "Manifest",
    "Records",
    "check_names",
    "format_name",
    "load_batch",
    "move_into_place",
    "parse_jobs",
    "resume_step",
    "run_batch",
    "slugify",
]
