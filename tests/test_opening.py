"""Opening files as Python's webbrowser does: $BROWSER honoured, no viewer only a note."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import browser_recorder

PROBE = """
import sys
from pathlib import Path
from apimart_cli.opening import open_files
notes = []
count = open_files([Path(p) for p in sys.argv[1:]], note=notes.append)
print("opened", count, file=sys.stderr)
for note in notes:
    print("note:", note, file=sys.stderr)
"""


def run(env: dict[str, str], *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )


def clean_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    keep = {"PYTHONPATH", "HOME", "LANG"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PATH"] = str(empty)  # no xdg-open, no text browser: only what the test gives
    return env


def test_browser_gets_each_file_as_a_file_url_and_stdout_stays_clean(tmp_path: Path) -> None:
    script, log = browser_recorder(tmp_path)
    first, second = tmp_path / "a b.png", tmp_path / "c.png"
    env = {**clean_env(tmp_path), "BROWSER": str(script)}
    result = run(env, first, second)
    assert log.read_text().splitlines() == [first.as_uri(), second.as_uri()]
    assert "a%20b.png" in first.as_uri()
    assert result.stdout == ""  # the viewer's chatter went to standard error
    assert "viewer chatter" in result.stderr and "opened 2" in result.stderr


def test_no_viewer_is_a_note_not_a_failure(tmp_path: Path) -> None:
    result = run(clean_env(tmp_path), tmp_path / "a.png", tmp_path / "b.png")
    assert "opened 0" in result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: No viewer found to open {tmp_path / 'a.png'}; set BROWSER to the program to use."
    ]


def test_a_browser_that_cannot_be_run_is_named(tmp_path: Path) -> None:
    env = {**clean_env(tmp_path), "BROWSER": "/nonexistent"}
    result = run(env, tmp_path / "a.png")
    assert "opened 0" in result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "BROWSER is '/nonexistent'" in notes[0], result.stderr
