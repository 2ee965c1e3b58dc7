"""`apimart inspect`: the provenance saved in images, for people and as JSON."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from apimart_cli import provenance
from apimart_cli.images import png_chunk
from tests.cli.conftest import PNG, run

STORED = {
    "task_id": "task_01",
    "prompt": "a red  fox\nin snow",
    "model": "gpt-image-2",
    "size": "16:9",
    "resolution": "2k",
    "n": 1,
    "params": {"seed": 42},
    "references": ["cat.png"],
    "created": 1776748674,
    "completed": 1776748726,
    "cost": 0.05279,
    "version": "1.0.0",
}


def marked(path: Path, stored: dict[str, object] = STORED) -> Path:
    path.write_bytes(provenance.embed(PNG, stored))
    return path


def test_plain_output_is_readable_lines(tmp_path: Path) -> None:
    image = marked(tmp_path / "a.png")
    result = run("inspect", str(image))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"{image}\n"
        "  prompt      a red fox in snow\n"
        "  model       gpt-image-2\n"
        "  task        task_01\n"
        "  size        16:9\n"
        "  resolution  2k\n"
        "  n           1\n"
        "  params      seed=42\n"
        "  references  cat.png\n"
        "  created     2026-04-21 05:17:54 UTC\n"
        "  completed   2026-04-21 05:18:46 UTC\n"
        "  cost        0.05279\n"
        "  made by     apimart 1.0.0\n"
    )
    assert result.stderr == ""


def test_json_is_the_stored_object_one_per_line(tmp_path: Path) -> None:
    first = marked(tmp_path / "a.png")
    second = marked(tmp_path / "b.png", {"task_id": "task_02", "prompt": "b"})
    result = run("inspect", "--json", str(first), str(second))
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        STORED,
        {"task_id": "task_02", "prompt": "b"},
    ]


def test_an_image_without_provenance_exits_1_and_the_others_still_show(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    plain.write_bytes(PNG)
    jpeg = tmp_path / "photo.jpg"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0 not a png")
    good = marked(tmp_path / "good.png")
    result = run("inspect", "--json", str(plain), str(good), str(jpeg))
    assert result.exit_code == 1
    assert [json.loads(line) for line in result.stdout.splitlines()] == [STORED]
    assert f"Error: {plain} has no apimart provenance." in result.stderr
    assert f"Error: {jpeg} has no apimart provenance." in result.stderr


def test_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = run("inspect", str(tmp_path / "nope.png"))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: No such file: {tmp_path / 'nope.png'}")


# -- hostile files -----------------------------------------------------------------------


def with_chunk(path: Path, data: bytes, *, length: int | None = None) -> Path:
    """PNG with one more iTXt chunk after IHDR, its length field as given (a lie, maybe)."""
    chunk = png_chunk(b"iTXt", data)
    if length is not None:
        chunk = struct.pack(">I", length) + chunk[4:]
    path.write_bytes(PNG[:33] + chunk + PNG[33:])
    return path


def test_a_chunk_that_inflates_past_the_limit_is_refused_not_inflated(tmp_path: Path) -> None:
    text = b'{"prompt": "' + b"a" * (64 * 1024 * 1024) + b'"}'  # 64 MiB in about 64 KiB
    bomb = with_chunk(
        tmp_path / "bomb.png", b"apimart\x00\x01\x00\x00\x00" + zlib.compress(text, 9)
    )
    assert bomb.stat().st_size < 200_000

    result = run("inspect", str(bomb))

    assert result.exit_code == 2
    assert result.stdout == ""
    assert "provenance chunk larger than 1 MiB" in result.stderr
    gallery = run("gallery", str(tmp_path))
    assert gallery.exit_code == 0, gallery.stderr


def test_a_chunk_length_past_the_end_of_the_file_is_no_crash(tmp_path: Path) -> None:
    mine = with_chunk(tmp_path / "mine.png", b"apimart\x00\x00\x00\x00\x00{}", length=0xFFFFFFF0)
    other = with_chunk(tmp_path / "other.png", b"Comment\x00\x00\x00\x00\x00x", length=0xFFFFFFF0)

    refused = run("inspect", str(mine))
    absent = run("inspect", str(other))

    assert refused.exit_code == 2 and "larger than 1 MiB" in refused.stderr
    assert absent.exit_code == 1 and "has no apimart provenance" in absent.stderr


HOSTILE = {
    "task_id": ["not", "text"],
    "prompt": (
        "a fox \x1b]0;owned\x07 \x1b]8;;https://evil.test\x1b\\click\x1b]8;;\x1b\\ \x9b2J\x1b[2J"
    ),
    "model": 5,
    "n": "many",
    "params": {"seed": float("nan")},
    "references": 5,
    "created": 1e300,
    "completed": float("nan"),
    "cost": float("inf"),
    "version": {"x": 1},
    "extra\x1b[31m": "red\x1b[0m",
}


def test_hostile_values_are_left_out_and_nothing_drives_the_terminal(tmp_path: Path) -> None:
    image = tmp_path / "hostile.png"
    text = json.dumps(HOSTILE).encode()  # NaN and Infinity, as Python writes them
    with_chunk(image, b"apimart\x00\x00\x00\x00\x00" + text)

    plain = run("inspect", str(image))
    as_json = run("inspect", "--json", str(image))

    assert plain.exit_code == 0, plain.stderr
    assert as_json.exit_code == 0, as_json.stderr
    for output in (plain.stdout, as_json.stdout):
        assert not any(ch in output for ch in "\x1b\x07\x9b")
    assert (
        "  prompt      a fox ?]0;owned? ?]8;;https://evil.test?\\click?]8;;?\\ ?2J?[2J\n"
        in plain.stdout
    )
    assert json.loads(as_json.stdout) == {
        "prompt": HOSTILE["prompt"],
        "extra\x1b[31m": "red\x1b[0m",
    }
    gallery = run("gallery", str(tmp_path))
    assert gallery.exit_code == 0, gallery.stderr


@pytest.mark.parametrize("depth", [40, 5_000, 100_000])
def test_provenance_nested_too_deep_is_none_read(tmp_path: Path, depth: int) -> None:
    image = tmp_path / "deep.png"
    text = b'{"prompt": "p", "params": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    with_chunk(image, b"apimart\x00\x00\x00\x00\x00" + text)

    result = run("inspect", str(image))

    assert result.exit_code == 1
    assert "has no apimart provenance" in result.stderr
    assert run("gallery", str(tmp_path)).exit_code == 0


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "a.png"
    os.mkfifo(fifo)

    result = run("inspect", str(fifo))

    assert result.exit_code == 2
    assert f"Error: {fifo} is not a regular file." in result.stderr


def test_a_file_name_with_escapes_is_named_without_them(tmp_path: Path) -> None:
    plain = tmp_path / "a\x1b]0;owned\x07.png"
    plain.write_bytes(PNG)
    marked(tmp_path / "b\x1b[2J.png")

    result = run("inspect", str(plain), str(tmp_path / "b\x1b[2J.png"))

    assert result.exit_code == 1
    assert "a?]0;owned?.png has no apimart provenance." in result.stderr
    assert "b?[2J.png\n" in result.stdout
    assert not any(ch in result.stdout + result.stderr for ch in "\x1b\x07")


def test_a_video_whose_name_holds_escapes_is_named_without_them(tmp_path: Path) -> None:
    from apimart_cli.sandbox.videos import mp4_video

    video = tmp_path / "v\x1b]0;owned\x07.mp4"
    video.write_bytes(mp4_video(64, 64, 1, "waves"))

    result = run("inspect", str(video))

    assert result.exit_code == 1
    assert "v?]0;owned?.mp4 is a video" in result.stderr
    assert not any(ch in result.stdout + result.stderr for ch in "\x1b\x07")


def test_json_ends_with_one_error_object_like_every_command(tmp_path: Path) -> None:
    plain = tmp_path / "plain.png"
    plain.write_bytes(PNG)
    result = run("inspect", "--json", str(plain))
    assert result.exit_code == 1
    error = json.loads(result.stderr.splitlines()[-1])["error"]
    assert error["exit_code"] == 1 and str(plain) in error["message"]

    good = marked(tmp_path / "good.png")
    result = run("inspect", "--json", str(plain), str(good), str(tmp_path / "nope.png"))
    assert result.exit_code == 2
    error = json.loads(result.stderr.splitlines()[-1])["error"]
    assert error == {
        "message": "2 of 3 images could not be read.",
        "exit_code": 2,
        "retryable": False,
    }
