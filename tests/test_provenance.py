"""Provenance in PNGs: one iTXt chunk after IHDR, every other byte as served."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pytest

from apimart_cli import images, provenance
from apimart_cli.sandbox import gradient_png

RECORD = {"task_id": "task_1", "prompt": "a fox « ü »", "cost": 0.05}


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """Every chunk's type and data, each CRC checked."""
    assert png.startswith(images.PNG_SIGNATURE)
    found, position = [], 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        data = png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, kind
        found.append((kind, data))
        position += 12 + length
    assert position == len(png)
    return found


def test_the_chunk_goes_right_after_ihdr_and_nothing_else_changes() -> None:
    original = gradient_png(64, 32, "fox", 0)
    marked = provenance.embed(original, RECORD)
    before, after = chunks(original), chunks(marked)
    assert [kind for kind, _ in after] == [b"IHDR", b"iTXt", b"IDAT", b"IEND"]
    assert [c for c in after if c[0] != b"iTXt"] == before
    keyword, _, rest = after[1][1].partition(b"\x00")
    assert keyword == b"apimart"
    assert rest[:4] == b"\x00\x00\x00\x00"  # uncompressed, method 0, no language, no translation
    assert json.loads(rest[4:].decode("utf-8")) == RECORD


def test_read_finds_it_again_and_none_where_there_is_none() -> None:
    original = gradient_png(16, 16, "fox", 0)
    assert provenance.read(io.BytesIO(provenance.embed(original, RECORD))) == RECORD
    assert provenance.read(io.BytesIO(original)) is None


def test_read_understands_a_compressed_itxt() -> None:
    original = gradient_png(16, 16, "fox", 0)
    text = zlib.compress(json.dumps(RECORD).encode())
    marked = original[:33] + images.png_chunk(b"iTXt", b"apimart\x00\x01\x00\x00\x00" + text)
    assert provenance.read(io.BytesIO(marked + original[33:])) == RECORD


def test_other_itxt_chunks_are_not_taken_for_it() -> None:
    original = gradient_png(16, 16, "fox", 0)
    other = images.png_chunk(b"iTXt", b"Comment\x00\x00\x00\x00\x00{}")
    assert provenance.read(io.BytesIO(original[:33] + other + original[33:])) is None


@pytest.mark.parametrize("data", [b"", b"GIF89a", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_not_a_png_is_refused(data: bytes) -> None:
    with pytest.raises(provenance.NotPNG):
        provenance.embed(data, RECORD)
    with pytest.raises(provenance.NotPNG):
        provenance.read(io.BytesIO(data))


def test_embed_file_replaces_the_file_atomically_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / ".task_1_0.part"
    original = gradient_png(40, 20, "fox", 0)
    path.write_bytes(original)
    provenance.embed_file(path, RECORD)
    assert path.read_bytes() == provenance.embed(original, RECORD)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".task_1_0.part"]


def test_embed_file_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(gradient_png(8, 8, "fox", 0))
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "a.png.meta").symlink_to(victim)
    provenance.embed_file(path, RECORD)
    assert victim.read_text() == "keep"
    assert provenance.read_file(path) == RECORD


@pytest.mark.parametrize("mode", [0o600, 0o644, 0o664])
def test_embed_file_keeps_the_images_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(gradient_png(8, 8, "fox", 0))
    path.chmod(mode)
    provenance.embed_file(path, RECORD)
    assert path.stat().st_mode & 0o777 == mode
    assert provenance.read_file(path) == RECORD


def test_a_failed_embed_leaves_the_image_whole_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    path = tmp_path / "a.png"
    original = gradient_png(8, 8, "fox", 0)
    path.write_bytes(original)

    def fail(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="No space"):
        provenance.embed_file(path, RECORD)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_embed_file_leaves_a_file_that_is_not_a_png_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0not a png")
    with pytest.raises(provenance.NotPNG):
        provenance.embed_file(path, RECORD)
    assert path.read_bytes() == b"\xff\xd8\xff\xe0not a png"
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]


