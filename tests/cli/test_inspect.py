"""`apimart inspect`: the provenance saved in images, for people and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from apimart_cli import provenance
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
