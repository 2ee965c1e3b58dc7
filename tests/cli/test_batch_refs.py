"""batch with shared references uploaded once, extra fields, and the base64 refusal."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from tests.cli.conftest import (
    API,
    AUTH,
    IMAGES,
    PNG,
    SUBMIT_URL,
    api_requests,
    body,
    expect_image,
    expect_submit,
    expect_task,
    run,
    task,
)

UPLOAD_URL = f"{API}/v1/uploads/images"
REF_URL = "https://cdn.test/shared.png"


def expect_upload(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST",
        url=UPLOAD_URL,
        match_headers=AUTH,
        json={"code": 200, "data": {"url": REF_URL, "created_at": 4_102_444_800}},
    )


def expect_done(httpx_mock: HTTPXMock, task_id: str) -> None:
    expect_task(httpx_mock, task(task_id, urls=[f"{IMAGES}/{task_id}.png"]))
    expect_image(httpx_mock, f"{IMAGES}/{task_id}.png")


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    (tmp_path / "shared.png").write_bytes(PNG)
    path = tmp_path / "jobs.txt"
    path.write_text(
        "".join(
            json.dumps({"prompt": f"fox {i}", "images": ["shared.png"]}) + "\n" for i in range(3)
        )
    )
    return path


def test_a_shared_reference_is_uploaded_once_before_anything_is_submitted(
    api: str, httpx_mock: HTTPXMock, jobs: Path, tmp_path: Path
) -> None:
    expect_upload(httpx_mock)
    for i in range(3):
        expect_submit(httpx_mock, body(f"fox {i}", image_urls=[REF_URL]), [f"task_{i}"])
    for i in range(3):
        expect_done(httpx_mock, f"task_{i}")
    result = run(
        "batch", str(jobs), "-o", str(tmp_path / "out"), "--refs", "upload", "--interval", "0.1"
    )
    assert result.exit_code == 0, result.output
    paths = [request.url.path for request in api_requests(httpx_mock)]
    assert paths[0] == "/v1/uploads/images"
    assert paths.count("/v1/uploads/images") == 1
    assert len(result.stdout.splitlines()) == 3


def test_a_base64_refusal_switches_the_batch_to_uploading(
    api: str, httpx_mock: HTTPXMock, jobs: Path, tmp_path: Path
) -> None:
    data_uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    refusal = {"error": {"code": "image_requires_upload", "message": "base64 is not accepted"}}
    # One submission at a time, so the order is known: the first job is refused once.
    expect_submit(httpx_mock, body("fox 0", image_urls=[data_uri]), status_code=400, reply=refusal)
    expect_upload(httpx_mock)
    for i in range(3):
        expect_submit(httpx_mock, body(f"fox {i}", image_urls=[REF_URL]), [f"task_{i}"])
    for i in range(3):
        expect_done(httpx_mock, f"task_{i}")
    result = run(
        "batch", str(jobs), "-o", str(tmp_path / "out"), "--concurrency", "1", "--interval", "0.1"
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.count("refused base64 references") == 1
    assert len(httpx_mock.get_requests(url=SUBMIT_URL)) == 4
    assert len(httpx_mock.get_requests(url=UPLOAD_URL)) == 1
    # The job resent records its new key in the manifest before it goes out.
    manifest = [json.loads(line) for line in (tmp_path / "out" / "batch-manifest.jsonl").open()]
    first_keys = {r.get("idempotency_key") for r in manifest if r.get("line") == 1} - {None}
    assert len(first_keys) == 2


def test_lines_carry_a_model_and_extra_fields(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text('{"prompt": "fox", "params": {"seed": 3, "style": {"a": 1}}}\n')
    expect_submit(httpx_mock, body("fox", seed=3, style={"a": 1}), ["task_0"])
    expect_done(httpx_mock, "task_0")
    result = run("batch", str(jobs), "-o", str(tmp_path / "out"), "--interval", "0.1")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "fox", "params": {"size": "1:1"}}', 'line 1: The field "size" cannot be'),
        ('{"prompt": "fox", "params": {"model": "x"}}', 'line 1: The field "model" cannot be'),
        ('{"prompt": "fox", "params": [1]}', 'line 1: "params" must be an object'),
        ('{"prompt": "fox", "model": 3}', 'line 1: "model" must be a string'),
    ],
)
def test_bad_extra_fields_exit_2_naming_the_line(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path, line: str, message: str
) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(line + "\n")
    result = run("batch", str(jobs), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert message in result.stderr
    assert api_requests(httpx_mock) == []


def test_another_model_is_checked_against_its_schema_naming_the_line(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    httpx_mock.add_response(
        method="GET",
        url=f"{API}/v1/model-schema?model=m-1",
        json={
            "input_schema": {
                "properties": {"prompt": {"type": "string"}, "n": {"type": "integer", "maximum": 1}}
            }
        },
    )
    jobs = tmp_path / "jobs.txt"
    jobs.write_text('fox\n{"prompt": "fox", "model": "m-1", "n": 2}\n')
    result = run("batch", str(jobs), "-o", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert 'line 2: Field "n" for the model m-1 must be at most 1 (got 2).' in result.stderr
    assert httpx_mock.get_requests(url=SUBMIT_URL) == []


def test_an_unusable_output_folder_exits_2_before_any_upload(
    api: str, httpx_mock: HTTPXMock, jobs: Path, tmp_path: Path
) -> None:
    (tmp_path / "out").write_text("a file where the folder should be")
    result = run("batch", str(jobs), "-o", str(tmp_path / "out"), "--refs", "upload")
    assert result.exit_code == 2, result.output
    assert api_requests(httpx_mock) == []


def test_a_rerun_uploads_nothing_for_jobs_already_done(
    api: str, httpx_mock: HTTPXMock, jobs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expect_upload(httpx_mock)
    for i in range(3):
        expect_submit(httpx_mock, body(f"fox {i}", image_urls=[REF_URL]), [f"task_{i}"])
        expect_done(httpx_mock, f"task_{i}")
    args = (
        "batch",
        str(jobs),
        "-o",
        str(tmp_path / "out"),
        "--refs",
        "upload",
        "--interval",
        "0.1",
    )
    assert run(*args).exit_code == 0
    # Another machine (no remembered uploads) resuming the same folder: nothing to send.
    monkeypatch.setenv("APIMART_DATA_DIR", str(tmp_path / "elsewhere"))
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert len(api_requests(httpx_mock)) == 7  # 1 upload, 3 submissions, 3 polls: no more
