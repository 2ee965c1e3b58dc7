"""Real reply shapes, collected from public clients and relays of the API.

Each file in tests/fixtures/replies/ is one reply as a public source shows it
(`source`: the repository, the path, and what there shows it), which endpoint
sent it, with what HTTP status and headers, and what it must be read as
(`expect`). Every one goes through the parser; those whose reading changes what
a command does (`command`) also go through the real command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_httpx import HTTPXMock

from apimart_cli.history import History
from apimart_cli.tasks import parse_submitted, parse_task, reply_error
from tests.cli.conftest import API, SUBMIT_URL, run

CORPUS = Path(__file__).parent.parent / "fixtures" / "replies"
FILES = sorted(CORPUS.glob("*.json"))
KEY = "KEY"  # the idempotency key the parser is given
TASK_ID = "task_01KPQ7J7DWB7QZ3WCEK3YVPBRA"


def load(path: Path) -> dict[str, Any]:
    fixture: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return fixture


def test_the_corpus_is_there_and_names_its_sources() -> None:
    assert len(FILES) >= 25
    for path in FILES:
        source = load(path)["source"]
        assert "/" in source["repository"] and source["path"] and source["shows"], path.name


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.stem)
def test_each_reply_is_read_as_its_source_means(path: Path) -> None:
    fixture = load(path)
    reply, expect = fixture["reply"], fixture["expect"]
    said = reply_error(reply, fixture["status"])
    if "error_status" in expect:
        assert said is not None
        assert said.status == expect["error_status"]
        assert said.names_model is expect.get("names_model", False)
        if "message" in expect:
            assert said.message == expect["message"]
        return
    assert said is None
    if fixture["endpoint"] == "submit":
        replayed = fixture["headers"].get("Idempotency-Replayed") == "true"
        submitted = parse_submitted(reply, KEY, replayed=replayed)
        assert submitted.task_ids == expect["task_ids"]
        assert submitted.replayed is expect.get("replayed", False)
        assert submitted.request_id == expect.get("request_id", submitted.request_id)
        assert (submitted.result is not None) is expect.get("result", False)
        if submitted.result is not None:
            assert submitted.result.status == "completed"
            assert len(submitted.result.images) == expect["images"]
        return
    task = parse_task(reply, TASK_ID)
    assert task.status == expect["status"]
    assert task.known_status
    for name in ("progress", "created", "error_message"):
        if name in expect:
            assert getattr(task, name) == expect[name]
    if "images" in expect:
        assert len(task.images) == expect["images"]
    if "expires_at" in expect:
        assert {image.expires_at for image in task.images} == {expect["expires_at"]}


COMMANDS = [path for path in FILES if "command" in load(path)]


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: path.stem)
def test_replies_that_change_what_a_command_does(
    path: Path, api: str, httpx_mock: HTTPXMock
) -> None:
    fixture = load(path)
    command = fixture["command"]
    reply = {"status_code": fixture["status"], "headers": fixture["headers"]}
    if fixture["endpoint"] == "submit":
        httpx_mock.add_response(method="POST", url=SUBMIT_URL, json=fixture["reply"], **reply)
        result = run("generate", "a fox")
        posts = [r for r in httpx_mock.get_requests() if r.method == "POST"]
        assert len(posts) == command["posts"]
    else:
        httpx_mock.add_response(
            url=f"{API}/v1/tasks/{TASK_ID}?language=en",
            json=fixture["reply"],
            is_reusable=True,
            **reply,
        )
        result = run("wait", TASK_ID, "--no-download", "--timeout", "30")
    assert result.exit_code == command["exit_code"], result.output
    assert "not an object" not in result.stderr
    if "stdout" in command:
        assert result.stdout == command["stdout"]
    if "stderr" in command:
        assert command["stderr"] in result.stderr
    if command.get("unknown"):
        with History.open() as history:
            assert [record.state for record in history.list()] == ["unknown"]
