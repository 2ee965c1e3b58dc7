"""The shipped shell completions are current, and work in a real bash."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASH_COMPLETION = ROOT / "completions" / "apimart.bash"


def test_completions_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_completions.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def complete(line: str) -> list[str]:
    """What bash offers for TAB at the end of `line`, using the shipped script."""
    script = (
        f'source "{BASH_COMPLETION}"\n'
        'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()\n'
        "_apimart\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", script, "bash", line], capture_output=True, text=True, check=True
    )
    assert result.stderr == ""
    return [word for word in result.stdout.splitlines() if word]


needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")


@needs_bash
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("apimart ge", ["generate"]),
        ("apimart generate --reso", ["--resolution"]),
        ("apimart generate -r ", ["1k", "2k", "4k"]),
        ("apimart generate --resolution 4", ["4k"]),
        ("apimart --api-key sk-x gen", ["generate"]),
        (
            "apimart config set ",
            ["api_key", "base_url", "output_dir", "references", "metadata", "preview"],
        ),
        ("apimart config g", ["get"]),
        ("apimart generate 'a fox' --si", ["--size"]),
    ],
)
def test_bash_completes(line: str, expected: list[str]) -> None:
    assert complete(line) == expected


@needs_bash
def test_bash_completes_every_size() -> None:
    from apimart_cli.sizes import SIZE_CHOICES

    assert complete("apimart generate --size ") == list(SIZE_CHOICES)
    # bash splits words at ':', so after "16:" only the rest of the value is offered.
    assert complete("apimart generate -s 16:") == ["9"]
    assert complete("apimart generate -s 2") == ["2:3", "2:1", "21:9"]


@pytest.mark.skipif(shutil.which("fish") is None, reason="no fish here")
@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("apimart ge", ["generate"]),
        ("apimart generate --reso", ["--resolution"]),
        ("apimart generate -r ", ["1k", "2k", "4k"]),
        (
            "apimart config set ",
            ["api_key", "base_url", "output_dir", "references", "metadata", "preview"],
        ),
    ],
)
def test_fish_completes(line: str, expected: list[str]) -> None:
    script = f'source {ROOT / "completions" / "apimart.fish"}; complete -C "{line}"'
    result = subprocess.run(["fish", "-c", script], capture_output=True, text=True, check=True)
    assert [row.split("\t")[0] for row in result.stdout.splitlines()] == expected


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n", str(ROOT / "completions" / "_apimart")], check=True)
