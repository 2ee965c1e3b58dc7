"""What a user sees of the images, the command against the sandbox: provenance and
`inspect`, `--no-metadata`, `--open` with no viewer at all, `--preview` off a terminal,
and those settings from the environment and the config file. What needs a process of
its own (a viewer's output, a real terminal, a real browser) is in
`tests/e2e/test_visual.py`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from apimart_cli import provenance
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart
from tests.helpers.viewers import fresh_viewers


def test_generate_wait_then_inspect(env: dict[str, str], tmp_path: Path) -> None:
    made = apimart(
        "generate", "a lighthouse at dawn", "-s", "16:9", "-n", "2", "--wait", "-o", "out",
        env=env, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    images = made.lines
    assert len(images) == 2
    assert re.fullmatch(
        r"2 images saved, 0 tasks failed, cost [0-9.]+\.", made.stderr.splitlines()[-1]
    )

    shown = apimart("inspect", "--json", *images, env=env, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    stored = [json.loads(line) for line in shown.lines]
    task_id = made.stderr.splitlines()[0]
    for item in stored:
        assert item["task_id"] == task_id
        assert (item["prompt"], item["model"], item["size"], item["n"]) == (
            "a lighthouse at dawn", "gpt-image-2", "16:9", 2,
        )  # fmt: skip
        assert isinstance(item["created"], int) and isinstance(item["completed"], int)
        assert item["cost"] is not None
    for image in images:
        assert API_KEY.encode() not in (tmp_path / image).read_bytes()

    plain = apimart("inspect", images[0], env=env, cwd=tmp_path)
    assert plain.returncode == 0
    assert "  prompt     a lighthouse at dawn" in plain.stdout
    assert f"  task       {task_id}" in plain.stdout


def test_no_metadata_saves_what_was_served_and_inspect_then_exits_1(
    env: dict[str, str], tmp_path: Path
) -> None:
    made = apimart(
        "generate", "a fox", "--wait", "-o", "out", "--no-metadata", env=env, cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    shown = apimart("inspect", made.lines[0], env=env, cwd=tmp_path)
    assert shown.returncode == 1
    assert "has no apimart provenance" in shown.stderr


def test_open_without_any_viewer_is_a_note_not_a_failure(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_viewers(monkeypatch)  # as a new process: no viewer found by an earlier run
    empty = tmp_path / "bin"
    empty.mkdir()
    bare = {k: v for k, v in env.items() if k not in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY")}
    bare["PATH"] = str(empty)  # no xdg-open, no text-mode browser either
    made = apimart("generate", "a fox", "--wait", "-o", "out", "--open", env=bare, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "No viewer found to open" in made.stderr
    assert len(made.lines) == 1


def test_preview_where_the_terminal_speaks_neither_draws_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    made = apimart(
        "-v", "generate", "a fox", "--wait", "-o", "out", "--preview", env=env, cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    assert "No inline preview: standard error is not a terminal." in made.stderr
    assert "\x1b" not in made.stderr


def test_the_metadata_and_preview_settings_come_from_environment_and_config(
    env: dict[str, str], tmp_path: Path
) -> None:
    made = apimart(
        "generate",
        "a fox",
        "--wait",
        "-o",
        "env",
        env={**env, "APIMART_METADATA": "0"},
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert provenance.read_file(tmp_path / made.lines[0]) is None

    config = Path(env["APIMART_CONFIG"])
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("metadata = false\npreview = true\n")
    made = apimart("-v", "generate", "a fox", "--wait", "-o", "file", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert provenance.read_file(tmp_path / made.lines[0]) is None
    assert "No inline preview: standard error is not a terminal." in made.stderr
