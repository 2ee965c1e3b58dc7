"""`apimart generate`: the exact body sent, the output, the history, and every refusal."""

from __future__ import annotations

import base64
import json
import os
import sys
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from apimart_cli import console
from apimart_cli.history import History

from .conftest import (
    API,
    AUTH,
    IMAGES,
    KEY,
    PNG,
    SUBMIT_URL,
    as_served,
    assert_images_fetched_without_key,
    body,
    expect_image,
    expect_submit,
    expect_task,
    history_rows,
    idempotency_keys,
    run,
    saved,
    task,
)

MIB = 1024 * 1024


def write_png(path: Path) -> Path:
    path.write_bytes(PNG)
    return path


def data_uri(content: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


# -- what is sent ------------------------------------------------------------------


def test_text_to_image_sends_only_model_and_prompt(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body("a red fox"), ["task_01"])

    result = run("generate", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"
    assert result.stderr == ""
    [request] = httpx_mock.get_requests()
    assert request.headers["Content-Type"] == "application/json"
    assert len(idempotency_keys(httpx_mock)) == 1


def test_every_option_is_sent_and_n_is_a_json_number(api: str, httpx_mock: HTTPXMock) -> None:
    sent = body(n=3, size="16:9", resolution="2k", official_fallback=True)
    expect_submit(httpx_mock, sent, ["task_01"])

    result = run(
        "generate", "a red fox", "-s", "16:9", "-r", "2K", "-n", "3", "--official-fallback"
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"
    [request] = httpx_mock.get_requests()
    assert b'"n": 3,' in request.content  # a number, never "3"


def test_model_can_be_chosen(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="GET",
        url=f"{API}/v1/model-schema?model=gpt-image-2-beta",
        match_headers=AUTH,
        status_code=404,
        json={"error": {"message": "no such schema"}},
    )
    expect_submit(httpx_mock, {"model": "gpt-image-2-beta", "prompt": "a red fox"})

    result = run("generate", "a red fox", "--model", "gpt-image-2-beta")

    assert result.exit_code == 0, result.output
    assert "no schema for the model gpt-image-2-beta" in result.stderr


def test_pixel_size_outside_the_table_is_sent_with_a_note(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(size="1000x500"), ["task_01"])

    result = run("generate", "a red fox", "-s", "1000x500")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"
    assert result.stderr == "Note: size 1000x500 is not in the API's table; sent as given\n"


def test_references_keep_their_order_and_files_become_data_uris(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    # Named .jpg, but PNG inside: the MIME type comes from the bytes.
    local = write_png(tmp_path / "fox.jpg")
    gif = data_uri(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")
    url = "https://example.com/ref.webp"
    expect_submit(httpx_mock, body(image_urls=[url, data_uri(PNG), gif]), ["task_01"])

    result = run("generate", "a red fox", "-i", url, "-i", str(local), "-i", gif)

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"


def test_prompt_from_stdin_with_dash(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body("a lighthouse\nat dawn"), ["task_01"])

    result = run("generate", "-", input="a lighthouse\nat dawn\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"


def test_prompt_from_piped_stdin_without_an_argument(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body("a lighthouse at dawn"), ["task_01"])

    result = run("generate", input="a lighthouse at dawn\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"


def test_submit_reply_as_one_object_is_understood(api: str, httpx_mock: HTTPXMock) -> None:
    reply = {"code": 200, "data": {"id": "task_01", "status": "pending"}}
    expect_submit(httpx_mock, body(), reply=reply)

    result = run("generate", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"


# -- dry run ---------------------------------------------------------------------


def test_dry_run_prints_the_body_shortened_and_sends_nothing(
    httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    local = tmp_path / "fox.png"
    local.write_bytes(PNG + b"\x00" * 3000)
    head = base64.b64encode(PNG[:12]).decode()

    result = run(
        "--api-key", KEY, "--base-url", API,
        "generate", "a red fox", "-n", "2", "-i", str(local), "--dry-run",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    expected = {
        "model": "gpt-image-2",
        "prompt": "a red fox",
        "n": 2,
        "image_urls": [f"data:image/png;base64,{head}…(3070 bytes from {local})"],
    }
    assert result.stdout == json.dumps(expected, ensure_ascii=False, indent=2) + "\n"
    assert result.stderr == ""
    assert httpx_mock.get_requests() == []
    assert history_rows() == []


def test_dry_run_shortens_a_data_uri(httpx_mock: HTTPXMock) -> None:
    uri = data_uri(PNG)

    result = run("generate", "a red fox", "-i", uri, "--dry-run")

    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["image_urls"]
    assert shown == [f"{uri[: len('data:image/png;base64,') + 16]}…(70 bytes)"]
    assert httpx_mock.get_requests() == []


# -- output and history ------------------------------------------------------------


def test_plain_output_is_exactly_the_ids(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(n=2), ["task_01", "task_02"])

    result = run("generate", "a red fox", "-n", "2")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\ntask_02\n"
    assert result.stderr == ""


def test_json_output_is_one_object_per_task(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(n=2), ["task_01", "task_02"])

    result = run("generate", "a red fox", "-n", "2", "--json")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        '{"task_id": "task_01", "status": "submitted"}\n'
        '{"task_id": "task_02", "status": "submitted"}\n'
    )


def test_each_id_is_in_the_history_before_it_is_printed(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect_submit(httpx_mock, body(n=2), ["task_01", "task_02"])
    recorded_when_printed = []
    print_line = console.data

    def checking_data(line: str) -> None:
        with History.open() as history:
            recorded_when_printed.append(history.get(line) is not None)
        print_line(line)

    monkeypatch.setattr(console, "data", checking_data)

    result = run("generate", "a red fox", "-n", "2")

    assert result.exit_code == 0, result.output
    assert recorded_when_printed == [True, True]
    rows = {row.task_id: row for row in history_rows()}
    assert set(rows) == {"task_01", "task_02"}
    assert rows["task_01"].state == "submitted"
    assert rows["task_01"].base_url == API
    assert rows["task_01"].prompt == "a red fox"
    assert rows["task_01"].idempotency_key == idempotency_keys(httpx_mock)[0]


def test_wait_prints_paths_on_stdout_and_ids_on_stderr(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_submit(httpx_mock, body(), ["task_01"])
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("generate", "a red fox", "--wait", "-o", "out", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    path = str(Path("out") / "task_01_0.png")
    assert result.stdout == f"{path}\n"
    assert result.stderr.splitlines()[0] == "task_01"
    assert as_served(tmp_path / "out" / "task_01_0.png") == PNG
    assert saved(tmp_path / "out") == ["task_01_0.png"]
    assert_images_fetched_without_key(httpx_mock, 1)
    [row] = history_rows()
    assert (row.state, row.files) == ("completed", (str(Path(path).absolute()),))


def test_quiet_wait_writes_nothing_to_stderr_on_success(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_submit(httpx_mock, body(), ["task_01"])
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("-q", "generate", "a red fox", "--wait", "-o", "out", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{Path('out') / 'task_01_0.png'}\n"
    assert result.stderr == ""


def test_wait_json_prints_the_task_with_its_files(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(), ["task_01"])
    data = task("task_01", urls=[[f"{IMAGES}/a.png"]])
    expect_task(httpx_mock, data)
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("generate", "a red fox", "-w", "--json", "-o", "out", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    path = str(Path("out") / "task_01_0.png")
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{**data, "files": [path]}]


# -- refused before anything is sent ---------------------------------------------


def sparse_png(path: Path, size: int) -> str:
    """A PNG header then zeros, `size` bytes long, taking no disk space."""
    path.write_bytes(PNG[:16])
    os.truncate(path, size)
    return str(path)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["-s", "7:5"], "'7:5'"),
        (["-s", "4000x1000"], "'4000x1000'"),
        (["-s", "0x1024"], "'0x1024'"),
        (["-r", "8k"], "'8k'"),
        (["-n", "0"], "n 0"),
        (["-n", "11"], "n 11"),
        (["-i", "missing.png"], "missing.png"),
        (["-i", "ftp://example.com/a.png"], "ftp://example.com/a.png"),
        (["-i", "data:text/plain;base64,aGk="], "data:text/plain"),
    ],
)
def test_bad_input_exits_2_naming_the_value(
    api: str, httpx_mock: HTTPXMock, args: list[str], named: str
) -> None:
    result = run("generate", "a red fox", *args)

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert named in result.stderr.splitlines()[0]
    assert result.stderr.startswith("Error: ")
    assert httpx_mock.get_requests() == []
    assert history_rows() == []


def test_seventeen_references_are_refused(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    refs = [arg for i in range(17) for arg in ("-i", f"https://example.com/{i}.png")]

    result = run("generate", "a red fox", *refs)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: 17 reference images given; the API takes at most 16.\n")
    assert httpx_mock.get_requests() == []


def test_a_text_file_named_png_is_refused(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not an image at all\n")

    result = run("generate", "a red fox", "-i", "notes.png")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "Error: Reference image notes.png is not a PNG, JPEG, WebP or GIF image"
    )
    assert httpx_mock.get_requests() == []


def test_a_file_over_20_mib_is_refused(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    big = sparse_png(tmp_path / "big.png", 20 * MIB + 1)

    result = run("generate", "a red fox", "-i", big)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"Error: Reference image {big} is 20.0 MiB ({20 * MIB + 1} bytes); "
        "the API takes at most 20 MiB per image.\n"
    )
    assert httpx_mock.get_requests() == []


def test_references_over_256_mib_in_all_are_refused(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    refs = [arg for i in range(13) for arg in ("-i", sparse_png(tmp_path / f"{i}.png", 20 * MIB))]

    result = run("generate", "a red fox", *refs)

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"Error: Reference images total 260.0 MiB ({260 * MIB} bytes); "
        "the API takes at most 256 MiB in all.\n"
    )
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_is_refused(api: str, httpx_mock: HTTPXMock, prompt: str) -> None:
    result = run("generate", prompt)

    assert result.exit_code == 2, result.output
    assert (
        result.stderr
        == "Error: The prompt is empty.\nGive the prompt as an argument or on stdin.\n"
    )
    assert httpx_mock.get_requests() == []


def test_an_empty_prompt_on_stdin_is_refused(api: str, httpx_mock: HTTPXMock) -> None:
    result = run("generate", input="\n")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: The prompt is empty.\n")
    assert httpx_mock.get_requests() == []


def test_plain_http_to_another_host_is_refused(httpx_mock: HTTPXMock) -> None:
    result = run("--api-key", KEY, "--base-url", "http://api.test", "generate", "a red fox")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "Error: Refusing to send the API key over plain HTTP to 'http://api.test'.\n"
        "Use an https:// base URL (http:// is allowed only for localhost).\n"
    )
    assert httpx_mock.get_requests() == []
    assert history_rows() == []


def test_plain_http_to_loopback_is_allowed(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST",
        url="http://127.0.0.1:8787/v1/images/generations",
        match_headers=AUTH,
        match_json=body(),
        json={"code": 200, "data": [{"status": "submitted", "task_id": "task_01"}]},
    )

    result = run("--api-key", KEY, "--base-url", "http://127.0.0.1:8787", "generate", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"


# -- when the server says no -------------------------------------------------------


def test_429_is_resent_with_the_same_idempotency_key(api: str, httpx_mock: HTTPXMock) -> None:
    rate_limited = {"error": {"code": 429, "message": "slow down", "type": "rate_limit_error"}}
    expect_submit(
        httpx_mock, body(), status_code=429, reply=rate_limited, headers={"Retry-After": "0"}
    )
    expect_submit(httpx_mock, body(), ["task_01"])

    result = run("generate", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"
    assert result.stderr == "The server answered 429: slow down. Retrying in 0.0 s (try 2).\n"
    first, second = idempotency_keys(httpx_mock)
    assert first == second
    [row] = history_rows()
    assert (row.task_id, row.idempotency_key) == ("task_01", first)


def test_503_and_a_refused_connection_are_resent(api: str, httpx_mock: HTTPXMock) -> None:
    expect_submit(httpx_mock, body(), status_code=503, reply={"message": "busy"})
    httpx_mock.add_exception(httpx.ConnectError("connection refused"), url=SUBMIT_URL)
    expect_submit(httpx_mock, body(), ["task_01"])

    result = run("generate", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"
    assert len(set(idempotency_keys(httpx_mock))) == 1


def test_500_after_submit_is_not_resent_and_is_recorded_as_unknown(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_submit(
        httpx_mock,
        body(),
        status_code=500,
        reply={"error": {"code": 500, "message": "internal error", "type": "server_error"}},
    )

    result = run("generate", "a red fox")

    assert result.exit_code == 5, result.output
    assert result.stdout == ""
    [key] = idempotency_keys(httpx_mock)
    assert result.stderr == (
        "Error: The server answered 500: internal error. "
        "The task may have been created; it was not sent again.\n"
        f"Idempotency key {key}: `apimart resend {key}` sends it again safely; the "
        "service answers with the task it made, or makes it once.\n"
    )
    [row] = history_rows()
    assert (row.task_id, row.state, row.idempotency_key) == (None, "unknown", key)
    assert row.prompt == "a red fox"


def test_a_read_timeout_after_submit_is_not_resent(api: str, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ReadTimeout("timed out"), url=SUBMIT_URL)

    result = run("generate", "a red fox")

    assert result.exit_code == 5, result.output
    [key] = idempotency_keys(httpx_mock)
    assert f"`apimart resend {key}`" in result.stderr
    assert [(row.state, row.idempotency_key) for row in history_rows()] == [("unknown", key)]


def test_a_moderation_refusal_exits_1_with_the_servers_message(
    api: str, httpx_mock: HTTPXMock
) -> None:
    refusal = {
        "error": {
            "code": 400,
            "message": "Your prompt was rejected by the safety system",
            "type": "invalid_request_error",
        }
    }
    expect_submit(httpx_mock, body(), status_code=400, reply=refusal)

    result = run("generate", "a red fox")

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr == (
        "Error: The server answered 400: Your prompt was rejected by the safety system\n"
        "The server refused the request; its message says why.\n"
    )
    assert len(httpx_mock.get_requests()) == 1
    assert history_rows() == []


def test_no_prompt_and_stdin_a_terminal_exits_2(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "is_terminal", lambda stream: stream is sys.stdin)

    result = run("generate")

    assert result.exit_code == 2, result.output
    assert result.stderr == (
        'Error: No prompt given.\nPass it as an argument: apimart generate "a red fox".\n'
    )
    assert httpx_mock.get_requests() == []


def test_a_broken_history_stops_the_submission_before_it_is_sent(
    api: str, httpx_mock: HTTPXMock, isolated: Path
) -> None:
    (isolated / "data").mkdir(parents=True)
    (isolated / "data" / "history.sqlite3").write_bytes(b"this is not a database" * 100)

    result = run("generate", "a red fox")

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"Error: The task history {isolated / 'data' / 'history.sqlite3'} "
        "is not a readable SQLite database"
    )
    assert httpx_mock.get_requests() == []


def test_ids_the_history_could_not_record_are_still_given_to_the_user(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apimart_cli.errors import HistoryError

    expect_submit(httpx_mock, body(n=2), ["task_01", "task_02"])

    def disk_full(self: History, task_id: str, **fields: object) -> None:
        raise HistoryError("Cannot use the task history: database or disk is full.")

    monkeypatch.setattr(History, "record_submission", disk_full)

    result = run("generate", "a red fox", "-n", "2")

    assert result.exit_code == 5, result.output
    assert result.stdout == "task_01\ntask_02\n"  # the pipeline still gets what was paid for
    assert "Created task_01 task_02, but could not record it in the history" in result.stderr
    assert "apimart wait ID" in result.stderr


def test_a_signal_once_the_id_is_recorded_and_before_it_is_printed_still_gives_it(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM lands as the recorded ids come back up to be printed: they are paid for and
    # in the history, and `generate | apimart wait` must get them all the same.
    from apimart_cli import submission
    from apimart_cli.errors import Terminated

    expect_submit(httpx_mock, body("a red fox"), ["task_01"])
    send = submission._send

    def then_terminated(*args: object, **kwargs: object) -> list[str]:
        send(*args, **kwargs)  # type: ignore[arg-type]
        raise Terminated

    monkeypatch.setattr(submission, "_send", then_terminated)

    result = run("generate", "a red fox")

    assert result.exit_code == 143, result.output
    assert result.stdout == "task_01\n"
    assert "task_01" in result.stderr and "could not record" not in result.stderr
    [row] = history_rows()
    assert (row.task_id, row.state) == ("task_01", "submitted")


def test_a_signal_once_the_task_is_recorded_says_it_was_recorded(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SIGTERM lands just after the history committed the task: it was recorded, and
    # the message must not say it could not be.
    from apimart_cli.errors import Terminated

    expect_submit(httpx_mock, body("a red fox"), ["task_01"])
    record = History.record_submission

    def then_terminated(self: History, task_id: str, **what: object) -> None:
        record(self, task_id, **what)  # type: ignore[arg-type]
        raise Terminated

    monkeypatch.setattr(History, "record_submission", then_terminated)

    result = run("generate", "a red fox")

    assert result.exit_code == 143, result.output
    assert result.stdout == "task_01\n"
    assert "Terminated once task_01 had been created and recorded." in result.stderr
    assert "could not record" not in result.stderr


def test_a_signal_after_the_key_is_recorded_and_before_it_is_sent_names_the_key(
    api: str, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apimart_cli.errors import Terminated

    record = History.record_sending

    def then_terminated(self: History, **what: object) -> None:
        record(self, **what)  # type: ignore[arg-type]
        raise Terminated

    monkeypatch.setattr(History, "record_sending", then_terminated)

    result = run("generate", "a red fox")

    assert result.exit_code == 143, result.output
    assert result.stdout == ""
    [row] = history_rows()
    assert (row.task_id, row.state) == (None, "submitting")
    assert f"apimart resend {row.idempotency_key}" in result.stderr
    assert httpx_mock.get_requests() == []
