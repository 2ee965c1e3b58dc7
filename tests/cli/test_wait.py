"""`apimart wait`: poll all at once, download, print paths; failures, timeouts, resumes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.history import History

from .conftest import (
    IMAGES,
    PNG,
    api_requests,
    as_served,
    assert_images_fetched_without_key,
    expect_image,
    expect_task,
    history_rows,
    png,
    record,
    run,
    saved,
    task,
)

FAST = ("--interval", "0.1")
OUT = Path("out")


def test_downloads_completed_tasks_and_prints_only_paths(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"], [f"{IMAGES}/c.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")
    expect_image(httpx_mock, f"{IMAGES}/b.png", png(3, 3))
    expect_image(httpx_mock, f"{IMAGES}/c.png", png(4, 4))

    result = run("wait", "task_01", "task_02", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    paths = [str(OUT / name) for name in ("task_01_0.png", "task_02_0.png", "task_02_1.png")]
    assert sorted(result.stdout.splitlines()) == paths
    assert saved(tmp_path / "out") == ["task_01_0.png", "task_02_0.png", "task_02_1.png"]
    assert as_served(tmp_path / "out" / "task_02_1.png") == png(4, 4)
    assert_images_fetched_without_key(httpx_mock, 3)


def test_progress_off_a_terminal_is_plain_lines_on_stderr(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "processing", progress=30))
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    path = OUT / "task_01_0.png"
    assert result.stdout == f"{path}\n"
    assert result.stderr == (
        f"task_01: processing 30%\ntask_01: completed\ntask_01: saved {path}\n"
        "1 image saved, 0 tasks failed.\n"
    )


def test_quiet_silences_progress(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("-q", "wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"
    assert result.stderr == ""


def test_the_api_variants_are_tolerated(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    # data as a one-item list; `pending`; a state this tool does not know; url as a string.
    expect_task(httpx_mock, [task("task_01", "pending")])
    expect_task(httpx_mock, task("task_01", "in_review"))
    expect_task(httpx_mock, [task("task_01", urls=[f"{IMAGES}/a.png"])])
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    path = OUT / "task_01_0.png"
    assert result.stdout == f"{path}\n"
    assert result.stderr == (
        "task_01: pending\n"
        "task_01: in_review (a state this tool does not know; still waiting)\n"
        "task_01: completed\n"
        f"task_01: saved {path}\n"
        "1 image saved, 0 tasks failed.\n"
    )
    assert saved(tmp_path / "out") == ["task_01_0.png"]


def test_a_data_uri_result_is_saved(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    import base64

    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    expect_task(httpx_mock, task("task_01", urls=[[uri]]))

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"
    assert as_served(tmp_path / "out" / "task_01_0.png") == PNG


def test_a_failed_task_shows_its_reason_and_the_others_are_downloaded(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    failed = task("task_01", "failed", error={"code": "moderation", "message": "content policy"})
    expect_task(httpx_mock, failed)
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/b.png")

    result = run("wait", "task_01", "task_02", "-o", "out", *FAST)

    assert result.exit_code == 1, result.output
    assert result.stdout == f"{OUT / 'task_02_0.png'}\n"
    assert "task_01: failed: content policy\n" in result.stderr
    assert saved(tmp_path / "out") == ["task_02_0.png"]
    rows = {row.task_id: row for row in history_rows()}
    assert rows == {}  # neither was submitted from here: the history is left alone


def test_a_cancelled_task_exits_1(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "cancelled"))

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "task_01: cancelled\ntask_01: cancelled: no reason given\n0 images saved, 1 task failed.\n"
    )


def test_no_download_prints_the_completed_ids(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"]]))

    result = run("wait", "task_01", "task_02", "--no-download", *FAST)

    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == ["task_01", "task_02"]
    assert list(Path().glob("*.png")) == []


def test_json_adds_the_files_to_each_data_object(api: str, httpx_mock: HTTPXMock) -> None:
    first = task("task_01", urls=[[f"{IMAGES}/a.png"], [f"{IMAGES}/b.png"]], cost=0.05)
    failed = task("task_02", "failed", error={"message": "content policy"})
    expect_task(httpx_mock, first)
    expect_task(httpx_mock, failed)
    expect_image(httpx_mock, f"{IMAGES}/a.png")
    expect_image(httpx_mock, f"{IMAGES}/b.png")

    result = run("wait", "task_01", "task_02", "--json", "-o", "out", *FAST)

    assert result.exit_code == 1, result.output
    objects = sorted((json.loads(line) for line in result.stdout.splitlines()), key=str)
    files = [str(OUT / "task_01_0.png"), str(OUT / "task_01_1.png")]
    assert objects == sorted([{**first, "files": files}, {**failed, "files": []}], key=str)


def test_json_with_no_download(api: str, httpx_mock: HTTPXMock) -> None:
    data = task("task_01", urls=[[f"{IMAGES}/a.png"]])
    expect_task(httpx_mock, data)

    result = run("wait", "task_01", "--json", "--no-download", *FAST)

    assert result.exit_code == 0, result.output
    assert result.stdout == json.dumps({**data, "files": []}) + "\n"


def test_timeout_exits_124_with_the_unfinished_ids_and_how_to_resume(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_task(httpx_mock, task("task_01", "processing", progress=5), reusable=True)
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/b.png")

    # The timeout bounds the whole command, start-up included: room for task_02 to arrive.
    result = run("wait", "task_01", "task_02", "-o", "out", "--timeout", "1.5", *FAST)

    assert result.exit_code == 124, result.output
    assert result.stdout == f"{OUT / 'task_02_0.png'}\n"
    assert result.stderr.endswith(
        "Timed out after 1.5 s; 1 task(s) unfinished: task_01\n"
        "Resume with: apimart wait -o out task_01\n"
    )
    assert 2 <= len(api_requests(httpx_mock)) <= 8  # polled, not hammered


def test_an_existing_file_is_kept_reported_and_still_printed(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "task_01_0.png").write_bytes(b"\x89PNG\r\n\x1a\nmine")
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    path = OUT / "task_01_0.png"
    assert result.stdout == f"{path}\n"
    assert f"task_01: kept the existing {path} (use --force to replace it)\n" in result.stderr
    assert (tmp_path / "out" / "task_01_0.png").read_bytes() == b"\x89PNG\r\n\x1a\nmine"
    assert_images_fetched_without_key(httpx_mock, 0)


def test_force_replaces_an_existing_file(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "task_01_0.png").write_bytes(b"\x89PNG\r\n\x1a\nmine")
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", "--force", *FAST)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"
    assert as_served(tmp_path / "out" / "task_01_0.png") == PNG
    assert saved(tmp_path / "out") == ["task_01_0.png"]


def test_ids_from_stdin(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")
    expect_image(httpx_mock, f"{IMAGES}/b.png")

    result = run("wait", "-o", "out", *FAST, input=" task_01\n\ntask_02 \n")

    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == [
        str(OUT / "task_01_0.png"),
        str(OUT / "task_02_0.png"),
    ]


def test_a_bad_id_on_stdin_is_reported_and_the_others_waited_for(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "-", "-o", "out", *FAST, input="not an id\ntask_01\n")

    assert result.exit_code == 2, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"
    assert "Error: Invalid task id 'not an id'.\n" in result.stderr


def test_only_bad_ids_on_stdin_are_told_once_each_and_nothing_is_sent(
    api: str, httpx_mock: HTTPXMock
) -> None:
    # It also said "No task ids on standard input", a second error that was not so.
    result = run("wait", "--json", input="not an id\nnor/this\n")

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    *said, last = result.stderr.splitlines()
    assert said == [
        "Error: Invalid task id 'not an id'.",
        "Error: Invalid task id 'nor/this'.",
        "A task id has only letters, digits, '_' and '-' (not first), such as task_01KPQ7J7DW...",
    ]
    assert json.loads(last)["error"]["message"] == "Invalid task id 'not an id'."
    assert httpx_mock.get_requests() == []


def test_pending_waits_for_unfinished_tasks_of_this_base_url_only(
    api: str, httpx_mock: HTTPXMock
) -> None:
    record("task_01")
    record("task_02")
    record("task_09", base_url="https://other.test")
    record("task_03")
    with History.open() as history:
        history.update("task_03", state="completed")
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_task(httpx_mock, task("task_02", "failed", error={"message": "content policy"}))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "--pending", "-o", "out", *FAST)

    assert result.exit_code == 1, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"
    assert "task_02: failed: content policy\n" in result.stderr
    states = {row.task_id: row.state for row in history_rows()}
    assert states == {
        "task_01": "completed",
        "task_02": "failed",
        "task_03": "completed",
        "task_09": "submitted",
    }
    [row] = [row for row in history_rows() if row.task_id == "task_01"]
    assert row.files == (str((OUT / "task_01_0.png").absolute()),)  # absolute in the history


def test_pending_with_nothing_unfinished(api: str, httpx_mock: HTTPXMock) -> None:
    record("task_09", base_url="https://other.test")

    result = run("wait", "--pending")

    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == "No unfinished tasks in the history.\n"
    assert httpx_mock.get_requests() == []


def test_the_same_id_twice_is_polled_once(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"


def test_a_missing_task_exits_1(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, None, task_id="task_99", status_code=404, reply={"message": "no"})

    result = run("wait", "task_99", *FAST)

    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "task_99: Task task_99 does not exist (404).\n"
        "Check the id; `apimart history` lists the tasks submitted from here.\n"
        "0 images saved, 1 task failed.\n"
    )


def test_an_image_host_that_fails_exits_5_after_retries(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    for _ in range(6):
        httpx_mock.add_response(url=f"{IMAGES}/a.png", status_code=503)

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 5, result.output
    assert result.stdout == ""
    assert f"task_01: Downloading {IMAGES}/a.png failed: the image host answered 503" in (
        result.stderr
    )
    assert saved(tmp_path / "out") == []  # no part file left behind


def test_a_file_that_cannot_be_written_is_an_error_not_a_success(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    # Something in the way of the download's temporary file: the image cannot be saved.
    (tmp_path / "out" / ".task_01_0.part").mkdir(parents=True)
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/b.png")

    result = run("wait", "task_01", "task_02", "-o", "out", *FAST)

    assert result.exit_code == 2, result.output  # a local problem, refused: nothing written
    assert result.stdout == f"{OUT / 'task_02_0.png'}\n"
    part = OUT / ".task_01_0.part"
    assert f"task_01: {part} is a folder, where a partial download is to be written." in (
        result.stderr
    )


def test_a_refused_key_exits_3_and_says_what_to_do(api: str, httpx_mock: HTTPXMock) -> None:
    refused = {"error": {"code": 401, "message": "invalid token", "type": "authentication_error"}}
    expect_task(httpx_mock, None, task_id="task_01", status_code=401, reply=refused)

    result = run("wait", "task_01", *FAST)

    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "task_01: The server answered 401: invalid token\n"
        "Check the key: `apimart config set api_key`, or set APIMART_API_KEY.\n"
        "0 images saved, 1 task failed.\n"
    )


def test_no_ids_and_stdin_a_terminal_exits_2(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("apimart_cli.console.is_terminal", lambda stream: stream is sys.stdin)

    result = run("wait")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "Error: No task ids given.\nPass them as arguments, pipe them in, or use --pending.\n"
    )
    assert httpx_mock.get_requests() == []


def test_history_records_state_and_files(api: str, httpx_mock: HTTPXMock) -> None:
    record("task_01")
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]], cost=0.05))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    [row] = history_rows()
    saved = str((OUT / "task_01_0.png").absolute())  # the history keeps absolute paths
    assert (row.state, row.cost, row.files) == ("completed", 0.05, (saved,))


def test_progress_bars_on_a_terminal_show_brackets_in_paths_as_typed(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("apimart_cli.console.is_terminal", lambda stream: stream is sys.stderr)
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out[/x]", *FAST)

    assert result.exit_code == 0, result.output
    path = Path("out[/x]") / "task_01_0.png"
    assert result.stdout == f"{path}\n"
    assert f"saved {path}" in result.stderr
    assert as_served(tmp_path / path) == PNG


def test_a_bug_while_saving_fails_the_task_loudly(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, *args: object) -> None:
        raise RuntimeError("reporter bug")

    monkeypatch.setattr("apimart_cli.progress.PlainReporter.saved", broken)
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 1, result.output
    assert "task_01: Internal error while saving: RuntimeError('reporter bug')\n" in result.stderr


def test_the_resume_command_can_be_pasted(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "processing"), reusable=True, optional=True)

    result = run("wait", "task_01", "-o", "my pictures", "--timeout", "0.2", *FAST)

    assert result.exit_code == 124, result.output
    assert result.stderr.endswith("Resume with: apimart wait -o 'my pictures' task_01\n")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "apimart wait t1 t2"),
        ({"output": Path("my pictures")}, "apimart wait -o 'my pictures' t1 t2"),
        ({"base_url": "http://127.0.0.1:87"}, "apimart --base-url http://127.0.0.1:87 wait t1 t2"),
        ({"download": False, "as_json": True}, "apimart wait --no-download --json t1 t2"),
    ],
)
def test_the_resume_command_keeps_what_the_wait_was_told(
    options: dict[str, object], expected: str
) -> None:
    from apimart_cli.commands.common import resume_command

    output = options.pop("output", None)
    assert resume_command(["t1", "t2"], output, **options) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_a_resume_command_with_control_characters_is_one_line_a_shell_reads_back(
    shell: str,
) -> None:
    from apimart_cli.commands.common import resume_command

    if shutil.which(shell) is None:
        pytest.skip(f"no {shell}")
    folder = "out\x1b]0;PWNED\x07\x1b[31mred\nline2 it's \\ \u2028 \u202e é"
    command = resume_command(["t1"], Path(folder))

    assert command.isprintable()  # no escape reaches the terminal, no line break
    # The shell reads the words back as they were: printf in place of apimart.
    script = command.replace("apimart", "printf '%s\\0'", 1)
    read_back = subprocess.run([shell, "-c", script], capture_output=True, check=True).stdout
    assert read_back.decode().split("\0")[:-1] == ["wait", "-o", folder, "t1"]


def test_nothing_on_standard_input_is_an_error_and_nothing_is_sent(
    api: str, httpx_mock: HTTPXMock
) -> None:
    result = run("wait", input="\n  \n")

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert "No task ids on standard input." in result.stderr
    assert httpx_mock.get_requests() == []


def test_the_polled_id_names_the_file_and_the_record_whatever_the_reply_says(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    record("task_01")
    # The reply names another task: the image is still task_01's, and so is the record.
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/a.png"]]), task_id="task_01")
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"
    assert saved(tmp_path / "out") == ["task_01_0.png"]
    rows = history_rows()
    assert [(row.task_id, row.state) for row in rows] == [("task_01", "completed")]
    assert rows[0].files == (str(tmp_path / OUT / "task_01_0.png"),)
