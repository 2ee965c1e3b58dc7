"""Progress that tells the truth: state changes, a download's bytes and rate, heartbeats."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from apimart_cli import console
from apimart_cli.constants import DOWNLOAD_NOTE_SECONDS, HEARTBEAT_SECONDS
from apimart_cli.costs import cost_number, cost_text
from apimart_cli.downloads import SavedFile
from apimart_cli.engine import Outcome
from apimart_cli.errors import ExitCode, TaskError
from apimart_cli.progress import (
    PlainBatchDisplay,
    PlainReporter,
    RichBatchDisplay,
    RichReporter,
    SilentReporter,
    clock_text,
    display_mode,
    human_bytes,
    show_ending,
    summary_line,
    waiting_label,
)
from apimart_cli.tasks import Task
from tests.helpers.clocks import FakeClock

CLOCK = re.compile(r"\b\d+:\d\d:\d\d\b")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_plain_lines_come_once_per_state_change(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    reporter = PlainReporter(clock=clock)
    reporter.added("task_1")
    reporter.update(Task("task_1", "pending"))
    reporter.update(Task("task_1", "pending"))
    reporter.update(Task("task_1", "processing", progress=40))
    reporter.update(Task("task_1", "queued"))
    assert lines(capsys) == [
        "task_1: pending",
        "task_1: processing 40%",
        "task_1: queued (a state this tool does not know; still waiting)",
    ]


def test_the_heartbeat_comes_only_after_a_quiet_spell_and_says_how_long_against_the_estimate(
    clock: FakeClock, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("apimart_cli.progress.time.time", lambda: 1_000_045.0)
    reporter = PlainReporter(clock=clock)
    reporter.update(Task("task_1", "processing", created=1_000_000, estimated_time=60))
    capsys.readouterr()
    clock.time += HEARTBEAT_SECONDS - 1
    reporter.tick()
    assert lines(capsys) == []
    clock.time += 1
    reporter.tick()
    assert lines(capsys) == ["still waiting for 1 task(s); task_1: processing, 45 s of about 60 s"]
    reporter.tick()  # not again until another quiet spell
    assert lines(capsys) == []


def test_no_heartbeat_once_every_task_has_ended(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    reporter = PlainReporter(clock=clock)
    reporter.update(Task("task_1", "failed"))
    capsys.readouterr()
    clock.time += HEARTBEAT_SECONDS * 3
    reporter.tick()
    assert lines(capsys) == []


def test_a_long_download_says_its_bytes_and_rate_every_few_seconds(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    reporter = PlainReporter(clock=clock)
    reporter.transferred("task_1", 0, 0, 4 * 1024 * 1024)
    clock.time += 1
    reporter.transferred("task_1", 0, 100 * 1024, 4 * 1024 * 1024)
    assert lines(capsys) == []  # a quick download says nothing
    clock.time += DOWNLOAD_NOTE_SECONDS
    reporter.transferred("task_1", 0, 600 * 1024, 4 * 1024 * 1024)
    clock.time += 1
    reporter.transferred("task_1", 0, 700 * 1024, 4 * 1024 * 1024)  # too soon for another
    assert lines(capsys) == ["task_1: image 0: downloading 600.0 KiB of 4.0 MiB, 100.0 KiB/s"]


def test_a_download_of_unknown_size_says_its_bytes(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    reporter = PlainReporter(clock=clock)
    reporter.transferred("task_1", 1, 0, None)
    clock.time += DOWNLOAD_NOTE_SECONDS
    reporter.transferred("task_1", 1, 5000, None)
    assert lines(capsys) == ["task_1: image 1: downloading 4.9 KiB, 1000 B/s"]


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 1024 * 1024)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
    ]


def test_the_data_goes_to_standard_output_even_when_silent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    reporter = SilentReporter()
    task = Task("task_1", "completed")
    reporter.saved(task, 0, SavedFile(Path("out/task_1_0.png")))
    reporter.saved(task, 1, SavedFile(Path("out/task_1_1.png"), kept_existing=True))
    reporter.finished(Task("task_2", "failed", error_message="moderation"), [])
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["out/task_1_0.png", "out/task_1_1.png"]
    assert captured.err.splitlines() == [
        "task_1: kept the existing out/task_1_1.png (use --force to replace it)",
        "task_2: failed: moderation",
    ]


def test_a_path_with_escapes_reaches_standard_error_as_plain_text(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = Path("out\x1b]0;owned\x07\x1b[2J\x9b31m")
    reporter = PlainReporter(clock=clock)
    task = Task("task_1", "completed")
    reporter.saved(task, 0, SavedFile(folder / "task_1_0.png"))
    reporter.saved(task, 1, SavedFile(folder / "task_1_1.png", kept_existing=True))
    console.report_error(TaskError(f"Cannot write {folder}/x.png.", "Try\nagain."))
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == str(folder / "task_1_0.png")  # data: as it is
    assert not any(char in captured.err for char in "\x1b\x07\x9b"), captured.err
    assert "task_1: saved out?]0;owned??[2J?31m/task_1_0.png" in captured.err
    assert "Error: Cannot write out?]0;owned??[2J?31m/x.png.\nTry\nagain." in captured.err


def test_no_download_prints_each_completed_id_and_json_prints_each_task(
    capsys: pytest.CaptureFixture[str],
) -> None:
    SilentReporter(download=False).finished(Task("task_1", "completed"), [])
    SilentReporter(as_json=True).finished(
        Task("task_2", "completed", raw={"id": "task_2"}), [Path("out/task_2_0.png")]
    )
    assert capsys.readouterr().out.splitlines() == [
        "task_1",
        '{"id": "task_2", "files": ["out/task_2_0.png"]}',
    ]


def test_the_ending_names_what_is_unfinished_and_how_to_resume(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = Outcome(ExitCode.TIMEOUT, ["task_1"], timed_out=True, hints=["Do this."])
    show_ending(outcome, timeout=5, resume=lambda ids: f"apimart wait {' '.join(ids)}")
    assert lines(capsys) == [
        "Do this.",
        "0 images saved, 0 tasks failed, 1 unfinished.",
        "Timed out after 5 s; 1 task(s) unfinished: task_1",
        "Resume with: apimart wait task_1",
    ]


def test_the_summary_line_counts_images_failures_and_cost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = Outcome(files={"t1": [Path("a.png"), Path("b.png")]}, failed={"t2"}, completed=2)
    outcome.costs = {"t1": 0.05, "t2": 0.01}
    assert summary_line(outcome) == "2 images saved, 1 task failed, cost 0.06."
    assert summary_line(outcome, downloaded=False) == "2 tasks completed, 1 task failed, cost 0.06."


def test_the_summary_line_counts_videos_apart_from_images() -> None:
    outcome = Outcome(files={"t1": [Path("a.mp4")]}, completed=1)
    outcome.costs = {"t1": 0.5}
    assert summary_line(outcome) == "1 video saved, 0 tasks failed, cost 0.5."
    outcome.files["t2"] = [Path("b.png"), Path("c.WEBM")]
    assert summary_line(outcome) == "1 image and 2 videos saved, 0 tasks failed, cost 0.5."


def test_under_the_sandbox_no_resume_command_is_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = Outcome(ExitCode.INTERRUPTED, ["task_1"], interrupted=True)
    show_ending(outcome, timeout=5, resume=None)
    assert lines(capsys) == [
        "Interrupted; 1 task(s) unfinished: task_1",
        "They ended with the sandbox; there is nothing to resume.",
    ]


def test_the_rich_batch_display_counts_jobs_by_stage_and_the_cost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    display = RichBatchDisplay([1, 2, 3])
    display.job(1, "submitted")
    display.job(2, "done")
    display.job(3, "failed")
    display.cost(0.25)
    assert display._counts() == "submitted 1 · done 1 · failed 1"
    assert display._downloads() == "cost 0.25"  # on a line of its own: 80 columns hold both
    display.message("line 2: saved out/[1].png")  # brackets are not markup
    display.close()
    assert "line 2: saved out/[1].png" in capsys.readouterr().err


def test_a_batch_off_a_terminal_says_a_long_downloads_bytes_every_few_seconds(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    display = PlainBatchDisplay(clock=clock)
    display.transferred(3, 0, 0, 4 * 1024 * 1024)
    clock.time += 1
    display.transferred(3, 0, 100 * 1024, 4 * 1024 * 1024)
    assert lines(capsys) == []  # a quick download says nothing
    clock.time += DOWNLOAD_NOTE_SECONDS
    display.transferred(3, 0, 600 * 1024, 4 * 1024 * 1024)
    display.transferred(3, 0, 700 * 1024, 4 * 1024 * 1024)  # too soon for another
    assert lines(capsys) == ["line 3: image 0: downloading 600.0 KiB of 4.0 MiB, 100.0 KiB/s"]


def test_the_rich_batch_display_shows_the_images_downloading_until_their_job_ends() -> None:
    display = RichBatchDisplay([1, 2])
    display.transferred(1, 0, 0, 1000)
    display.transferred(2, 0, 0, None)
    assert display._downloads().startswith("2 images downloading, ")
    display.job(1, "done")
    assert display._downloads().startswith("1 image downloading, ")
    display.job(2, "failed")
    assert display._downloads() == ""
    display.close()


def test_the_batch_displays_hide_the_key_and_keep_warnings_under_quiet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    console.hide("sk-secret-0123456789")
    display = RichBatchDisplay([1])
    display.warning("line 1: the server said sk-secret-0123456789")
    display.close()
    PlainBatchDisplay().job(1, "failed", "failed: sk-secret-0123456789")
    assert "sk-secret" not in capsys.readouterr().err


def test_a_failure_is_said_with_its_task(capsys: pytest.CaptureFixture[str]) -> None:
    SilentReporter().failed("task_1", TaskError("Task task_1 does not exist (404)."))
    SilentReporter().failed(None, TaskError("Invalid task id 'a/b'."))
    assert lines(capsys) == [
        "task_1: Task task_1 does not exist (404).",
        "Error: Invalid task id 'a/b'.",
    ]


@pytest.mark.parametrize(("stdout_is_a_terminal", "noted"), [(True, False), (False, True)])
def test_a_saved_path_is_said_once_on_a_terminal(
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stdout_is_a_terminal: bool,
    noted: bool,
) -> None:
    """Paths go to standard output always; the "saved" note on standard error only where
    standard output is not the same screen (a file or a pipe)."""
    import sys

    monkeypatch.setattr(
        console, "is_terminal", lambda stream: stream is sys.stdout and stdout_is_a_terminal
    )
    reporter = PlainReporter(clock=clock)

    reporter.saved(Task("task_1", "completed"), 0, SavedFile(Path("out/task_1_0.png"), False))

    out, err = capsys.readouterr()
    assert out == "out/task_1_0.png\n"
    assert ("task_1: saved out/task_1_0.png" in err) is noted


def test_many_images_downloading_off_a_terminal_make_one_line_every_few_seconds(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    display = PlainBatchDisplay(clock=clock)
    for line in range(1, 9):
        display.transferred(line, 0, 0, 1024 * 1024)
    clock.time += DOWNLOAD_NOTE_SECONDS - 1
    for line in range(1, 9):
        display.transferred(line, 0, 512 * 1024, 1024 * 1024)
    assert lines(capsys) == []
    clock.time += 1
    for line in range(1, 9):
        display.transferred(line, 0, 512 * 1024, 1024 * 1024)
    assert lines(capsys) == ["8 images: downloading 4.0 MiB of 8.0 MiB, 819.2 KiB/s"]
    display.saved(1, 0, "out/a.png")
    assert lines(capsys) == ["line 1: saved out/a.png"]


def test_the_waiting_label_moves_between_polls_and_counts_from_the_submission() -> None:
    task = Task("task_1", "processing", progress=20, created=1000, estimated_time=20)
    # One reply, seen at 1004: the label moves on with the time all the same.
    assert waiting_label(task, now=1004, seen=1004) == ("processing 20%, ~16 s left", 0.2)
    assert waiting_label(task, now=1010, seen=1004) == ("processing ~50%, ~10 s left", 0.5)


def test_the_estimate_is_revised_once_it_is_exceeded() -> None:
    task = Task("task_1", "processing", created=1000, estimated_time=10)
    assert waiting_label(task, now=1012, seen=1012) == ("processing ~99%, now ~3 s left", 0.99)
    # The service's own progress says more than its estimate.
    task = Task("task_1", "processing", progress=50, created=1000, estimated_time=10)
    assert waiting_label(task, now=1012, seen=1012)[0] == "processing 50%, ~12 s left"


def test_a_task_last_seen_submitted_is_shown_processing_as_its_time_runs_on() -> None:
    task = Task("task_1", "submitted", created=1000, estimated_time=24)
    assert waiting_label(task, now=1001, seen=1001)[0] == "submitted, ~23 s left"
    assert waiting_label(task, now=1012, seen=1001)[0] == "processing ~50%, ~12 s left"


def test_the_clock_reads_hours_minutes_seconds() -> None:
    assert clock_text(0) == "0:00:00"
    assert clock_text(3725.9) == "1:02:05"


def test_costs_follow_one_rule_everywhere() -> None:
    assert cost_text(0.05 + 0.05 + 0.05) == "0.15"
    assert cost_number(0.05 + 0.05 + 0.05) == 0.15
    assert [cost_text(c) for c in (0.1, 0.10, 15.0, 0.10555, 0)] == [
        "0.1",
        "0.1",
        "15",
        "0.1056",
        "0",
    ]


def test_a_preview_that_cannot_be_drawn_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    from apimart_cli.commands.common import previewer

    console.configure()
    assert previewer(True) is None  # standard error is captured: no terminal
    assert lines(capsys) == ["No inline preview: standard error is not a terminal."]


@pytest.mark.parametrize(("term", "mode"), [("xterm-256color", "rich"), ("dumb", "plain")])
def test_a_dumb_terminal_gets_the_plain_lines(
    monkeypatch: pytest.MonkeyPatch, term: str, mode: str
) -> None:
    """A terminal that cannot move the cursor (TERM=dumb) would show no bars until the
    end: rich draws only the last frame there. It gets a line per change instead."""
    monkeypatch.setattr(console, "is_terminal", lambda stream: True)
    monkeypatch.setenv("TERM", term)
    assert display_mode() == mode


def _screen(reporter: RichReporter, width: int, height: int) -> list[str]:
    """What the reporter's display draws on a terminal `width` by `height`."""
    import io

    from rich.console import Console

    out = io.StringIO()
    screen = Console(file=out, width=width, height=height, color_system=None)
    screen.print(reporter._progress.get_renderable())
    return [line.rstrip() for line in out.getvalue().splitlines()]


