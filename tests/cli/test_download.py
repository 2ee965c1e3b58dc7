"""`apimart download`: save completed tasks' images; refuse unfinished and expired ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from .conftest import (
    IMAGES,
    PNG,
    as_served,
    assert_images_fetched_without_key,
    expect_image,
    expect_task,
    png,
    run,
    saved,
    task,
)

OUT = Path("out")
EXPIRED_AT = 1_776_835_126  # 2026-04-22 05:18:46 UTC


def test_a_completed_task_is_saved(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"], [f"{IMAGES}/b.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")
    expect_image(httpx_mock, f"{IMAGES}/b.png", png(5, 5))

    result = run("download", "task_01", "-o", "out")

    assert result.exit_code == 0, result.output
    assert sorted(result.stdout.splitlines()) == [
        str(OUT / "task_01_0.png"),
        str(OUT / "task_01_1.png"),
    ]
    assert saved(tmp_path / "out") == ["task_01_0.png", "task_01_1.png"]
    assert as_served(tmp_path / "out" / "task_01_1.png") == png(5, 5)
    assert_images_fetched_without_key(httpx_mock, 2)


def test_the_extension_comes_from_the_content_type(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 60
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    httpx_mock.add_response(
        url=f"{IMAGES}/a.png", content=jpeg, headers={"Content-Type": "image/jpeg"}
    )

    result = run("download", "task_01", "-o", "out")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{OUT / 'task_01_0.jpg'}\n"
    assert (tmp_path / "out" / "task_01_0.jpg").read_bytes() == jpeg


def test_output_folder_from_the_environment(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_OUTPUT_DIR", str(tmp_path / "pictures"))
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("download", "task_01")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'pictures' / 'task_01_0.png'}\n"


def test_an_unfinished_task_exits_1_naming_its_state(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, task("task_01", "processing", progress=40))

    result = run("download", "task_01", "-o", "out")

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "task_01: Task task_01 is processing (40%), not completed.\n" in result.stderr
    assert saved(tmp_path / "out") == []
    # Still running is not failed.
    assert result.stderr.endswith("0 images saved, 0 tasks failed, 1 not completed yet.\n")


def test_a_failed_task_exits_1_with_its_reason(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", "failed", error={"message": "content policy"}))

    result = run("download", "task_01")

    assert result.exit_code == 1, result.output
    assert "task_01: failed: content policy\n" in result.stderr


def test_expired_urls_exit_1_with_the_time_they_expired(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]], expires_at=EXPIRED_AT))

    result = run("download", "task_01", "-o", "out")

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert (
        "task_01: The images of task task_01 expired at 2026-04-22 05:18:46 UTC.\n" in result.stderr
    )
    assert result.stderr.endswith(
        "The service no longer serves them; generate the image again.\n"
        "0 images saved, 1 task failed.\n"
    )
    assert_images_fetched_without_key(httpx_mock, 0)
    assert saved(tmp_path / "out") == []


def test_a_completed_task_among_unfinished_ones_is_still_saved(
    api: str, httpx_mock: HTTPXMock
) -> None:
    expect_task(httpx_mock, task("task_01", "processing"))
    expect_task(httpx_mock, task("task_02", urls=[[f"{IMAGES}/b.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/b.png")

    result = run("download", "task_01", "task_02", "-o", "out")

    assert result.exit_code == 1, result.output
    assert result.stdout == f"{OUT / 'task_02_0.png'}\n"


def test_existing_files_are_kept_unless_force(
    api: str, httpx_mock: HTTPXMock, tmp_path: Path
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "task_01_0.png").write_bytes(b"\x89PNG\r\n\x1a\nold")
    completed = task("task_01", urls=[[f"{IMAGES}/a.png"]])
    expect_task(httpx_mock, completed)

    kept = run("download", "task_01", "-o", "out")

    assert kept.exit_code == 0, kept.output
    path = OUT / "task_01_0.png"
    assert kept.stdout == f"{path}\n"
    assert f"task_01: kept the existing {path} (use --force to replace it)\n" in kept.stderr
    assert (tmp_path / "out" / "task_01_0.png").read_bytes() == b"\x89PNG\r\n\x1a\nold"

    expect_task(httpx_mock, completed)
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    forced = run("download", "task_01", "-o", "out", "--force")

    assert forced.exit_code == 0, forced.output
    assert forced.stdout == f"{path}\n"
    assert as_served(tmp_path / "out" / "task_01_0.png") == PNG
    assert saved(tmp_path / "out") == ["task_01_0.png"]


def test_ids_from_stdin(api: str, httpx_mock: HTTPXMock) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    expect_image(httpx_mock, f"{IMAGES}/a.png")

    result = run("download", "-o", "out", input="task_01\n")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{OUT / 'task_01_0.png'}\n"


def test_not_an_image_is_refused(api: str, httpx_mock: HTTPXMock, tmp_path: Path) -> None:
    expect_task(httpx_mock, task("task_01", urls=[[f"{IMAGES}/a.png"]]))
    httpx_mock.add_response(
        url=f"{IMAGES}/a.png", html="<html>expired</html>", headers={"Content-Type": "text/html"}
    )

    result = run("download", "task_01", "-o", "out")

    assert result.exit_code == 5, result.output
    assert result.stdout == ""
    assert f"The image host sent text/html, not an image, for {IMAGES}/a.png." in result.stderr
    assert saved(tmp_path / "out") == []
