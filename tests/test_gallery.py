"""The gallery page: who is on it, what it says of each, and how it is written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from apimart_cli import gallery, provenance
from apimart_cli.history import History
from apimart_cli.sandbox import gradient_png


def png(path: Path, width: int = 32, height: int = 16) -> Path:
    path.write_bytes(gradient_png(width, height, path.name, 0))
    return path


def test_manifest_records_give_done_and_failed_jobs_newest_first(tmp_path: Path) -> None:
    png(tmp_path / "one.png")
    records = [
        {"line": 1, "state": "completed", "prompt": "old fox", "task_id": "task_a",
         "files": ["one.png"], "cost": 0.05, "fields": {"size": "1:1"}, "time": 100.0},
        {"line": 2, "state": "failed", "prompt": "bad", "task_id": "task_b", "files": [],
         "error": "moderation refused it", "time": 200.0},
        {"line": 3, "state": "processing", "prompt": "still going", "task_id": "task_c",
         "files": [], "time": 300.0},
        {"line": 4, "state": "completed", "prompt": "gone", "task_id": "task_d",
         "files": ["deleted.png"], "time": 400.0},
    ]  # fmt: skip
    entries = gallery.entries_for_folder(tmp_path, manifest=records)
    assert [(e.task_id, e.files, e.failed) for e in entries] == [
        ("task_b", (), True),
        ("task_a", ("one.png",), False),
    ]
    assert entries[0].error == "moderation refused it"
    assert entries[1].size == "1:1" and entries[1].cost == 0.05


def test_history_knows_files_by_path_and_by_task_id(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    png(folder / "task_x_0.png")
    png(folder / "renamed.png")
    png(folder / "stranger.png")
    with History(tmp_path / "h.sqlite3") as history:
        for task_id, prompt in (("task_x", "by its name"), ("task_y", "by its path")):
            history.record_submission(
                task_id, base_url="b", prompt=prompt, fields={"size": "2:3"}, idempotency_key="k"
            )
        history.update("task_x", state="completed", cost=0.1)
        history.update("task_y", state="completed", files=[str(folder / "renamed.png")])
        entries = gallery.entries_for_folder(
            folder, history=history.get, history_files=history.list()
        )
    assert sorted((e.task_id, e.prompt, e.files) for e in entries) == [
        ("task_x", "by its name", ("task_x_0.png",)),
        ("task_y", "by its path", ("renamed.png",)),
    ]


def test_an_image_with_provenance_speaks_for_itself(tmp_path: Path) -> None:
    path = png(tmp_path / "t_0.png")
    provenance.embed_file(path, {"task_id": "t", "prompt": "self-described", "completed": 5})
    entries = gallery.entries_for_folder(tmp_path, provenance=provenance.read_file)
    assert [(e.task_id, e.prompt, e.time) for e in entries] == [("t", "self-described", 5.0)]


def test_the_page_escapes_prompts_and_loads_nothing_but_the_images(tmp_path: Path) -> None:
    png(tmp_path / "a b#1.png", 300, 200)
    evil = '<script>alert("x")</script> & <img src=http://evil.example/x.png>'
    entries = [
        gallery.Entry("task_a", evil, ("a b#1.png",), "3:2", "1k", 0.05, 1_700_000_000.0),
        gallery.Entry("task_b", "refused", (), error="moderation: no", state="failed"),
    ]
    page = gallery.write(tmp_path, entries, title="run 7").read_text("utf-8")
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img" in page
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["a%20b%231.png", "a%20b%231.png"]
    assert 'width="300" height="200"' in page
    assert not re.search(r"<link|<iframe|<object|@import|url\((?!\s*['\"]?data:)", page)
    for text in ("3:2", "1k", "task_a", "0.05", "2023-11-14 22:13 UTC", "moderation: no"):
        assert text in page
    assert "2 images" not in page and "1 image · 1 failed · cost 0.05" in page


def test_write_is_atomic_replaces_a_planted_link_and_leaves_no_temp(tmp_path: Path) -> None:
    victim = tmp_path / "victim.html"
    victim.write_text("keep")
    (tmp_path / "index.html").symlink_to(victim)
    path = gallery.write(tmp_path, [])
    assert victim.read_text() == "keep"
    assert not path.is_symlink() and "No images yet" in path.read_text()
    assert sorted(os.listdir(tmp_path)) == ["index.html", "victim.html"]


def test_write_redacts(tmp_path: Path) -> None:
    entries = [gallery.Entry("t", "sk-live-secret-value", ())]
    page = gallery.write(tmp_path, entries, redact=lambda s: s.replace("sk-live-secret-value", "X"))
    assert "sk-live" not in page.read_text()


@pytest.mark.parametrize(
    ("name", "task_id"),
    [("task_01K_0.png", "task_01K"), ("task_01K_12.webp", "task_01K"), ("fox.png", None)],
)
def test_task_id_of(name: str, task_id: str | None) -> None:
    assert gallery.task_id_of(name) == task_id


def test_a_failed_job_shows_its_reason_in_place_of_the_picture(tmp_path: Path) -> None:
    entries = [
        gallery.Entry("task_c", "p", (), error="task task_c failed: too bright", state="failed")
    ]
    page = gallery.write(tmp_path, entries).read_text()
    assert '<div class="missing"><p class="reason">failed: too bright</p></div>' in page
    assert "task task_c failed" not in page