def _waiting(reporter: RichReporter, task_id: str) -> None:
    import time

    reporter.added(task_id)
    task = Task(task_id, "processing", progress=40, created=time.time() - 5, estimated_time=20)
    reporter.update(task)


TASK_IDS = [f"task_01K0KDYPRFDYYVPG062FBBJ9{n:02d}" for n in range(20)]


@pytest.mark.parametrize("width", [40, 50, 60])
def test_on_a_narrow_terminal_each_row_keeps_its_whole_id_and_label(width: int) -> None:
    """At 50 columns the label was folded a letter a line; at 40 it was gone, the id cut
    with an ellipsis and the clock too. Now each row takes two lines, nothing cut."""
    reporter = RichReporter()
    _waiting(reporter, TASK_IDS[0])
    reporter.transferred(TASK_IDS[0], 0, 1024 * 1024, 3 * 1024 * 1024)
    screen = _screen(reporter, width, 24)
    reporter.close()
    assert all(len(line) <= width and "…" not in line for line in screen), screen
    assert len(screen) == 4, screen
    assert screen[0].startswith(TASK_IDS[0]) and CLOCK.search(screen[0]), screen
    assert screen[1].lstrip(" ━╸╺").startswith("processing 40%, ~"), screen
    assert screen[2].startswith("  image 0 ") and CLOCK.search(screen[2]), screen
    assert screen[3].endswith("1.0 of 3.0 MiB, 0 B/s"), screen


