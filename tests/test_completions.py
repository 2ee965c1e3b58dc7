"""The shipped shell completions are current, and work in a real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apimart_cli.commands.history import STATES
from tests.helpers.terminal import Terminal

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
    # fish sorts what it offers
    assert [row.split("\t")[0] for row in result.stdout.splitlines()] == sorted(expected)


@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_script_parses() -> None:
    subprocess.run(["zsh", "-n", str(ROOT / "completions" / "_apimart")], check=True)


# -- files where files go, states, models; installed where each shell loads them --------------


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user's home with a folder of images, and the models `apimart models` last listed."""
    (tmp_path / "work").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "work" / name).write_bytes(b"")
    (tmp_path / "work" / "out").mkdir()
    data = tmp_path / "data"
    data.mkdir()
    (data / "models.txt").write_text("gemini-3.1-flash-image-preview\n")
    # `apimart` on the PATH, as installed: fish loads a completion only for a command.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apimart").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m apimart_cli "$@"\n')
    (bin_dir / "apimart").chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / ".local" / "share"),
        "XDG_CONFIG_HOME": str(tmp_path / ".config"),
        "APIMART_DATA_DIR": str(data),
        "TERM": "xterm-256color",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def bash_in(line: str, cwd: Path) -> list[str]:
    script = (
        f'source "{BASH_COMPLETION}"\n'
        'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()\n'
        "_apimart\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    result = subprocess.run(
        ["bash", "-c", script, "bash", line], capture_output=True, text=True, cwd=cwd, check=True
    )
    return sorted(word for word in result.stdout.splitlines() if word)


@needs_bash
def test_bash_offers_files_where_files_go_and_never_after_a_free_value(
    home: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "work"
    assert bash_in("apimart inspect ", work) == ["a.png", "b.png", "out"]
    assert bash_in("apimart batch ", work) == ["a.png", "b.png", "out"]
    assert bash_in("apimart gallery ", work) == ["out"]
    assert bash_in("apimart history --state ", work) == sorted(STATES)
    assert bash_in("apimart history --state p", work) == ["pending", "processing"]
    assert bash_in("apimart history --search ", work) == []  # not file names
    assert bash_in("apimart generate --model ", work) == sorted(MODELS)
    assert bash_in("apimart models ", work) == sorted(MODELS)
    assert bash_in("apimart batch j --refs ", work) == ["auto", "inline", "upload"]
    assert bash_in("apimart models --type ", work) == ["image", "video"]


MODELS = ["gpt-image-2", "gpt-image-2-official", "gemini-3.1-flash-image-preview"]


def install(shell: str, env: dict[str, str]) -> Path:
    """`apimart completion install SHELL`, the real command; the path it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "apimart_cli", "completion", "install", shell],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    path = Path(result.stdout.strip())
    assert path.is_file()
    return path


@pytest.mark.skipif(shutil.which("fish") is None, reason="no fish here")
def test_fish_loads_the_installed_completion_by_itself(
    home: dict[str, str], tmp_path: Path
) -> None:
    path = install("fish", home)
    assert path == tmp_path / ".config" / "fish" / "completions" / "apimart.fish"

    def offered(line: str) -> list[str]:
        result = subprocess.run(
            ["fish", "-c", f'complete -C "{line}"'],
            capture_output=True,
            text=True,
            env=home,
            cwd=tmp_path / "work",
            check=True,
        )
        return sorted(row.split("\t")[0] for row in result.stdout.splitlines())

    # Nothing sourced (a fresh home): fish finds it in its completions folder.
    assert offered("apimart generate -r ") == ["1k", "2k", "4k"]
    assert offered("apimart history --state ") == sorted(STATES)
    assert offered("apimart generate --model ") == sorted(MODELS)
    assert offered("apimart inspect ") == ["a.png", "b.png", "out/"]
    assert offered("apimart gallery ") == ["out/"]


def typed(shell: list[str], env: dict[str, str], cwd: Path, line: str, *expected: str) -> None:
    """Type `line` and Tab into a real interactive shell; each of `expected` shows.

    Three Tabs: bash inserts a common prefix first, and lists only on the Tab after."""
    terminal = Terminal(shell, env, cwd, interactive=True)
    try:
        terminal.until(lambda screen: any("ready>" in row for row in screen))
        terminal.type(line, "Tab", "Tab", "Tab")
        terminal.until(lambda screen: all(word in " ".join(screen) for word in expected))
    finally:
        terminal.close()


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="no tmux here")


@needs_tmux
@pytest.mark.skipif(shutil.which("zsh") is None, reason="no zsh here")
def test_zsh_completes_from_where_the_install_put_it(home: dict[str, str], tmp_path: Path) -> None:
    path = install("zsh", home)
    assert path == tmp_path / ".zfunc" / "_apimart"
    (tmp_path / ".zshrc").write_text(
        "fpath+=~/.zfunc\nautoload -Uz compinit && compinit -u\nPS1='ready> '\n"
    )
    env = {**home, "ZDOTDIR": str(tmp_path)}
    work = tmp_path / "work"
    typed(["zsh", "-i"], env, work, "apimart generate -r ", "1k", "2k", "4k")
    typed(["zsh", "-i"], env, work, "apimart history --state ", "submitting", "cancelled")
    typed(["zsh", "-i"], env, work, "apimart generate --model ", "gemini-3.1-flash-image-preview")
    typed(["zsh", "-i"], env, work, "apimart inspect ", "a.png", "b.png")


@needs_tmux
@needs_bash
def test_bash_completes_from_where_the_install_put_it(home: dict[str, str], tmp_path: Path) -> None:
    path = install("bash", home)
    assert path == tmp_path / ".local" / "share" / "bash-completion" / "completions" / "apimart"
    # bash-completion loads that folder on demand; here the file is sourced as it would.
    rc = tmp_path / "bashrc"
    rc.write_text(f"source {path}\nPS1='ready> '\n")
    shell = ["bash", "--noprofile", "--rcfile", str(rc), "-i"]
    work = tmp_path / "work"
    typed(shell, home, work, "apimart inspect ", "a.png", "b.png", "out/")
    typed(shell, home, work, "apimart history --state ", "submitting", "cancelled")
    typed(shell, home, work, "apimart generate --model ", "gemini-3.1-flash-image-preview")


def test_install_writes_through_no_link_planted_beside_or_at_its_path(tmp_path: Path) -> None:
    from apimart_cli.completion import install as install_script
    from apimart_cli.completion import install_path

    env = {"HOME": str(tmp_path / "home")}
    target = install_path("bash", env)
    target.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    target.symlink_to(victim)
    (target.parent / f".{target.name}.part").symlink_to(victim)  # a temporary's old name

    path, _ = install_script("bash", env)

    assert path == target and not target.is_symlink()
    assert victim.read_text() == "keep me"
    assert target.read_bytes() == (ROOT / "completions" / "apimart.bash").read_bytes()
    left = sorted(p.name for p in target.parent.iterdir())
    assert left == [f".{target.name}.part", target.name]  # no temporary file of its own left
