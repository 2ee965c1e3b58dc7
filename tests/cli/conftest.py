"""What the CLI tests share: a runner that keeps stdout and stderr apart, a key
that must never be printed, and strict pytest-httpx replies for the API.

Every test reads as a transcript: set up the server's replies in order, run
`apimart ...`, then check the exit code, the exact standard output and the
standard error apart. No reply is reused unless a test says so, and every
registered reply must be used.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock
from typer.testing import CliRunner, Result

from apimart_cli.cli import app_for
from apimart_cli.history import History, TaskRecord
from tests.helpers.images import png

API = "https://api.test"
KEY = "sk-cli-7Q4vZp9XkW2mT8rL"  # distinctive, so a leak is easy to spot
AUTH = {"Authorization": f"Bearer {KEY}"}
SUBMIT_URL = f"{API}/v1/images/generations"
IMAGES = "https://img.test"


PNG = png()


def as_served(path: Path) -> bytes:
    """A saved image's bytes without the provenance chunk apimart puts after IHDR,
    which must be there: what the image host sent."""
    data = path.read_bytes()
    (length,) = struct.unpack(">I", data[33:37])
    assert data[37:49] == b"iTXtapimart\x00", "no provenance chunk after IHDR"
    return data[:33] + data[45 + length :]


def run(
    *args: str,
    input: str | None = None,
    may_show_key: bool = False,
) -> Result:
    """`apimart ARGS...` with stdout and stderr kept apart (Typer 0.28's runner does).

    Whatever happens, no traceback and no unhandled exception reach the user,
    and the API key is never printed (unless the test asks for it, as `--reveal`).
    """
    result = CliRunner().invoke(app_for(list(args)), list(args), input=input, prog_name="apimart")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"unhandled {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output
    if not may_show_key:
        assert KEY not in result.output
    return result


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> str:
    """The key and base URL in the environment, as a user with a set-up shell has them."""
    monkeypatch.setenv("APIMART_API_KEY", KEY)
    monkeypatch.setenv("APIMART_BASE_URL", API)
    return API


# -- the server's side -------------------------------------------------------------


def body(prompt: str = "a red fox", **fields: Any) -> dict[str, Any]:
    """A generation request body as the API expects it."""
    return {"model": "gpt-image-2", "prompt": prompt, **fields}


def expect_submit(
    httpx_mock: HTTPXMock,
    sent: dict[str, Any],
    task_ids: Sequence[str] = ("task_1",),
    *,
    status_code: int = 200,
    reply: Any = None,
    headers: dict[str, str] | None = None,
) -> None:
    """The next POST of exactly `sent`, with the key, answered with `task_ids` (or `reply`)."""
    if reply is None:
        reply = {"code": 200, "data": [{"status": "submitted", "task_id": i} for i in task_ids]}
    httpx_mock.add_response(
        method="POST",
        url=SUBMIT_URL,
        match_headers=AUTH,
        match_json=sent,
        status_code=status_code,
        json=reply,
        headers=headers,
    )


def task(
    task_id: str,
    status: str = "completed",
    *,
    urls: Sequence[str | list[str]] = (),
    expires_at: int = 4_102_444_800,  # 2100-01-01
    **extra: Any,
) -> dict[str, Any]:
    """A task's `data` object, as `GET /v1/tasks/{id}` sends it."""
    data: dict[str, Any] = {"id": task_id, "status": status, **extra}
    if urls:
        data["result"] = {"images": [{"url": url, "expires_at": expires_at} for url in urls]}
    return data


def expect_task(
    httpx_mock: HTTPXMock,
    data: Any,
    *,
    task_id: str | None = None,
    status_code: int = 200,
    reply: Any = None,
    reusable: bool = False,
    optional: bool = False,
) -> None:
    """The next GET of a task, with the key, answered with `{"code": 200, "data": data}`.

    `optional`: for a test about what a timeout says, which may come before the first poll.
    """
    if task_id is None:
        task_id = data["id"] if isinstance(data, dict) else data[0]["id"]
    httpx_mock.add_response(
        method="GET",
        url=f"{API}/v1/tasks/{task_id}?language=en",
        match_headers=AUTH,
        status_code=status_code,
        json={"code": 200, "data": data} if reply is None else reply,
        is_reusable=reusable,
        is_optional=optional,
    )


def expect_image(httpx_mock: HTTPXMock, url: str, content: bytes = PNG) -> None:
    """The image host's reply: the bytes, as image/png."""
    httpx_mock.add_response(
        method="GET",
        url=url,
        content=content,
        headers={"Content-Type": "image/png", "Content-Length": str(len(content))},
    )


def api_requests(httpx_mock: HTTPXMock) -> list[httpx.Request]:
    return [r for r in httpx_mock.get_requests() if str(r.url).startswith(API)]


def image_requests(httpx_mock: HTTPXMock) -> list[httpx.Request]:
    return [r for r in httpx_mock.get_requests() if str(r.url).startswith(IMAGES)]


def assert_images_fetched_without_key(httpx_mock: HTTPXMock, count: int) -> None:
    """The image host got `count` requests and none carried an Authorization header."""
    fetched = image_requests(httpx_mock)
    assert len(fetched) == count
    for request in fetched:
        assert "authorization" not in request.headers
        assert KEY not in str(request.headers)


def idempotency_keys(httpx_mock: HTTPXMock) -> list[str]:
    """The Idempotency-Key of every submission sent, each checked to be a UUID."""
    keys = []
    for request in httpx_mock.get_requests(method="POST", url=SUBMIT_URL):
        key = request.headers["Idempotency-Key"]
        assert str(uuid.UUID(key)) == key
        keys.append(key)
    return keys


# -- the local history -------------------------------------------------------------


def history_rows() -> list[TaskRecord]:
    """Everything in the task history, newest first."""
    with History.open() as history:
        return history.list()


def record(task_id: str, *, base_url: str = API, prompt: str = "a red fox") -> None:
    """A task in the history, as `generate` leaves it."""
    with History.open() as history:
        history.record_submission(
            task_id,
            base_url=base_url,
            prompt=prompt,
            fields={},
            idempotency_key=f"key-{task_id}",
        )


def saved(folder: Path) -> list[str]:
    """The names of the files in a folder, sorted (part files included, to catch leftovers)."""
    return sorted(path.name for path in folder.iterdir())


@pytest.fixture(autouse=True)
def no_real_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries happen, but without sleeping half a second each."""
    monkeypatch.setattr("apimart_cli.retry.delay_before_retry", lambda attempt, after: 0.0)
