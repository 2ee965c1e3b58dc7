"""batch.manifest: the resumable record of every job, and what a rerun does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apimart_cli.batch import (
    MANIFEST_NAME,
    Job,
    Manifest,
    resume_step,
)

from .conftest import PNG, parse

# -- the manifest -----------------------------------------------------------------------------


def record(job: Job, state: str, **extra: Any) -> dict[str, Any]:
    fields = {"line": job.line, "digest": job.digest, "occurrence": job.occurrence}
    return {**fields, "state": state, **extra}


def test_manifest_round_trip_and_the_latest_record_wins(tmp_path: Path) -> None:
    fox, owl = parse("a fox\nan owl")
    [edited] = parse("a lynx\nan owl")[:1]  # line 1 edited: another job
    manifest = Manifest(tmp_path)
    manifest.open()
    for entry in [
        record(fox, "submitting", idempotency_key="k1"),
        record(owl, "submitting"),
        record(fox, "submitted", task_id="task_1"),
        record(fox, "completed", task_id="task_1", files=["a.png"]),
        record(owl, "failed", error="refused"),
        record(edited, "submitting"),
    ]:
        manifest.append(entry)
    manifest.close()
    assert (tmp_path / MANIFEST_NAME).read_text().count("\n") == 6
    latest = Manifest(tmp_path).read()
    assert len(latest) == 3
    assert latest.of(fox) == record(fox, "completed", task_id="task_1", files=["a.png"])
    assert latest.of(owl) == record(owl, "failed", error="refused")
    assert latest.of(edited) == record(edited, "submitting")
    [other] = parse("a bear")
    assert latest.of(other) is None


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_full_disk_is_said_once_and_marks_the_manifest_failed(tmp_path: Path) -> None:
    fox, owl = parse("a fox\nan owl")
    manifest = Manifest(tmp_path)
    manifest.open()
    manifest._file.close()  # type: ignore[union-attr]
    # Every write from now on: no space left on the device.
    manifest._file = Path("/dev/full").open("wb")  # noqa: SIM115 - closed by manifest.close()
    first = manifest.append(record(fox, "submitting"))
    assert first is not None
    assert str(manifest.path) in first and "No more jobs are sent" in first
    assert manifest.append(record(owl, "submitting")) is None  # said once
    assert manifest.failed
    manifest.close()


def test_a_record_cut_short_by_a_kill_is_skipped_and_ended(tmp_path: Path) -> None:
    first, second, third = parse("a fox\nan owl\na bear")
    path = tmp_path / MANIFEST_NAME
    path.write_text(json.dumps(record(first, "submitted")) + '\n{"line": 2, "dig')
    assert len(Manifest(tmp_path).read()) == 1
    manifest = Manifest(tmp_path)
    manifest.open()
    manifest.append(record(third, "submitting"))
    manifest.close()
    latest = Manifest(tmp_path).read()
    assert (latest.of(first), latest.of(second)) == (record(first, "submitted"), None)
    assert latest.of(third) == record(third, "submitting")


def test_records_without_an_occurrence_are_found_by_line_and_text(tmp_path: Path) -> None:
    fox, again, owl = parse("a fox\na fox\nan owl")
    old = [{"line": job.line, "digest": job.digest, "state": "submitted"} for job in (fox, owl)]
    (tmp_path / MANIFEST_NAME).write_text("".join(json.dumps(r) + "\n" for r in old))
    latest = Manifest(tmp_path).read()
    assert (latest.of(fox), latest.of(again), latest.of(owl)) == (old[0], None, old[1])


def test_no_manifest_yet_is_an_empty_one(tmp_path: Path) -> None:
    assert len(Manifest(tmp_path).read()) == 0


def step_record(state: str, **extra: Any) -> dict[str, Any]:
    return {"line": 1, "digest": "d1", "occurrence": 1, "state": state, **extra}


@pytest.mark.parametrize(
    ("latest", "step"),
    [
        (None, "send"),
        (step_record("queued"), "send"),
        (step_record("submitting", idempotency_key="k"), "send"),
        (step_record("failed", task_id="task_1"), "send"),
        (step_record("cancelled", task_id="task_1"), "send"),
        (step_record("failed", error="429 after retries"), "send"),
        (step_record("unknown", idempotency_key="k"), "send"),  # again, with its key
        (step_record("unknown"), "unknown"),  # no key to send it again with
        (step_record("submitted", task_id="task_1"), "wait"),
        (step_record("processing", task_id="task_1", error="timed out"), "wait"),
        (step_record("completed", task_id="task_1", files=[]), "wait"),
        (step_record("completed", task_id="task_1", files=["there.png", "gone.png"]), "wait"),
        (step_record("completed", task_id="task_1", files=["there.png"], error="x"), "wait"),
        (step_record("completed", task_id="task_1", files=["there.png"]), "done"),
    ],
)
def test_what_a_rerun_does_with_each_job(
    tmp_path: Path, latest: dict[str, Any] | None, step: str
) -> None:
    (tmp_path / "there.png").write_bytes(PNG)
    assert resume_step(latest, tmp_path) == step


def test_hostile_values_in_the_manifest_are_read_as_absent(tmp_path: Path) -> None:
    from apimart_cli.batch.manifest import resumed

    fox, owl = parse("a fox\nan owl")
    path = tmp_path / MANIFEST_NAME
    deep = "[" * 5_000 + "]" * 5_000
    lines = [
        json.dumps(record(fox, "completed", task_id="task_1", files=5, fields="x", cost="free")),
        json.dumps(record(owl, "failed", error=["no"], submitted_at=1e300, time=float("nan"))),
        '{"line": 1, "digest": "d", "occurrence": 0, "fields": {"a": ' + deep + "}}",
    ]
    path.write_text("\n".join(lines) + "\n")

    latest = Manifest(tmp_path).read()

    assert latest.of(fox) == record(fox, "completed", task_id="task_1")
    assert latest.of(owl) == record(owl, "failed")
    run, step = resumed(fox, latest.of(fox), tmp_path)
    assert (step, run.files, run.cost) == ("wait", [], None)
    from apimart_cli.gallery import build

    (tmp_path / "task_1_0.png").write_bytes(PNG)
    build(tmp_path, None)  # the gallery of the folder: no error
