"""`apimart batch`: many generations from one file, resumable, at the pace the service allows.

- `jobs`: every line is checked before anything is sent (its keys and their
  types against `fields.FIELDS`, its values by `payload.request_from`, the API's
  own rules), and every bad line is reported at once; so are the names.
- `manifest`: `batch-manifest.jsonl` in the output folder, one JSON record per
  event, appended, flushed and fsynced. A job is a hash of its line plus which
  copy of that line it is, so an edited line is a new job while lines moved by
  an added comment are not; the latest record of a job wins.
- `pacing`: at most `AimdLimiter.limit` submissions in flight, halved by a 429
  (`pacing.Aimd`, the rule the polls follow too).
- `reporter`: the engine's reporter, each task's steps recorded as its job's,
  each image saved under its `--name`.
- `run`: one run, planned from the manifest, started and ended: the `submitter`
  adds each new task to one `engine.Engine`, which polls it and downloads each
  completed task's images while the rest are polled, telling the `reporter`.
- `saving`: the files' names (`--name`) and `--metadata` sidecars.
- `submitter`: the submit workers, at the limiter's pace, each idempotency key
  recorded before its request is sent.
- `tracker`: every change of a job, recorded in the manifest and shown through
  the display the command hands in; the run's summary.
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
from apimart_cli.batch.run import BatchEnding, BatchOptions, run_batch
from apimart_cli.safefiles import move_into_place

__all__ = [
    "MANIFEST_NAME",
    "MAX_REPORTED",
    "AimdLimiter",
    "BatchEnding",
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
