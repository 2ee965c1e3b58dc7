"""The batch library: parsing, names, the manifest, resuming, and the AIMD limiter."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apimart_cli.batch import (
    MANIFEST_NAME,
    MAX_REPORTED,
    AimdLimiter,
    BatchOptions,
    Job,
    Manifest,
    check_names,
    format_name,
    move_into_place,
    parse_jobs,
    resume_step,
    run_batch,
    slugify,
)
from apimart_cli.client import Client
from apimart_cli.constants import DEFAULT_BATCH_NAME as DEFAULT_NAME
from apimart_cli.constants import RATE_LIMIT_PAUSE
from apimart_cli.errors import ExitCode, HistoryError, UsageError
from apimart_cli.history import History
from apimart_cli.models import Task
from apimart_cli.retry import Deadline
from apimart_cli.sandbox import Sandbox, SandboxConfig, encode_png

PNG = encode_png(1, 1, b"\x00\x00\x00\x00")


def parse(text: str, base: Path | None = None) -> list[Job]:
    return parse_jobs(text.splitlines(), base or Path.cwd(), "jobs.txt")


def bad_lines(text: str, base: Path | None = None) -> str:
    with pytest.raises(UsageError) as caught:
        parse(text, base)
    return caught.value.message


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ("a red fox", {}),
        ("  a red fox  ", {}),
        ('{"prompt": "a red fox"}', {}),
        ('{"prompt": "a red fox", "size": "16:9", "resolution": "2k", "n": 2}',
         {"n": 2, "size": "16:9", "resolution": "2k"}),
        ('{"prompt": "a red fox", "official_fallback": true}', {"official_fallback": True}),
        ('{"prompt": "a red fox", "size": null}', {}),
        ('{"prompt": "a red fox", "images": ["https://example.com/a.png"]}',
         {"image_urls": ["https://example.com/a.png"]}),
    ],
)  # fmt: skip
def test_a_good_line_becomes_a_checked_request(line: str, fields: dict[str, Any]) -> None:
    [job] = parse(line)
    assert job.line == 1
    assert job.request.prompt == "a red fox"
    assert job.request.fields() == fields


def test_blank_lines_and_comments_are_skipped_but_counted() -> None:
    jobs = parse("# prompts\n\nfirst\n   \n  # indented comment\nsecond\n")
    assert [(job.line, job.request.prompt) for job in jobs] == [(3, "first"), (6, "second")]


def test_a_job_is_its_text_and_which_copy_of_that_text_it_is() -> None:
    first, same, other = parse("a fox\na fox\nan owl")
    assert (first.line, same.line, other.line) == (1, 2, 3)
    assert first.digest == same.digest != other.digest
    assert (first.occurrence, same.occurrence, other.occurrence) == (1, 2, 1)
    assert len({first.identity, same.identity, other.identity}) == 3


def test_a_job_keeps_its_identity_when_lines_move() -> None:
    before = parse("a fox\na fox\nan owl")
    after = parse("# moved down\n\nan owl\na fox\n# between\na fox")
    assert sorted(job.identity for job in after) == sorted(job.identity for job in before)
    assert [(job.line, job.request.prompt) for job in after] == [
        (3, "an owl"),
        (4, "a fox"),
        (6, "a fox"),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "a fox"', "invalid JSON at column"),
        ('{"prompt": "a fox"} {"n": 2}', "invalid JSON at column 21: Extra data"),
        ('{"prompt": "a fox", "style": "vivid"}', "unknown field 'style'"),
        ('{"size": "16:9"}', 'no "prompt"'),
        ('{"prompt": 3}', '"prompt" must be a string, not 3'),
        ('{"prompt": "a fox", "n": "2"}', '"n" must be a whole number, not "2"'),
        ('{"prompt": "a fox", "n": true}', '"n" must be a whole number, not true'),
        ('{"prompt": "a fox", "n": 2.5}', '"n" must be a whole number, not 2.5'),
        ('{"prompt": "a fox", "n": 11}', "Invalid n 11"),
        ('{"prompt": "a fox", "official_fallback": 1}', '"official_fallback" must be true or'),
        ('{"prompt": "a fox", "images": "a.png"}', '"images" must be a list, not "a.png"'),
        ('{"prompt": "a fox", "images": [1]}', '"images" must be a list of strings'),
        ('{"prompt": "a fox", "size": "7:5"}', "Invalid size '7:5'"),
        ('{"prompt": "a fox", "resolution": "8k"}', "8k"),
        ('{"prompt": "   "}', "The prompt is empty"),
        ('{"prompt": "a fox", "images": ["missing.png"]}', "Reference image not found"),
    ],
)
def test_a_bad_line_is_named_with_its_problem(line: str, problem: str) -> None:
    message = bad_lines(f"a good line\n{line}\n")
    assert "line 2: " in message and problem in message
    assert "line 1" not in message


def test_every_bad_line_is_reported_not_only_the_first() -> None:
    message = bad_lines('{"prompt": 1}\nfine\n{"prompt": "x", "n": "3"}\n{oops\n')
    assert message.startswith("3 bad line(s) in jobs.txt; nothing was sent.")
    assert [line.split(":")[0].strip() for line in message.splitlines()[1:]] == [
        "line 1", "line 3", "line 4"
    ]  # fmt: skip


def test_at_most_twenty_bad_lines_are_listed() -> None:
    message = bad_lines("\n".join(['{"prompt": 1}'] * 25))
    assert message.count("must be a string") == MAX_REPORTED
    assert message.endswith("... and 5 more")


def test_no_jobs_at_all_is_an_error() -> None:
    assert "No jobs in jobs.txt" in bad_lines("# only a comment\n\n")


def test_relative_images_are_found_beside_the_batch_file(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "ref.png").write_bytes(PNG)
    [job] = parse('{"prompt": "a fox", "images": ["ref.png"]}', folder)
    [reference] = job.request.references
    assert reference.path == folder / "ref.png"
    assert "Reference image not found" in bad_lines(
        '{"prompt": "a fox", "images": ["ref.png"]}', tmp_path
    )


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A red fox, in the snow!", "a-red-fox-in-the-snow"),
        ("Crème brûlée", "creme-brulee"),
        ("../../etc/passwd", "etc-passwd"),
        ("一只红狐狸", "image"),
        ("x" * 60, "x" * 40),
        ("word " * 20, "word-word-word-word-word-word-word-word"),
    ],
)
def test_slug(prompt: str, slug: str) -> None:
    assert slugify(prompt) == slug


def test_names_fill_the_placeholders() -> None:
    name = format_name(
        "{line:03d}-{slug}-{index}-{task_id}", task_id="task_1", index=2, line=7, slug="fox"
    )
    assert name == "007-fox-2-task_1"
    assert format_name(DEFAULT_NAME, task_id="task_1", index=0, line=1, slug="x") == "task_1_0"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "could leave the folder"),
        ("../{slug}", "could leave the folder"),
        ("{slug}/{index}", "could leave the folder"),
        ("a\\{index}", "could leave the folder"),
        (".{index}", "could leave the folder"),
        ("{index:.>3}", "could leave the folder"),
        ("{prompt}", "Unknown placeholder {prompt}"),
        ("{}", "Unknown placeholder {}"),
        ("{slug", "Invalid --name"),
        ("{slug:d}", "Invalid --name"),
    ],
)
def test_bad_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        format_name(template, task_id="task_1", index=0, line=1, slug="fox")
    assert problem in caught.value.message


PIECES = ["{slug}", "{index}", "{line}", "{task_id}", "{index:.>3}", "{slug:/^9}", "{line:03d}",
          ".", "/", "\\", "-", "_", "a", "{", "}", ":", ">", "5"]  # fmt: skip


@given(
    template=st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
    prompt=st.text(max_size=80),
    index=st.integers(0, 9),
    line=st.integers(1, 10**6),
)
def test_a_formatted_name_never_leaves_the_folder(
    template: str, prompt: str, index: int, line: int
) -> None:
    try:
        name = format_name(template, task_id="task_01KABC", index=index, line=line,
                           slug=slugify(prompt))  # fmt: skip
    except UsageError:
        return
    assert name and "/" not in name and "\\" not in name and ".." not in name
    assert not name.startswith(".")


def test_names_that_would_collide_are_refused_before_sending() -> None:
    jobs = parse('a fox\na fox\n{"prompt": "an owl", "n": 2}')
    check_names("{line}-{slug}-{index}", jobs)
    check_names("{task_id}_{index}", jobs)
    for template, lines in [("{slug}-{index}", "line 1 and 2"), ("{line}", "line 3")]:
        with pytest.raises(UsageError) as caught:
            check_names(template, jobs)
        assert lines in caught.value.message


def test_move_into_place_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    source, target = tmp_path / "task_1_0.png", tmp_path / "fox.png"
    source.write_bytes(b"new")
    assert move_into_place(source, target, force=False)
    assert target.read_bytes() == b"new" and not source.exists()
    source.write_bytes(b"newer")
    assert not move_into_place(source, target, force=False)
    assert target.read_bytes() == b"new" and not source.exists()
    source.write_bytes(b"newest")
    assert move_into_place(source, target, force=True)
    assert target.read_bytes() == b"newest" and not source.exists()


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
        (step_record("unknown", idempotency_key="k"), "unknown"),
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


# -- the AIMD limiter ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def take(limiter: AimdLimiter, count: int) -> None:
    for _ in range(count):
        assert limiter.delay() == 0
        assert limiter.acquire()


def test_limiter_allows_up_to_its_ceiling_in_flight() -> None:
    limiter = AimdLimiter(4, clock=Clock())
    take(limiter, 4)
    assert limiter.delay() is None  # wait for one to end
    limiter.release(accepted=True)
    assert limiter.delay() == 0


def test_a_429_halves_the_limit_and_pauses_for_retry_after() -> None:
    clock = Clock()
    limiter = AimdLimiter(8, clock=clock)
    take(limiter, 8)
    limiter.rate_limited(2.0)
    assert limiter.limit == 4
    for _ in range(5):
        limiter.release(accepted=False)
    assert limiter.delay() == pytest.approx(2.0)
    clock.now += 2.0
    assert limiter.delay() == 0
    take(limiter, 1)
    assert limiter.delay() is None  # 4 in flight again


def test_many_429s_in_one_pause_halve_once() -> None:
    clock = Clock()
    limiter = AimdLimiter(8, clock=clock)
    for _ in range(4):
        limiter.rate_limited(1.0)
        clock.now += 0.1
    assert limiter.limit == 4
    clock.now += 1.0
    limiter.rate_limited(None)
    assert limiter.limit == 2
    assert limiter.delay() == pytest.approx(RATE_LIMIT_PAUSE)


def test_the_limit_never_falls_below_one() -> None:
    clock = Clock()
    limiter = AimdLimiter(2, clock=clock)
    for _ in range(5):
        limiter.rate_limited(0.0)
        clock.now += 0.01
    assert limiter.limit == 1
    assert limiter.delay() == 0


def test_a_run_of_successes_adds_one_back_up_to_the_ceiling() -> None:
    clock = Clock()
    limiter = AimdLimiter(4, clock=clock)
    limiter.rate_limited(0.0)
    clock.now += 0.01
    limiter.rate_limited(0.0)
    assert limiter.limit == 1
    limits = []
    for _ in range(12):
        take(limiter, 1)
        limiter.release(accepted=True)
        limits.append(limiter.limit)
    # 1 success at limit 1, 2 at limit 2, 3 at limit 3: then the ceiling holds.
    assert limits == [2, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4]


def test_a_429_resets_the_run_of_successes() -> None:
    clock = Clock()
    limiter = AimdLimiter(4, clock=clock)
    limiter.rate_limited(0.0)  # limit 2
    take(limiter, 1)
    limiter.release(accepted=True)
    clock.now += 0.01
    limiter.rate_limited(0.0)  # limit 1, streak back to 0
    take(limiter, 1)
    limiter.release(accepted=False)  # a failure is no success, nor a slowdown
    assert limiter.limit == 1


def test_the_limiter_says_when_it_slows_down() -> None:
    clock = Clock()
    limiter = AimdLimiter(4, clock=clock)
    changes: list[tuple[int, float]] = []
    limiter.on_change = lambda limit, pause: changes.append((limit, pause))
    limiter.rate_limited(3.0)
    limiter.rate_limited(3.0)  # same pause: no second halving, no second message
    assert changes == [(2, 3.0)]


def test_acquire_blocks_until_a_slot_frees_or_the_limiter_closes() -> None:
    limiter = AimdLimiter(1)
    assert limiter.acquire()
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(limiter.acquire()))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()
    limiter.release(accepted=True)
    waiter.join(2)
    assert results == [True]
    closing = threading.Thread(target=lambda: results.append(limiter.acquire()))
    closing.start()
    limiter.close()
    closing.join(2)
    assert results == [True, False]


# -- a run in this process, against a sandbox ---------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.2)) as server:
        yield server


def run_jobs(
    sandbox: Sandbox,
    folder: Path,
    text: str,
    history: type[History] = History,
    client: Client | None = None,
) -> ExitCode:
    options = BatchOptions(output=folder / "out", interval=0.05, timeout=30)
    return run_batch(
        parse(text),
        client or Client(sandbox.base_url, "sk-test", deadline=Deadline.after(30)),
        AimdLimiter(4),
        options,
        lambda: history(folder / "history.sqlite3"),
    )


def saved(folder: Path) -> list[str]:
    return sorted(path.name for path in (folder / "out").glob("*.png"))


def latest_records(folder: Path) -> list[dict[str, Any]]:
    latest: dict[int, dict[str, Any]] = {}
    for line in (folder / "out" / MANIFEST_NAME).read_text().splitlines():
        entry = json.loads(line)
        latest[entry["line"]] = entry
    return [latest[line] for line in sorted(latest)]


class Unrecording(History):
    """A history that cannot record a submission the server already took."""

    def record_submission(self, task_id: str, **fields: Any) -> None:
        raise HistoryError(f"Cannot use the task history {self.path}: disk full.")


class NoUpdates(History):
    """A history that breaks once the run is under way (e.g. overwritten by another program)."""

    def update(self, task_id: str, **changes: Any) -> None:
        raise HistoryError(f"The task history {self.path} is not a readable SQLite database.")


def test_a_task_the_history_could_not_record_is_still_waited_for_and_saved(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_jobs(sandbox, tmp_path, "a fox\nan owl\na bear", history=Unrecording)
    err = capsys.readouterr().err
    assert code == ExitCode.OK, err
    task_ids = sorted(str(request.task_id) for request in sandbox.submissions())
    assert len(task_ids) == 3  # each paid for once
    assert saved(tmp_path) == [f"{task_id}_0.png" for task_id in task_ids]
    records = latest_records(tmp_path)
    assert [r["state"] for r in records] == ["completed"] * 3
    assert sorted(r["task_id"] for r in records) == task_ids
    assert err.count("could not be written") == 1  # said once, not once per job
    assert "failed" not in err


def test_a_history_that_breaks_during_the_run_is_a_warning(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_jobs(sandbox, tmp_path, "a fox\nan owl", history=NoUpdates)
    err = capsys.readouterr().err
    assert code == ExitCode.OK, err
    assert len(saved(tmp_path)) == 2
    assert [r["state"] for r in latest_records(tmp_path)] == ["completed"] * 2
    assert err.count("not a readable SQLite database") == 1


def test_a_reply_naming_another_task_id_is_taken_for_the_task_polled(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = Client(sandbox.base_url, "sk-test")
    get_task = client.get_task

    def renamed(task_id: str) -> Task:
        return dataclasses.replace(get_task(task_id), task_id=task_id.lower())

    monkeypatch.setattr(client, "get_task", renamed)
    code = run_jobs(sandbox, tmp_path, "a fox\nan owl", client=client)
    assert code == ExitCode.OK
    task_ids = sorted(str(request.task_id) for request in sandbox.submissions())
    assert saved(tmp_path) == [f"{task_id}_0.png" for task_id in task_ids]
    assert sorted(r["task_id"] for r in latest_records(tmp_path)) == task_ids


class LockedOnceRunning(History):
    """A history that passes the run's own check, then refuses every write before a send."""

    def record_sending(self, **what: Any) -> None:
        raise HistoryError(f"The task history {self.path} is locked by another process.")


def test_a_history_that_refuses_a_send_keeps_the_key_for_the_rerun(
    sandbox: Sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_jobs(sandbox, tmp_path, "a fox", history=LockedOnceRunning)
    assert code == ExitCode.USAGE
    assert sandbox.requests == []  # nothing was sent
    [first] = latest_records(tmp_path)
    assert first["state"] == "submitting" and first["idempotency_key"]
    assert "locked by another process" in capsys.readouterr().err
    assert run_jobs(sandbox, tmp_path, "a fox") == ExitCode.OK
    [request] = sandbox.submissions()
    assert request.headers["idempotency-key"] == first["idempotency_key"]
