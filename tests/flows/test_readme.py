"""Every README command line that is one `apimart` command with no shell syntax, run
as written against the sandbox, in this process: the words bash would hand it
(`tests/helpers/readme.py`; `tests/e2e/test_readme.py` runs the lines only bash can,
and checks that bash splits these as they are run here).

The README's indented examples are read from the file itself, so an example that
stops working (a flag renamed, a model the sandbox does not serve) fails here.
Placeholders a reader would replace (`task_01K...`, a key, `photo.jpg`) are replaced
with real ids, keys and files first. Examples that start a server for good
(`apimart sandbox`, `apimart mcp`) are left to their own tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from apimart_cli.sandbox import Sandbox
from tests.helpers.commands import run as apimart
from tests.helpers.readme import (
    EXAMPLES,
    IN_PROCESS,
    THROUGH_BASH,
    plain_words,
    reader_environment,
    typed,
    with_real_values,
)
from tests.helpers.viewers import fresh_viewers


def test_the_readme_has_examples_to_run() -> None:
    assert len(EXAMPLES) > 40
    assert any("apimart resend" in command for _, command in EXAMPLES)
    # Every line runs, here or through bash, and only one of the two runs it.
    assert sorted(IN_PROCESS + THROUGH_BASH) == sorted(EXAMPLES)
    assert not set(IN_PROCESS) & set(THROUGH_BASH)
    assert IN_PROCESS and THROUGH_BASH


@pytest.mark.parametrize(
    "command", [command for _, command in IN_PROCESS], ids=[f"line{n}" for n, _ in IN_PROCESS]
)
def test_a_readme_example_runs_as_written(
    command: str,
    sandbox: Sandbox,
    env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fresh_viewers(monkeypatch)  # `--open` finds the viewer this reader names, as a new process
    env = reader_environment(env, tmp_path / "home", command)
    line = with_real_values(command, sandbox, env, tmp_path)
    words = plain_words(line)
    assert words is not None, line  # real ids and keys are plain words too

    run = apimart(*words, env=env, cwd=tmp_path, input=typed(command), timeout=120)

    assert run.returncode == 0, f"{line}\n{run.stderr}"