def test_redact_applies_to_the_text() -> None:
    marked = provenance.embed(
        gradient_png(8, 8, "f", 0),
        {"prompt": "sk-secret-123456 echoed"},
        redact=lambda text: text.replace("sk-secret-123456", "[API key]"),
    )
    assert b"sk-secret" not in marked
    assert provenance.read(io.BytesIO(marked)) == {"prompt": "[API key] echoed"}


def test_describe_lists_fields_params_and_references_without_data() -> None:
    fields = {
        "size": "16:9",
        "resolution": "2k",
        "n": 2,
        "seed": 42,
        "official_fallback": True,
        "image_urls": [
            "https://example.com/a.png",
            "data:image/png;base64,iVBORw0KGgo…(2048 bytes from /home/me/refs/cat.png)",
            "data:image/jpeg;base64,/9j/4AAQ…(99 bytes)",
        ],
    }
    described = provenance.describe(
        task_id="task_1",
        prompt="a fox",
        model="gpt-image-2",
        fields=fields,
        created=10,
        completed=20,
        cost=0.1,
        version="1.2.3",
    )
    assert described == {
        "task_id": "task_1",
        "prompt": "a fox",
        "model": "gpt-image-2",
        "size": "16:9",
        "resolution": "2k",
        "n": 2,
        "params": {"seed": 42, "official_fallback": True},
        "references": [
            "https://example.com/a.png",
            "cat.png",
            "(a data: URI, image/jpeg, 99 bytes)",
        ],
        "created": 10,
        "completed": 20,
        "cost": 0.1,
        "version": "1.2.3",
    }
    assert "base64" not in json.dumps(described)


def test_stamper_describes_each_task_once_from_its_history_record(tmp_path: Path) -> None:
    from apimart_cli.history import TaskRecord
    from apimart_cli.tasks import parse_task

    asked: list[str] = []

    def lookup(task_id: str) -> TaskRecord | None:
        asked.append(task_id)
        return TaskRecord(
            task_id, 1.0, 2.0, "b", "a fox", {"model": "m-1", "size": "1:1"}, "k",
            "completed", 0.5, (), None,
        )  # fmt: skip

    data = {"id": "task_1", "status": "completed", "created": 5, "completed": 9, "cost": 0.5}
    task = parse_task({"code": 200, "data": data}, "task_1")
    stamper = provenance.Stamper("9.9", lookup=lookup)
    first, second, jpeg = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    first.write_bytes(gradient_png(8, 8, "a", 0))
    second.write_bytes(gradient_png(8, 8, "b", 0))
    jpeg.write_bytes(b"\xff\xd8\xff\xe0 jpeg")
    for path in (first, second, jpeg):
        stamper.step(task)(path)
    assert asked == ["task_1"]
    stored = provenance.read_file(first)
    assert stored == provenance.read_file(second)
    assert stored is not None
    assert (stored["prompt"], stored["model"], stored["size"], stored["created"]) == (
        "a fox",
        "m-1",
        "1:1",
        5,
    )
    assert (stored["completed"], stored["cost"], stored["version"]) == (9, 0.5, "9.9")
    assert jpeg.read_bytes() == b"\xff\xd8\xff\xe0 jpeg"


def test_a_prepared_task_needs_no_lookup(tmp_path: Path) -> None:
    from apimart_cli.history import TaskRecord
    from apimart_cli.tasks import parse_task

    def lookup(task_id: str) -> TaskRecord | None:
        raise AssertionError("prepared: no lookup")

    task = parse_task({"code": 200, "data": {"id": "task_2", "status": "completed"}}, "task_2")
    known = TaskRecord(
        "task_2", 1.0, 2.0, "b", "an owl", {"n": 1}, "k", "completed", None, (), None
    )
    stamper = provenance.Stamper("1", lookup=lookup)
    stamper.prepare(task, known)
    path = tmp_path / "a"
    path.write_bytes(gradient_png(8, 8, "a", 0))
    stamper.step(task)(path)
    stored = provenance.read_file(path)
    assert stored is not None and (stored["prompt"], stored["n"]) == ("an owl", 1)
