"""What `wait`, `generate --wait` and `download` add for people: provenance, the summary line."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_httpx import HTTPXMock

from apimart_cli import __version__, provenance

from .conftest import (
    IMAGES,
    KEY,
    PNG,
    as_served,
    body,
    expect_image,
    expect_submit,
    expect_task,
    run,
    task,
)

FAST = ("--interval", "0.1")


def test_generate_wait_stores_the_prompt_and_fields_in_the_png(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    sent = body("a red fox", n=1, size="16:9", resolution="2k")
    expect_submit(httpx_mock, sent, ["task_01"])
    done = task(
        "task_01", urls=[f"{IMAGES}/a.png"], created=1776748674, completed=1776748726, cost=0.05
    )
    expect_task(httpx_mock, done)
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run(
        "generate", "a red fox", "-n", "1", "-s", "16:9", "-r", "2k", "--wait", "-o", "out", *FAST
    )

    assert result.exit_code == 0, result.output
    image = tmp_path / "out" / "task_01_0.png"
    assert as_served(image) == PNG  # only the chunk was added
    assert provenance.read_file(image) == {
        "task_id": "task_01",
        "prompt": "a red fox",
        "model": "gpt-image-2",
        "size": "16:9",
        "resolution": "2k",
        "n": 1,
        "params": {},
        "references": [],
        "created": 1776748674,
        "completed": 1776748726,
        "cost": 0.05,
        "version": __version__,
    }
    assert result.stderr.endswith("1 image saved, 0 tasks failed, cost 0.05.\n")


def test_no_metadata_keeps_the_served_bytes_exactly(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, task("task_01", urls=[f"{IMAGES}/a.png"]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", "--no-metadata", *FAST)

    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "task_01_0.png").read_bytes() == PNG


def test_download_stamps_too_and_a_jpeg_is_left_as_served(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 60 + b"\xff\xd9"
    expect_task(httpx_mock, task("task_01", urls=[f"{IMAGES}/a.png", f"{IMAGES}/b.jpg"]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")
    httpx_mock.add_response(
        url=f"{IMAGES}/b.jpg", content=jpeg, headers={"content-type": "image/jpeg"}
    )

    result = run("download", "task_01", "-o", "out")

    assert result.exit_code == 0, result.output
    stored = provenance.read_file(tmp_path / "out" / "task_01_0.png")
    assert stored is not None and stored["task_id"] == "task_01" and stored["prompt"] is None
    assert (tmp_path / "out" / "task_01_1.jpg").read_bytes() == jpeg
    assert result.stderr.endswith("2 images saved, 0 tasks failed.\n")  # no cost was reported


def test_the_key_never_reaches_the_png_even_when_the_server_echoes_it(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    sent = body(f"a fox called {KEY}")
    expect_submit(httpx_mock, sent, ["task_01"])
    expect_task(httpx_mock, task("task_01", urls=[f"{IMAGES}/a.png"], cost=0.01))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("generate", f"a fox called {KEY}", "--wait", "-o", "out", *FAST)

    assert result.exit_code == 0, result.output
    data = (tmp_path / "out" / "task_01_0.png").read_bytes()
    assert KEY.encode() not in data
    stored = provenance.read_file(tmp_path / "out" / "task_01_0.png")
    assert stored is not None and stored["prompt"] == "a fox called [API key]"


def test_summary_counts_failures_and_cost_and_quiet_silences_it(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_task(httpx_mock, task("task_01", urls=[f"{IMAGES}/a.png"], cost=0.05))
    expect_task(httpx_mock, task("task_02", "failed", cost=0.0, error={"message": "refused"}))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "task_02", "-o", "out", *FAST)

    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == "1 image saved, 1 task failed, cost 0.05."

    expect_task(httpx_mock, task("task_01", urls=[f"{IMAGES}/a.png"], cost=0.05))
    expect_image(httpx_mock, f"{IMAGES}/a.png")
    quiet = run("-q", "wait", "task_01", "-o", "again", *FAST)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr == ""


def test_json_objects_carry_the_cost(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", urls=[f"{IMAGES}/a.png"], cost=0.05))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("wait", "task_01", "-o", "out", "--json", *FAST)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cost"] == 0.05


def test_preview_off_a_terminal_says_why_once_with_verbose(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", urls=[f"{IMAGES}/a.png", f"{IMAGES}/b.png"]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")
    expect_image(httpx_mock, f"{IMAGES}/b.png")

    result = run("-v", "wait", "task_01", "-o", "out", "--preview", *FAST)

    assert result.exit_code == 0, result.output
    assert result.stderr.count("No inline preview: standard error is not a terminal.") == 1
    assert "\x1b" not in result.stderr + result.stdout


def test_the_image_options_without_wait_are_named_as_ignored(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_submit(httpx_mock, body("a red fox"), ["task_01"])

    result = run("generate", "a red fox", "--open", "--no-metadata")

    assert result.exit_code == 0, result.output
    assert result.stdout == "task_01\n"
    assert result.stderr == "Note: --open, --no-metadata only apply with --wait; ignored.\n"
