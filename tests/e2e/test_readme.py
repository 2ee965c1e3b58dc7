"""The README's command lines that only bash can run (a pipe, a redirection, a glob, a
variable), run as written against the sandbox; and bash's own reading of the others,
which `tests/flows/test_readme.py` runs in this process (`tests/helpers/readme.py`).

The README's indented examples are read from the file itself, so an example that
stops working (a flag renamed, a model the sandbox does not serve) fails here.
Placeholders a reader would replace (`task_01K...`, a key, `photo.jpg`) are replaced
with real ids, keys and files first; `less` becomes `cat`. Examples that start a
server for good (`apimart sandbox`, `apimart mcp`) are left to their own tests.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox
from tests.e2e.conftest import shell
from tests.helpers.readme import (
    IN_PROCESS,
    THROUGH_BASH,
    plain_words,
    reader_environment,
    typed,
    with_real_values,
)


@pytest.mark.parametrize(
    "command", [command for _, command in THROUGH_BASH], ids=[f"line{n}" for n, _ in THROUGH_BASH]
)
def test_a_readme_example_runs_as_written(
    command: str, sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    if "| jq" in command and shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq)")
    env = reader_environment(env, tmp_path / "home", command)
    script = with_real_values(command, sandbox, env, tmp_path)
    if (keyed := typed(command)) is not None:
        script = f"echo {shlex.quote(keyed.strip())} | {script}"

    run = shell(script, env=env, cwd=tmp_path, timeout=120)

    assert run.returncode == 0, f"{script}\n{run.stderr}"


def test_bash_hands_a_plain_readme_line_the_words_it_is_run_with_here() -> None:
    """What runs in-process is what bash would hand the command: each plain line's words,
    as bash splits them (quotes, comments and all), are `plain_words`' reading of it."""
    script = 'apimart() { printf "%s\\0" "$@"; printf "\\036"; }\n' + "\n".join(
        command for _, command in IN_PROCESS
    )

    said = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, check=True
    ).stdout

    split_by_bash = [record.split("\0")[:-1] for record in said.split("\036")[:-1]]
    assert split_by_bash == [plain_words(command) for _, command in IN_PROCESS]
    odd = "apimart a#b \"c d\" 'e $f' # g"  # a `#` inside a word is no comment, to either
    assert plain_words(odd) == ["a#b", "c d", "e $f"]
    for shell_syntax in ('apimart x "$HOME"', "apimart x > f", "apimart *.png", "apimart ~/x"):
        assert plain_words(shell_syntax) is None, shell_syntax
