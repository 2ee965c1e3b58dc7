"""The gallery page: who is on it, what it says of each, and how it is written."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from apimart_cli import gallery, provenance
from apimart_cli.history import History
from apimart_cli.sandbox import gradient_png
from tests.helpers.clocks import FakeClock
from tests.helpers.images import write_png


def test_manifest_records_give_done_and_failed_jobs_newest_first(tmp_path: Path) -> None:
    write_png(tmp_path / "one.png")
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
    write_png(folder / "task_x_0.png")
    write_png(folder / "renamed.png")
    write_png(folder / "stranger.png")
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
    path = write_png(tmp_path / "t_0.png")
    provenance.embed_file(path, {"task_id": "t", "prompt": "self-described", "completed": 5})
    entries = gallery.entries_for_folder(tmp_path, provenance=provenance.read_file)
    assert [(e.task_id, e.prompt, e.time) for e in entries] == [("t", "self-described", 5.0)]


def test_the_page_escapes_prompts_and_loads_nothing_but_the_images(tmp_path: Path) -> None:
    write_png(tmp_path / "a b#1.png", 300, 200)
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


def test_the_page_is_made_readable_as_the_umask_says_not_private(tmp_path: Path) -> None:
    from apimart_cli import safefiles

    old = os.umask(0o027)
    safefiles.umask.cache_clear()
    try:
        path = gallery.write(tmp_path, [])
    finally:
        os.umask(old)
        safefiles.umask.cache_clear()
    assert path.stat().st_mode & 0o777 == 0o640


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


# --- a page of any size opens at once -------------------------------------------------------


def test_every_image_loads_lazily_with_its_width_and_height(tmp_path: Path) -> None:
    write_png(tmp_path / "wide.png", 40, 10)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    entries = [
        gallery.Entry("task_a", "fox", ("wide.png", "broken.png"), time=2.0),
        gallery.Entry("task_b", "owl", ("missing.png",), time=1.0),
    ]
    page = gallery.write(tmp_path, entries).read_text("utf-8")
    tags = re.findall(r"<img [^>]*>", page)
    assert len(tags) == 3
    for tag in tags:
        assert 'loading="lazy"' in tag and 'decoding="async"' in tag
        assert re.search(r' width="\d+" height="\d+"', tag)
    assert 'src="wide.png"' in tags[0] and 'width="40" height="10"' in tags[0]


def test_the_summary_counts_videos_apart_from_images(tmp_path: Path) -> None:
    waves = [gallery.Entry("task_v", "waves", ("task_v_0.mp4",), cost=0.4)]
    both = [*waves, gallery.Entry("task_a", "fox", ("task_a_0.png", "task_a_1.png"))]

    assert "<p>1 video · cost 0.4</p>" in gallery.write(tmp_path, waves).read_text("utf-8")
    page = gallery.write(tmp_path, both).read_text("utf-8")
    assert "<p>2 images · 1 video · cost 0.4</p>" in page
    assert '<video controls preload="metadata" src="task_v_0.mp4"' in page


def test_the_history_is_read_with_a_bound(tmp_path: Path) -> None:
    write_png(tmp_path / "task_x_0.png")

    class Recording:
        def __init__(self) -> None:
            self.limits: list[int | None] = []

        def list(self, *, limit: int | None = None) -> list[object]:
            self.limits.append(limit)
            return []

        def get(self, task_id: str) -> None:
            return None

    history = Recording()
    gallery.build(tmp_path, history)  # type: ignore[arg-type]
    assert history.limits == [gallery.HISTORY_ROWS]


# --- stored values of any shape --------------------------------------------------------------


def test_hostile_stored_values_make_a_page_not_a_crash(tmp_path: Path) -> None:
    write_png(tmp_path / "one.png")
    (tmp_path / "\udcff odd.png").write_bytes(gradient_png(4, 4, "x", 0))  # undecodable name
    records = [
        {"state": "completed", "files": 5, "fields": "size", "prompt": ["a", "list"]},
        {"state": "completed", "files": ["one.png", 7], "cost": 10**400, "time": 1e300},
        {"state": "failed", "error": {"nested": True}, "time": float("nan"), "cost": "free"},
        {"state": "completed", "files": ["\udcff odd.png"], "prompt": "lone \ud800 surrogate"},
        {"state": 3, "task_id": ["x"], "submitted_at": -1e20},
        "not even a record",
    ]
    entries = gallery.entries_for_folder(tmp_path, manifest=records)  # type: ignore[arg-type]
    page = gallery.write(tmp_path, entries).read_text("utf-8")
    assert "one.png" in page and "%FF%20odd.png" in page
    live = [gallery.from_manifest_record(r, live=True) for r in records if isinstance(r, dict)]
    gallery.write(tmp_path, [e for e in live if e], live=True)


# --- a batch's page, from its start to its end ----------------------------------------------


def test_the_keeper_writes_a_live_page_at_most_every_interval_then_a_still_one(
    tmp_path: Path,
) -> None:
    clock = FakeClock(0.0)
    keeper = gallery.Keeper(tmp_path, warn=print, every=1.0, clock=clock)
    states = ["queued", "queued"]
    saved: list[list[str]] = [[], []]
    asked: list[int] = []

    def records() -> list[dict[str, object]]:
        asked.append(1)
        return [
            {"line": i, "state": state, "prompt": f"job {i}", "files": files}
            for i, (state, files) in enumerate(zip(states, saved, strict=True))
        ]

    page = tmp_path / "index.html"
    keeper.update(records)  # the batch's start: every job, none sent yet
    keeper.settle()
    first = page.read_text()
    assert '<meta http-equiv="refresh"' in first and first.count(">queued<") == 2
    states[0] = "processing"
    clock.time = 0.5
    keeper.update(records)  # too soon: not written, and the records not even gathered
    keeper.settle()
    assert page.read_text() == first and len(asked) == 1
    clock.time = 1.2
    keeper.update(records)
    keeper.settle()
    assert ">processing<" in page.read_text() and "2 on the way" in page.read_text()
    states[:] = ["completed", "failed"]
    saved[0] = ["job0.png"]
    write_png(tmp_path / "job0.png")
    keeper.close(records)  # at once, however soon
    last = page.read_text()
    assert "refresh" not in last and "on the way" not in last and "1 failed" in last


def test_a_batch_page_exists_from_the_start_shows_jobs_in_flight_and_stops_reloading(
    tmp_path: Path,
) -> None:
    from apimart_cli.batch import AimdLimiter, BatchOptions, parse_jobs, run_batch
    from apimart_cli.client import Client
    from apimart_cli.deadline import Deadline
    from apimart_cli.progress import PlainBatchDisplay
    from apimart_cli.sandbox import Sandbox, SandboxConfig

    pages: list[tuple[bool, list[str]]] = []

    class Watching(gallery.Keeper):
        def _write(self, records: Iterable[Mapping[str, Any]], *, live: bool) -> None:
            jobs = list(records)
            pages.append((live, [str(r["state"]) for r in jobs]))
            super()._write(jobs, live=live)

    out = tmp_path / "out"
    jobs = parse_jobs(["a fox", "an owl", "a hare"], tmp_path, "jobs.txt")
    keeper = Watching(out, warn=print, every=0.0)
    with Sandbox(SandboxConfig(duration=0.3)) as sandbox:
        client = Client(sandbox.base_url, "sk-test", deadline=Deadline.after(30))
        options = BatchOptions(output=out, interval=0.05, timeout=30)
        code = run_batch(
            jobs,
            client,
            AimdLimiter(4),
            options,
            lambda: History(tmp_path / "history.sqlite3"),
            gallery=keeper,
            display=PlainBatchDisplay(),
        ).code
    assert code == 0
    assert pages[0] == (True, ["queued", "queued", "queued"])  # before anything was sent
    in_flight = {"submitting", "submitted", "processing", "pending"}
    assert any(live and in_flight & set(states) for live, states in pages)
    assert pages[-1] == (False, ["completed"] * 3)
    final = (out / "index.html").read_text()
    assert "refresh" not in final and final.count("<img ") == 3


def test_the_batch_never_waits_for_its_live_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    release, writing = threading.Event(), threading.Event()
    real_write = gallery.write

    def slow_write(*args: Any, **kwargs: Any) -> Path:
        writing.set()
        release.wait()
        return real_write(*args, **kwargs)

    monkeypatch.setattr(gallery, "write", slow_write)
    keeper = gallery.Keeper(tmp_path, warn=print, every=0.0)
    records = [{"state": "processing", "prompt": "a fox"}]
    keeper.update(lambda: records)  # returns while the page is still being written
    assert writing.wait(10)
    assert not (tmp_path / "index.html").exists()
    release.set()
    keeper.close(lambda: [{"state": "failed", "prompt": "a fox", "error": "no"}])
    assert "1 failed" in (tmp_path / "index.html").read_text()


# -- a page the tool did not make ------------------------------------------------------------


def test_a_page_the_tool_did_not_make_is_never_replaced(tmp_path: Path) -> None:
    # `-o .` in a web project, or `apimart gallery site/`: the folder's own index.html
    # stays as it is; `gallery` says so (exit 2) and writes nothing.
    from apimart_cli.errors import ExitCode, UsageError

    own = tmp_path / "index.html"
    own.write_text("<h1>my own site</h1>\n")
    write_png(tmp_path / "task_01K_0.png")
    with pytest.raises(gallery.ForeignPage):
        gallery.write(tmp_path, [])
    with pytest.raises(UsageError) as caught:
        gallery.build(tmp_path, None)
    assert caught.value.exit_code == ExitCode.USAGE
    assert f"{own} is a page apimart did not make" in caught.value.message
    assert own.read_text() == "<h1>my own site</h1>\n"
    assert sorted(os.listdir(tmp_path)) == ["index.html", "task_01K_0.png"]


def test_a_page_the_tool_made_is_replaced_whichever_version_made_it(tmp_path: Path) -> None:
    ours = gallery.write(tmp_path, [])
    assert 'name="generator" content="apimart"' in ours.read_text()
    gallery.write(tmp_path, [])  # its own page, again
    # A page from before the mark in its head: known by its footer.
    old = re.sub(r'<meta name="generator"[^>]*>', "", ours.read_text())
    ours.write_text(old.replace("<main>", "<main>" + " " * 10_000))  # a page of many images
    gallery.write(tmp_path, [])
    assert 'name="generator" content="apimart"' in ours.read_text()


def test_a_batch_keeps_a_page_it_did_not_make_and_says_so_once(tmp_path: Path) -> None:
    own = tmp_path / "index.html"
    own.write_text("<h1>my own site</h1>\n")
    warned: list[str] = []
    keeper = gallery.Keeper(tmp_path, warn=warned.append, every=1.0, clock=FakeClock(0.0))
    records = [{"line": 1, "state": "queued", "prompt": "a fox", "files": []}]
    keeper.update(lambda: records)
    keeper.settle()
    keeper.close(lambda: records)
    assert own.read_text() == "<h1>my own site</h1>\n"
    assert len(warned) == 1 and "is a page apimart did not make" in warned[0]


def test_a_folder_at_the_page_name_is_named_and_no_name_reaches_the_terminal_raw(
    tmp_path: Path,
) -> None:
    from apimart_cli.errors import UsageError

    folder = tmp_path / "e\x1b]0;title\x07\x1b[31mred\nsecond line"
    (folder / "index.html").mkdir(parents=True)
    messages = []
    for where in (folder, folder / "missing"):
        with pytest.raises(UsageError) as caught:
            gallery.build(where, None)
        messages.append(caught.value.message)
    assert "index.html is a folder" in messages[0]
    for message in messages:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in message), message


def test_a_link_in_a_loop_or_leading_nowhere_is_no_image_and_no_crash(tmp_path: Path) -> None:
    from apimart_cli.gallery.gather import images_in

    (tmp_path / "loop.png").symlink_to("loop.png")  # ELOOP when followed
    (tmp_path / "gone.png").symlink_to("nowhere.png")
    (tmp_path / "task_01_0.png").write_bytes(b"png")
    assert images_in(tmp_path) == ["task_01_0.png"]