def test_on_an_80_column_terminal_a_row_is_one_line() -> None:
    reporter = RichReporter()
    _waiting(reporter, TASK_IDS[0])
    screen = _screen(reporter, 80, 24)
    reporter.close()
    assert len(screen) == 1 and screen[0].startswith(TASK_IDS[0] + " "), screen
    assert "processing 40%" in screen[0] and CLOCK.search(screen[0]), screen


def test_more_rows_than_the_terminal_has_lines_leave_the_ended_ones_out_until_the_end(
    tmp_path: Path,
) -> None:
    """20 tasks on 10 lines: rich cut the display at the bottom with '...', hiding the
    tasks still running under those that had ended. The ended ones give way to a line
    that counts them, then the last rows to one that counts the rest; the final frame
    lists every task."""
    reporter = RichReporter(download=False)
    for task_id in TASK_IDS:
        _waiting(reporter, task_id)
    for task_id in TASK_IDS[:5]:  # ended: make room for those still running
        reporter.update(Task(task_id, "completed"))
    screen = _screen(reporter, 80, 10)
    assert len(screen) == 10, screen
    assert screen[0] == "5 tasks ended, listed at the end"
    assert [line.split()[0] for line in screen[1:9]] == TASK_IDS[5:13]
    assert screen[9] == "… 7 more tasks not shown"
    reporter.close()
    final = _screen(reporter, 80, 10)
    assert [line.split()[0] for line in final] == TASK_IDS
