"""Uploads, references sent as URLs, the base64 refusal, other models: the command
against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox
from apimart_cli.tasks import parse_submission
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart
from tests.helpers.images import png_size
from tests.helpers.records import direct, posts

MIB = 1024 * 1024


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A real PNG, 48x32."""
    from apimart_cli.sandbox import encode_png

    path = tmp_path / "photo.png"
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 5 % 256, y * 7 % 256, 90)) for x in range(48))
        for y in range(32)
    )
    path.write_bytes(encode_png(48, 32, rows))
    return path


def submissions_image_urls(sandbox: Sandbox) -> list[list[str]]:
    """The image_urls of each submission that made a task."""
    return [list(r.json.get("image_urls", [])) for r in sandbox.submissions()]


def test_upload_prints_a_url_that_serves_the_same_bytes_and_is_remembered(
    sandbox: Sandbox, env: dict[str, str], photo: Path
) -> None:
    first = apimart("upload", str(photo), env=env)
    assert first.returncode == 0, first.stderr
    (url,) = first.lines
    served = direct.get(url)
    assert served.status_code == 200
    assert served.content == photo.read_bytes()
    again = apimart("upload", str(photo), "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["url"] == url
    assert len(sandbox.uploads) == 1  # remembered: not sent again


def test_upload_refuses_a_bad_file_with_nothing_sent(
    sandbox: Sandbox, env: dict[str, str], photo: Path, tmp_path: Path
) -> None:
    (tmp_path / "notes.png").write_text("not really a PNG")
    result = apimart("upload", str(photo), str(tmp_path / "notes.png"), env=env)
    assert result.returncode == 2
    assert "notes.png is not a PNG, JPEG, WebP or GIF image" in result.stderr
    assert sandbox.uploads == []


def test_generate_refs_upload_sends_the_url_and_makes_the_image(
    sandbox: Sandbox, env: dict[str, str], photo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = apimart(
        "generate", "ink it", "-i", str(photo), "--refs", "upload", "-s", "64x64",
        "--wait", "-o", str(out), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (upload,) = sandbox.uploads
    assert submissions_image_urls(sandbox) == [[upload.url]]
    assert png_size(Path(result.lines[0])) == (64, 64)


def test_the_refusing_service_is_answered_by_uploading_and_resending_once(
    sandbox: Sandbox, env: dict[str, str], photo: Path
) -> None:
    sandbox.configure(refuse_base64=True)
    result = apimart("generate", "ink it", "-i", str(photo), env=env)
    assert result.returncode == 0, result.stderr
    assert len(result.lines) == 1
    assert "refused base64 references" in result.stderr
    assert "Later commands upload first" in result.stderr
    (upload,) = sandbox.uploads
    assert upload.data == photo.read_bytes()
    # The refused request created nothing; the one resent carried the URL.
    refused, resent = posts(sandbox)
    assert refused.status == 400 and refused.task_id is None
    assert resent.json["image_urls"] == [upload.url]
    assert submissions_image_urls(sandbox) == [[upload.url]]


def test_a_batch_against_the_refusing_service_uploads_the_shared_reference_once(
    sandbox: Sandbox, env: dict[str, str], photo: Path, tmp_path: Path
) -> None:
    sandbox.configure(refuse_base64=True)
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        "".join(
            json.dumps({"prompt": f"job {i}", "size": "64x64", "images": [str(photo)]}) + "\n"
            for i in range(4)
        )
    )
    result = apimart("batch", str(jobs), "-o", str(tmp_path / "out"), "--interval", "0.2", env=env)
    assert result.returncode == 0, result.stderr
    assert len(result.lines) == 4
    assert len(sandbox.uploads) == 1
    assert result.stderr.count("refused base64 references") == 1
    assert submissions_image_urls(sandbox) == [[sandbox.uploads[0].url]] * 4


def test_batch_refs_upload_sends_each_reference_once(
    sandbox: Sandbox, env: dict[str, str], photo: Path, tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        "".join(
            json.dumps({"prompt": f"job {i}", "size": "64x64", "images": ["photo.png"]}) + "\n"
            for i in range(5)
        )
    )
    result = apimart(
        "batch", str(jobs), "-o", str(tmp_path / "out"), "--refs", "upload", "--interval", "0.2",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (upload,) = sandbox.uploads
    assert submissions_image_urls(sandbox) == [[upload.url]] * 5


def test_models_lists_the_services_models_and_a_schema(
    sandbox: Sandbox, env: dict[str, str]
) -> None:
    listed = apimart("models", env=env)
    assert listed.returncode == 0, listed.stderr
    assert {"gpt-image-2", "gpt-image-2-official"} <= set(listed.lines)
    schema = apimart("models", "gpt-image-2-official", env=env)
    assert schema.returncode == 0, schema.stderr
    assert "quality" in json.loads(schema.stdout)["properties"]


def test_a_second_model_takes_its_extra_field_and_refuses_a_bad_one(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    model = ("--model", "gpt-image-2-official")
    good = apimart(
        "generate", "a glass teapot", *model, "--param", "quality=high", "-s", "1024x1536",
        "--wait", "-o", str(tmp_path / "out"), env=env,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert png_size(Path(good.lines[0])) == (1024, 1536)
    (sent,) = sandbox.submissions()
    assert sent.json["quality"] == "high"
    for args, named in [
        (("--param", "quality=ultra"), '"quality"'),
        (("-n", "5"), '"n"'),
        (("--param", "seed=3"), '"seed"'),
    ]:
        bad = apimart("generate", "a glass teapot", *model, *args, env=env)
        assert bad.returncode == 2, bad.stderr
        assert named in bad.stderr
    assert len(sandbox.submissions()) == 1  # nothing more was sent


def test_the_object_shaped_submit_reply_is_understood(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    """What the sandbox sends the vendor's client (X-APIMart-Response-Version) is a reply
    this tool reads, and the task it made is waited for and saved like any other."""
    reply = direct.post(
        f"{sandbox.base_url}/v1/images/generations",
        json={"model": "gpt-image-2", "prompt": "a fox", "size": "64x64"},
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "X-APIMart-Response-Version": "2026-07-27",
        },
    )
    assert reply.status_code == 200
    assert isinstance(reply.json()["data"], dict)  # the object shape, not the list
    (task_id,) = parse_submission(reply.json())
    result = apimart("wait", task_id, "-o", str(tmp_path / "out"), env=env)
    assert result.returncode == 0, result.stderr
    assert png_size(Path(result.lines[0])) == (64, 64)
