"""`apimart gallery`: a page for a folder, from the history; its path printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from apimart_cli.history import History
from tests.cli.conftest import PNG, run


def test_the_page_shows_the_images_the_history_knows(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "task_a_0.png").write_bytes(PNG)
    (folder / "unknown.png").write_bytes(PNG)
    with History.open() as history:
        history.record_submission(
            "task_a", base_url="b", prompt="a <b>bold</b> fox", fields={}, idempotency_key="k"
        )
        history.update("task_a", state="completed", cost=0.25)
    result = run("gallery", str(folder))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{folder / 'index.html'}\n"
    page = (folder / "index.html").read_text()
    assert 'src="task_a_0.png"' in page and "unknown.png" not in page
    assert "a &lt;b&gt;bold&lt;/b&gt; fox" in page and "0.25" in page


def test_the_default_folder_is_the_output_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_OUTPUT_DIR", str(tmp_path / "pics"))
    (tmp_path / "pics").mkdir()
    result = run("gallery")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'pics' / 'index.html'}\n"
    assert "No images in" in result.stderr


def test_a_missing_folder_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result = run("gallery", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: No folder {tmp_path / 'nope'}.")
    assert not (tmp_path / "nope").exists()
