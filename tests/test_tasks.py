"""Parsing the API's replies into tasks, tolerant of every shape it sends."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apimart_cli.errors import ExitCode, ServiceError, UsageError
from apimart_cli.tasks import (
    ResultImage,
    Task,
    parse_submission,
    parse_task,
    validate_task_id,
)

TASK_ID = "task_01KPQ7J7DWB7QZ3WCEK3YVPBRA"
URL = "https://upload.apimart.ai/f/image/abc.png"
DATA_URI = "data:image/png;base64,iVBORw0KGgo="

# The documented reply of a completed task (api.md).
COMPLETED = {
    "code": 200,
    "data": {
        "id": TASK_ID,
        "status": "completed",
        "progress": 100,
        "created": 1776748674,
        "completed": 1776748726,
        "actual_time": 52,
        "cost": 0.05279,
        "credits_cost": 0.5279,
        "estimated_time": 100,
        "result": {"images": [{"url": [URL], "expires_at": 1776835126}]},
    },
}


# --- submissions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ({"code": 200, "data": [{"status": "submitted", "task_id": TASK_ID}]}, [TASK_ID]),
        (
            {"code": 200, "data": [{"task_id": "task_a"}, {"task_id": "task_b"}]},
            ["task_a", "task_b"],
        ),
        ({"code": 200, "data": {"id": TASK_ID, "status": "pending", "cost": 0.05}}, [TASK_ID]),
        ({"code": 200, "data": {"task_id": TASK_ID}}, [TASK_ID]),
        ({"data": [{"task_id": TASK_ID, "id": "other"}]}, [TASK_ID]),
    ],
)
def test_parse_submission(reply: dict[str, Any], expected: list[str]) -> None:
    assert parse_submission(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        {"code": 200, "data": [{"status": "submitted"}]},
        {"code": 200, "data": {"status": "pending"}},
        {"code": 200, "data": {"id": ""}},
        {"code": 200, "data": {"id": 12345}},
        {"code": 200, "data": []},
        {"code": 200, "data": None},
        {"code": 200, "data": ["task_a"]},
        {"code": 200, "data": [{"task_id": "task_a"}, {"status": "submitted"}]},
        {"code": 200},
        [],
        "task_a",
        None,
    ],
)
def test_parse_submission_without_an_id_is_a_service_error(reply: Any) -> None:
    with pytest.raises(ServiceError) as caught:
        parse_submission(reply)
    assert caught.value.exit_code == ExitCode.SERVICE


# --- tasks --------------------------------------------------------------------


def test_parse_task_documented_reply() -> None:
    task = parse_task(COMPLETED, TASK_ID)
    assert task == Task(
        task_id=TASK_ID,
        status="completed",
        progress=100,
        estimated_time=100.0,
        created=1776748674,
        cost=0.05279,
        images=(ResultImage(URL, 1776835126),),
    )
    assert task.finished
    assert task.known_status
    assert task.raw["credits_cost"] == 0.5279


def _reply(**data: Any) -> dict[str, Any]:
    return {"code": 200, "data": {"id": TASK_ID, **data}}


@pytest.mark.parametrize(
    ("result", "images"),
    [
        ({"images": [{"url": [URL], "expires_at": 5}]}, (ResultImage(URL, 5),)),
        ({"images": [{"url": URL, "expires_at": 5}]}, (ResultImage(URL, 5),)),  # older replies
        ({"images": [{"url": URL}]}, (ResultImage(URL, None),)),
        (
            {"images": [{"url": [URL, URL + "2"], "expires_at": 5}, {"url": URL + "3"}]},
            (ResultImage(URL, 5), ResultImage(URL + "2", 5), ResultImage(URL + "3")),
        ),
        ({"images": [{"url": DATA_URI}]}, (ResultImage(DATA_URI),)),
        ({"images": [{"url": [URL], "expires_at": 5.9}]}, (ResultImage(URL, 5),)),
        ({"images": [{"url": [URL], "expires_at": "5"}]}, (ResultImage(URL, 5),)),
        ({"images": [{"url": [URL], "expires_at": "soon"}]}, (ResultImage(URL, None),)),
        ({"images": [{"url": [URL], "expires_at": True}]}, (ResultImage(URL, None),)),
        ({"images": [{"url": ["", None, 3, URL]}]}, (ResultImage(URL),)),
        ({"images": [{"url": None}, "junk", None, {"url": {"a": URL}}]}, ()),
        ({"images": []}, ()),
        ({"images": None}, ()),
        ({}, ()),
        (None, ()),
        ("junk", ()),
    ],
)
def test_parse_task_images(result: Any, images: tuple[ResultImage, ...]) -> None:
    assert parse_task(_reply(status="completed", result=result), TASK_ID).images == images


@pytest.mark.parametrize(
    "reply",
    [
        {"code": 200, "data": {"id": TASK_ID, "status": "processing", "progress": 40}},
        {"code": 200, "data": [{"id": TASK_ID, "status": "processing", "progress": 40}]},
        {"data": [{"task_id": TASK_ID, "status": "Processing", "progress": 40.7}]},
    ],
)
def test_parse_task_data_as_object_or_list(reply: dict[str, Any]) -> None:
    task = parse_task(reply, TASK_ID)
    assert (task.task_id, task.status, task.progress) == (TASK_ID, "processing", 40)
    assert not task.finished
    assert task.known_status


def test_parse_task_falls_back_to_the_requested_id() -> None:
    assert parse_task({"data": {"status": "pending"}}, "task_asked").task_id == "task_asked"


@pytest.mark.parametrize(
    ("error", "message"),
    [
        ({"code": 400, "message": "rejected by moderation"}, "rejected by moderation"),
        ({"code": "content_policy", "message": "内容违规"}, "内容违规"),
        ({"code": 500, "message": 42}, "42"),
        ({"code": 500}, None),
        ({"code": 500, "message": ""}, None),
        ("upstream timeout", "upstream timeout"),
        ("", None),
        (None, None),
        (["x"], None),
    ],
)
def test_parse_task_error_message(error: Any, message: str | None) -> None:
    task = parse_task(_reply(status="failed", error=error), TASK_ID)
    assert task.status == "failed"
    assert task.finished
    assert task.error_message == message


@pytest.mark.parametrize("status", ["submitted", "pending", "processing"])
def test_unfinished_states(status: str) -> None:
    task = parse_task(_reply(status=status), TASK_ID)
    assert not task.finished
    assert task.known_status


@pytest.mark.parametrize(
    ("status", "meaning"),
    [
        ("succeeded", "completed"),
        ("SUCCESS", "completed"),
        ("Failure", "failed"),
        ("canceled", "cancelled"),
        ("CANCELED", "cancelled"),
        ("in_progress", "processing"),
        ("RUNNING", "processing"),
        ("queued", "pending"),
        (" Processing ", "processing"),
    ],
)
def test_states_are_read_with_their_synonyms_in_any_case(status: str, meaning: str) -> None:
    task = parse_task(_reply(status=status), TASK_ID)
    assert task.status == meaning
    assert task.known_status


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "COMPLETED"])
def test_final_states(status: str) -> None:
    task = parse_task(_reply(status=status), TASK_ID)
    assert task.finished
    assert task.known_status


@pytest.mark.parametrize("status", ["in_review", "on_hold", "paused"])
def test_unknown_status_is_kept_and_unfinished(status: str) -> None:
    task = parse_task(_reply(status=status), TASK_ID)
    assert task.status == status
    assert not task.finished
    assert not task.known_status


@pytest.mark.parametrize(
    "reply",
    [
        {"code": 200, "data": {"id": TASK_ID}},
        {"code": 200, "data": {"id": TASK_ID, "status": ""}},
        {"code": 200, "data": {"id": TASK_ID, "status": None}},
        {"code": 200, "data": {"id": TASK_ID, "status": 3}},
        {"code": 200, "data": []},
        {"code": 200, "data": ["completed"]},
        {"code": 200, "data": "completed"},
        {"code": 200},
        {"status": "completed"},
        ["completed"],
        None,
    ],
)
def test_parse_task_without_a_status_is_a_service_error(reply: Any) -> None:
    with pytest.raises(ServiceError) as caught:
        parse_task(reply, TASK_ID)
    assert caught.value.exit_code == ExitCode.SERVICE


@pytest.mark.parametrize(
    ("progress", "expected"),
    [(True, None), (False, None), ("50", None), (None, None), (0, 0), (55, 55), (99.9, 99)],
)
def test_parse_task_progress(progress: Any, expected: int | None) -> None:
    assert parse_task(_reply(status="processing", progress=progress), TASK_ID).progress == expected


@pytest.mark.parametrize(
    ("field", "value", "attribute", "expected"),
    [
        ("estimated_time", 100, "estimated_time", 100.0),
        ("estimated_time", "100", "estimated_time", None),
        ("estimated_time", True, "estimated_time", None),
        ("cost", 0.05, "cost", 0.05),
        ("cost", "0.05", "cost", None),
        ("created", 1776748674, "created", 1776748674),
        ("created", False, "created", None),
    ],
)
def test_parse_task_numbers_are_checked(
    field: str, value: Any, attribute: str, expected: object
) -> None:
    task = parse_task(_reply(status="pending", **{field: value}), TASK_ID)
    assert getattr(task, attribute) == expected


# --- task ids -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (TASK_ID, TASK_ID),
        ("task_01K", "task_01K"),
        ("  task_01K \n", "task_01K"),
        ("\ttask-01K\r\n", "task-01K"),
        ("a", "a"),
        ("A-Z_0-9", "A-Z_0-9"),
        ("x" * 128, "x" * 128),
    ],
)
def test_validate_task_id_accepts(text: str, expected: str) -> None:
    assert validate_task_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "a/b",
        "../etc",
        "..",
        ".",
        "task.png",
        "task 01",
        "task\t01",
        "task\n01",
        "%2F",
        "task%2F..",
        "a\\b",
        "task?x=1",
        "task#1",
        "tâsk",
        "task\x00",
        "٣٤",  # Arabic-Indic digits are not ASCII digits
        "x" * 129,
        "-rf",  # printed, it could not be passed back as an argument
        "-",
    ],
)
def test_validate_task_id_refuses(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        validate_task_id(text)
    assert caught.value.exit_code == ExitCode.USAGE == 2
    assert caught.value.hint


@given(st.text())
def test_validate_task_id_never_returns_a_path(text: str) -> None:
    try:
        value = validate_task_id(text)
    except UsageError:
        return
    assert value
    assert "/" not in value
    assert "." not in value
    assert not any(char.isspace() for char in value)
    assert value.isascii()


def test_result_videos_are_parsed_as_images_are_with_their_kind_and_duration() -> None:
    from apimart_cli.tasks import ResultImage, parse_task

    reply = {
        "data": {
            "status": "completed",
            "result": {
                "videos": [
                    {"url": ["https://x/v.mp4"], "expires_at": 1_776_000_000, "duration": 4},
                    {"url": "https://x/w.mp4"},
                    "not an object",
                ],
                "thumbnails": [{"url": "https://x/t.jpg"}],
            },
        }
    }
    task = parse_task(reply, "task_1")
    assert task.images == (
        ResultImage("https://x/v.mp4", 1_776_000_000, "video"),
        ResultImage("https://x/w.mp4", None, "video"),
    )
    assert task.kind == "video"
    assert task.duration == 4.0


def test_a_result_of_images_is_of_the_image_kind_without_a_duration() -> None:
    from apimart_cli.tasks import parse_task

    task = parse_task(
        {"data": {"status": "completed", "result": {"images": [{"url": "https://x/a.png"}]}}},
        "task_1",
    )
    assert task.kind == "image" and task.duration is None
    assert task.images[0].kind == "image"
