"""The batch library: parsing, names, the manifest, resuming, and the AIMD limiter."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apimart_cli.batch import (
    MANIFEST_NAME,
    MAX_REPORTED,
    RATE_LIMIT_PAUSE,
    AimdLimiter,
    Job,
    Manifest,
    check_names,
    format_name,
    move_into_place,
    parse_jobs,
    resume_step,
    slugify,
)
from apimart_cli.constants import DEFAULT_BATCH_NAME as DEFAULT_NAME
from apimart_cli.errors import UsageError
from apimart_cli.sandbox import encode_png

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


def test_a_line_is_a_job_by_its_number_and_its_text() -> None:
    first, same, other = parse("a fox\na fox\nan owl")
    assert (first.line, same.line) == (1, 2)
    assert first.digest == same.digest != other.digest


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


def record(line: int, state: str, digest: str = "d1", **extra: Any) -> dict[str, Any]:
    return {"line": line, "digest": digest, "state": state, **extra}


def test_manifest_round_trip_and_the_latest_record_wins(tmp_path: Path) -> None:
    manifest = Manifest(tmp_path)
    manifest.open()
    for entry in [
        record(1, "submitting", idempotency_key="k1"),
        record(2, "submitting"),
        record(1, "submitted", task_id="task_1"),
        record(1, "completed", task_id="task_1", files=["a.png"]),
        record(2, "failed", error="refused"),
        record(2, "submitting", digest="d2"),  # line 2 edited: another job
    ]:
        manifest.append(entry)
    manifest.close()
    assert (tmp_path / MANIFEST_NAME).read_text().count("\n") == 6
    latest = Manifest(tmp_path).read()
    assert latest == {
        (1, "d1"): record(1, "completed", task_id="task_1", files=["a.png"]),
        (2, "d1"): record(2, "failed", error="refused"),
        (2, "d2"): record(2, "submitting", digest="d2"),
    }


def test_a_record_cut_short_by_a_kill_is_skipped_and_ended(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    path.write_text(json.dumps(record(1, "submitted")) + '\n{"line": 2, "dig')
    assert list(Manifest(tmp_path).read()) == [(1, "d1")]
    manifest = Manifest(tmp_path)
    manifest.open()
    manifest.append(record(3, "submitting"))
    manifest.close()
    assert list(Manifest(tmp_path).read()) == [(1, "d1"), (3, "d1")]


def test_no_manifest_yet_is_an_empty_one(tmp_path: Path) -> None:
    assert Manifest(tmp_path).read() == {}


@pytest.mark.parametrize(
    ("latest", "step"),
    [
        (None, "send"),
        (record(1, "queued"), "send"),
        (record(1, "submitting", idempotency_key="k"), "send"),
        (record(1, "failed", task_id="task_1"), "send"),
        (record(1, "cancelled", task_id="task_1"), "send"),
        (record(1, "failed", error="429 after retries"), "send"),
        (record(1, "unknown", idempotency_key="k"), "unknown"),
        (record(1, "submitted", task_id="task_1"), "wait"),
        (record(1, "processing", task_id="task_1", error="timed out"), "wait"),
        (record(1, "completed", task_id="task_1", files=[]), "wait"),
        (record(1, "completed", task_id="task_1", files=["there.png", "gone.png"]), "wait"),
        (record(1, "completed", task_id="task_1", files=["there.png"], error="x"), "wait"),
        (record(1, "completed", task_id="task_1", files=["there.png"]), "done"),
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
