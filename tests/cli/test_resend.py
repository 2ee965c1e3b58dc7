"""`apimart resend`: an unknown outcome sent again with its key and its first body."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_httpx import HTTPXMock

from tests.cli.conftest import (
    SUBMIT_URL,
    body,
    expect_submit,
    history_rows,
    idempotency_keys,
    png,
    run,
)


def lost(httpx_mock: HTTPXMock, *args: str) -> str:
    """`apimart generate ARGS` whose reply is a 500: its outcome unknown; its key."""
    httpx_mock.add_response(method="POST", url=SUBMIT_URL, status_code=500)
    result = run("generate", *args)
    assert result.exit_code == 5, result.output
    key = idempotency_keys(httpx_mock)[-1]
    assert f"`apimart resend {key}`" in result.stderr
    return key


def test_nothing_to_resend_is_a_note_and_exit_0(api: str) -> None:
    result = run("resend")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == f"Nothing to resend: no submission to {api} is unknown.\n"


def test_an_unknown_submission_is_resent_with_its_key_and_body_and_recorded(
    api: str, httpx_mock: HTTPXMock
) -> None:
    key = lost(httpx_mock, "a red fox", "-s", "16:9")
    expect_submit(httpx_mock, body(size="16:9"), ["task_9"])

    result = run("resend")

    assert result.exit_code == 0, result.output
    assert (result.stdout, result.stderr) == ("task_9\n", "")
    first, second = httpx_mock.get_requests(method="POST", url=SUBMIT_URL)
    assert idempotency_keys(httpx_mock) == [key, key]
    assert first.content == second.content
    [row] = history_rows()
    assert (row.task_id, row.state, row.idempotency_key) == ("task_9", "submitted", key)
    assert run("resend", "--json").stdout == ""  # answered: nothing left to resend


def test_json_prints_an_object_per_task(api: str, httpx_mock: HTTPXMock) -> None:
    key = lost(httpx_mock, "a red fox")
    expect_submit(httpx_mock, body(), ["task_9"])
    result = run("resend", key, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "task_id": "task_9",
        "status": "submitted",
        "idempotency_key": key,
    }


def test_a_409_keeps_it_unknown_and_says_to_try_again_shortly(
    api: str, httpx_mock: HTTPXMock
) -> None:
    key = lost(httpx_mock, "a red fox")
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT_URL,
        status_code=409,
        json={"error": {"message": "a request with this key is in progress"}},
    )

    result = run("resend", "--json")

    assert result.exit_code == 5, result.output
    assert result.stdout == ""
    assert "still being processed" in result.stderr
    assert f"Resend it shortly with `apimart resend {key}`" in result.stderr
    error = json.loads(result.stderr.splitlines()[-1])["error"]
    assert error["idempotency_key"] == key and error["retryable"] is False
    [row] = history_rows()
    assert (row.task_id, row.state, row.idempotency_key) == (None, "unknown", key)


def test_a_reference_file_changed_since_is_refused_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(png(2, 1))
    key = lost(httpx_mock, "ink it", "-i", str(photo))
    photo.write_bytes(png(1, 2))  # the same size, another image

    result = run("resend", key)

    assert result.exit_code == 2, result.output
    assert f"Reference image {photo} changed since idempotency key {key}" in result.stderr
    assert len(idempotency_keys(httpx_mock)) == 1, "nothing sent"
    [row] = history_rows()
    assert (row.state, row.idempotency_key) == ("unknown", key)


def test_bad_or_unknown_keys(api: str, httpx_mock: HTTPXMock) -> None:
    bad = run("resend", "no such key!")
    assert bad.exit_code == 2
    assert bad.stderr.startswith("Error: Invalid idempotency key 'no such key!'.\n")
    missing = run("resend", "k-404")
    assert missing.exit_code == 1
    assert "No submission with an unknown outcome has the idempotency key k-404" in (missing.stderr)
    assert httpx_mock.get_requests() == []
