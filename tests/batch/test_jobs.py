"""batch.jobs: the jobs file, line by line, and the names of the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apimart_cli.batch import (
    MAX_REPORTED,
    check_names,
    format_name,
    move_into_place,
    slugify,
)
from apimart_cli.constants import DEFAULT_BATCH_NAME as DEFAULT_NAME
from apimart_cli.errors import UsageError

from .conftest import PNG, bad_lines, parse

# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        ("a red fox", {}),
        ("  a red fox  ", {}),
        ('{"prompt": "a red fox"}', {}),
        ('{"prompt": "a red fox", "size": "16:9", "resolution": "2k", "n": 2}',
         {"n": 2, "size": "16:9", "resolution": "2k"}),
        ('{"prompt": "a red fox", "official_fallback": true}', {"official_fallback": True}),
        ('{"prompt": "a red fox", "size": null}', {}),
        ('{"prompt": "a red fox", "images": ["https://example.com/a.png"]}',
         {"image_urls": ["https://example.com/a.png"]}),
    ],
)  # fmt: skip
def test_a_good_line_becomes_a_checked_request(line: str, fields: dict[str, Any]) -> None:
    [job] = parse(line)
    assert job.line == 1
    assert job.request.prompt == "a red fox"
    assert job.request.fields() == fields


def test_blank_lines_and_comments_are_skipped_but_counted() -> None:
    jobs = parse("# prompts\n\nfirst\n   \n  # indented comment\nsecond\n")
    assert [(job.line, job.request.prompt) for job in jobs] == [(3, "first"), (6, "second")]


def test_a_job_is_its_text_and_which_copy_of_that_text_it_is() -> None:
    first, same, other = parse("a fox\na fox\nan owl")
    assert (first.line, same.line, other.line) == (1, 2, 3)
    assert first.digest == same.digest != other.digest
    assert (first.occurrence, same.occurrence, other.occurrence) == (1, 2, 1)
    assert len({first.identity, same.identity, other.identity}) == 3


def test_a_job_keeps_its_identity_when_lines_move() -> None:
    before = parse("a fox\na fox\nan owl")
    after = parse("# moved down\n\nan owl\na fox\n# between\na fox")
    assert sorted(job.identity for job in after) == sorted(job.identity for job in before)
    assert [(job.line, job.request.prompt) for job in after] == [
        (3, "an owl"),
        (4, "a fox"),
        (6, "a fox"),
    ]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "a fox"', "invalid JSON at column"),
        ('{"prompt": "a fox"} {"n": 2}', "invalid JSON at column 21: Extra data"),
        ('{"prompt": "a fox", "style": "vivid"}', "unknown field 'style'"),
        ('{"size": "16:9"}', 'no "prompt"'),
        ('{"prompt": 3}', '"prompt" must be a string, not 3'),
        ('{"prompt": "a fox", "n": "2"}', '"n" must be a whole number, not "2"'),
        ('{"prompt": "a fox", "n": true}', '"n" must be a whole number, not true'),
        ('{"prompt": "a fox", "n": 2.5}', '"n" must be a whole number, not 2.5'),
        ('{"prompt": "a fox", "n": 11}', "Invalid n 11"),
        ('{"prompt": "a fox", "official_fallback": 1}', '"official_fallback" must be true or'),
        ('{"prompt": "a fox", "images": "a.png"}', '"images" must be a list, not "a.png"'),
        ('{"prompt": "a fox", "images": [1]}', '"images" must be a list of strings'),
        ('{"prompt": "a fox", "size": "7:5"}', "Invalid size '7:5'"),
        ('{"prompt": "a fox", "resolution": "8k"}', "8k"),
        ('{"prompt": "   "}', "The prompt is empty"),
        ('{"prompt": "a fox", "images": ["missing.png"]}', "Reference image not found"),
    ],
)
def test_a_bad_line_is_named_with_its_problem(line: str, problem: str) -> None:
    message = bad_lines(f"a good line\n{line}\n")
    assert "line 2: " in message and problem in message
    assert "line 1" not in message


def test_every_bad_line_is_reported_not_only_the_first() -> None:
    message = bad_lines('{"prompt": 1}\nfine\n{"prompt": "x", "n": "3"}\n{oops\n')
    assert message.startswith("3 bad line(s) in jobs.txt; nothing was sent.")
    assert [line.split(":")[0].strip() for line in message.splitlines()[1:]] == [
        "line 1", "line 3", "line 4"
    ]  # fmt: skip


def test_at_most_twenty_bad_lines_are_listed() -> None:
    message = bad_lines("\n".join(['{"prompt": 1}'] * 25))
    assert message.count("must be a string") == MAX_REPORTED
    assert message.endswith("... and 5 more")


def test_no_jobs_at_all_is_an_error() -> None:
    assert "No jobs in jobs.txt" in bad_lines("# only a comment\n\n")


def test_relative_images_are_found_beside_the_batch_file(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    (folder / "ref.png").write_bytes(PNG)
    [job] = parse('{"prompt": "a fox", "images": ["ref.png"]}', folder)
    [reference] = job.request.references
    assert reference.path == folder / "ref.png"
    assert "Reference image not found" in bad_lines(
        '{"prompt": "a fox", "images": ["ref.png"]}', tmp_path
    )


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A red fox, in the snow!", "a-red-fox-in-the-snow"),
        ("Crème brûlée", "creme-brulee"),
        ("../../etc/passwd", "etc-passwd"),
        ("一只红狐狸", "image"),
        ("x" * 60, "x" * 40),
        ("word " * 20, "word-word-word-word-word-word-word-word"),
    ],
)
def test_slug(prompt: str, slug: str) -> None:
    assert slugify(prompt) == slug


def test_names_fill_the_placeholders() -> None:
    name = format_name(
        "{line:03d}-{slug}-{index}-{task_id}", task_id="task_1", index=2, line=7, slug="fox"
    )
    assert name == "007-fox-2-task_1"
    assert format_name(DEFAULT_NAME, task_id="task_1", index=0, line=1, slug="x") == "task_1_0"


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("", "could leave the folder"),
        ("../{slug}", "could leave the folder"),
        ("{slug}/{index}", "could leave the folder"),
        ("a\\{index}", "could leave the folder"),
        (".{index}", "could leave the folder"),
        ("{index:.>3}", "could leave the folder"),
        ("{prompt}", "Unknown placeholder {prompt}"),
        ("{}", "Unknown placeholder {}"),
        ("{slug", "Invalid --name"),
        ("{slug:d}", "Invalid --name"),
    ],
)
def test_bad_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(UsageError) as caught:
        format_name(template, task_id="task_1", index=0, line=1, slug="fox")
    assert problem in caught.value.message


PIECES = ["{slug}", "{index}", "{line}", "{task_id}", "{index:.>3}", "{slug:/^9}", "{line:03d}",
          ".", "/", "\\", "-", "_", "a", "{", "}", ":", ">", "5"]  # fmt: skip


@given(
    template=st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
    prompt=st.text(max_size=80),
    index=st.integers(0, 9),
    line=st.integers(1, 10**6),
)
def test_a_formatted_name_never_leaves_the_folder(
    template: str, prompt: str, index: int, line: int
) -> None:
    try:
        name = format_name(template, task_id="task_01KABC", index=index, line=line,
                           slug=slugify(prompt))  # fmt: skip
    except UsageError:
        return
    assert name and "/" not in name and "\\" not in name and ".." not in name
    assert not name.startswith(".")


def test_names_that_would_collide_are_refused_before_sending() -> None:
    jobs = parse('a fox\na fox\n{"prompt": "an owl", "n": 2}')
    check_names("{line}-{slug}-{index}", jobs)
    check_names("{task_id}_{index}", jobs)
    for template, lines in [("{slug}-{index}", "line 1 and 2"), ("{line}", "line 3")]:
        with pytest.raises(UsageError) as caught:
            check_names(template, jobs)
        assert lines in caught.value.message


@pytest.mark.parametrize("template", ["{task_id:>80}{index}", "{task_id:^60}_{index}"])
def test_a_width_that_pads_a_shorter_id_is_refused_before_sending(template: str) -> None:
    """The longest id fills any width that fits, so a width is tried on a short id too:
    the service's ids are shorter than 128, and padding one with spaces is no name."""
    with pytest.raises(UsageError) as caught:
        check_names(template, parse("a fox"))
    assert "not a plain file name" in caught.value.message
    check_names("{task_id:_>80}{index}", parse("a fox"))  # padding that names can hold


def test_move_into_place_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    source, target = tmp_path / "task_1_0.png", tmp_path / "fox.png"
    source.write_bytes(b"new")
    assert move_into_place(source, target, force=False)
    assert target.read_bytes() == b"new" and not source.exists()
    source.write_bytes(b"newer")
    assert not move_into_place(source, target, force=False)
    assert target.read_bytes() == b"new" and not source.exists()
    source.write_bytes(b"newest")
    assert move_into_place(source, target, force=True)
    assert target.read_bytes() == b"newest" and not source.exists()
