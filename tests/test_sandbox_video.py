"""The sandbox's video model: its schema, its endpoint, its MP4 files, the short fault."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apimart_cli.integrity import flaw
from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from apimart_cli.sandbox.rules import SPEECH_MODEL, VIDEO_MODEL
from tests.helpers.records import direct

AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.0)) as server:
        yield server


def post(sandbox: Sandbox, path: str, body: dict[str, Any]) -> httpx.Response:
    return direct.post(f"{sandbox.base_url}{path}", json=body, headers=AUTH)


def test_the_schema_and_the_list_say_what_each_model_makes(sandbox: Sandbox) -> None:
    schema = direct.get(
        f"{sandbox.base_url}/v1/model-schema", params={"model": VIDEO_MODEL}, headers=AUTH
    ).json()
    assert schema["operation"] == "video_generation"
    assert schema["input_schema"]["properties"]["duration"]["enum"] == [4, 8]
    listed = direct.get(f"{sandbox.base_url}/v1/models", headers=AUTH).json()["data"]
    operations = {entry["id"]: entry["operations"] for entry in listed}
    assert operations[VIDEO_MODEL] == ["video_generation"]
    assert operations[SPEECH_MODEL] == ["speech_generation"]
    assert operations["gpt-image-2"] == ["image_generation"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/v1/images/generations", {"model": VIDEO_MODEL, "prompt": "x"}, "makes video"),
        ("/v1/videos/generations", {"model": "gpt-image-2", "prompt": "x"}, "makes image"),
        ("/v1/videos/generations", {"model": VIDEO_MODEL, "prompt": "x", "duration": 5}, "4, 8"),
        (
            "/v1/videos/generations",
            {"model": VIDEO_MODEL, "prompt": "x", "image_urls": ["data:image/png;base64,AAAA"]},
            "image_requires_upload",
        ),
    ],
)
def test_a_submission_to_the_wrong_endpoint_or_with_inline_media_is_refused(
    sandbox: Sandbox, path: str, body: dict[str, Any], message: str
) -> None:
    reply = post(sandbox, path, body)
    assert reply.status_code == 400
    assert message in reply.json()["error"]["message"]
    assert sandbox.submissions() == []


def test_a_video_task_serves_a_whole_mp4_and_the_short_fault_cuts_it(sandbox: Sandbox) -> None:
    reply = post(sandbox, "/v1/videos/generations", {"model": VIDEO_MODEL, "prompt": "x"})
    task_id = reply.json()["data"][0]["task_id"]
    data = direct.get(f"{sandbox.base_url}/v1/tasks/{task_id}", headers=AUTH).json()["data"]
    (video,) = data["result"]["videos"]
    assert video["duration"] == 4.0 and data["cost"] == 0.4
    whole = direct.get(video["url"][0])
    assert whole.headers["content-type"] == "video/mp4"
    assert flaw(whole.content, to_the_end=True) is None
    sandbox.inject(Fault("short", path="/f/", cut=0.5))
    short = direct.get(video["url"][0])
    assert short.headers["content-length"] == str(len(whole.content) // 2)
    assert short.content == whole.content[: len(whole.content) // 2]
    problem = flaw(short.content, to_the_end=True)
    assert problem is not None and problem.short


def test_the_mp4_holds_one_h264_track_that_starts_with_a_whole_picture() -> None:
    from apimart_cli.sandbox.videos import mp4_video

    video = mp4_video(128, 72, 4, "waves")
    config = video[video.index(b"avcC") + 4 :]
    assert config[:4] == bytes([1, 66, 0xC0, 30])  # version 1, Baseline, level 3.0
    sps_length = int.from_bytes(config[6:8], "big")
    assert config[8] == 0x67 and config[8 + sps_length + 3] == 0x68  # SPS, then PPS
    frames = video[video.index(b"mdat") + 4 :]
    first = int.from_bytes(frames[:4], "big")
    assert frames[4] == 0x65  # an IDR picture
    assert frames[4 + first + 4] == 0x41  # then pictures that repeat it
    assert b"stss" in video and b"\x00\x00\x00\x60" in video  # 96 frames: 4 s at 24
    assert video[video.index(b"mdhd") + 16 : video.index(b"mdhd") + 24] == (
        (24_000).to_bytes(4, "big") + (96_000).to_bytes(4, "big")
    )


def test_a_large_video_is_padded_to_its_size_and_still_whole() -> None:
    from apimart_cli.sandbox.videos import mp4_video

    # Past what one random draw can make (256 MiB): padding of a repeated block.
    video = mp4_video(128, 72, 1, "big", size=300 * 1024 * 1024)
    assert len(video) == 300 * 1024 * 1024
    assert flaw(video, to_the_end=True) is None
