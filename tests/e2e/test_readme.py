"""Every command line the README shows runs as written against the sandbox.

The README's indented examples are read from the file itself, so an example that
stops working (a flag renamed, a model the sandbox does not serve) fails here.
Placeholders a reader would replace (`task_01K...`, a key, `photo.jpg`) are replaced
with real ids, keys and files first; `less` becomes `cat`. Examples that start a
server for good (`apimart sandbox`, `apimart mcp`) are left to their own tests.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from apimart_cli.sandbox import Fault, Sandbox
from apimart_cli.sandbox.images import gradient_png
from tests.e2e.conftest import apimart, shell

README = Path(__file__).resolve().parents[2] / "README.md"
# Servers that run until stopped: each has tests of its own.
SERVERS = ("apimart mcp", "apimart sandbox")


def readme_examples() -> list[tuple[int, str]]:
    """(line number, command) for each example command line in an indented block."""
    examples: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if pending is not None:
            start, text = pending
            text += " " + line.strip()
            if text.endswith("\\"):
                pending = (start, text[:-1].rstrip())
            else:
                examples.append((start, text))
                pending = None
            continue
        if not line.startswith("    ") or "apimart" not in line:
            continue
        command = line.strip()
        if not re.match(r"(apimart|echo|grep|printf) ", command):
            continue
        if command.endswith("\\"):
            pending = (number, command[:-1].rstrip())
        elif not command.startswith(SERVERS):
            examples.append((number, command))
    return examples


EXAMPLES = readme_examples()


def test_the_readme_has_examples_to_run() -> None:
    assert len(EXAMPLES) > 40
    assert any("apimart resend" in command for _, command in EXAMPLES)


@pytest.mark.parametrize(
    "command", [command for _, command in EXAMPLES], ids=[f"line{n}" for n, _ in EXAMPLES]
)
def test_a_readme_example_runs_as_written(
    command: str, sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    if "| jq" in command and shutil.which("jq") is None:
        pytest.skip("jq is not installed (apt-get install jq)")
    env = {**env, "HOME": str(tmp_path / "home"), "BROWSER": "true"}
    if "--reveal" in command:  # the key is shown on purpose: not the one no output may show
        env["APIMART_API_KEY"] = "sk-readme-shown-0123456789"
    (tmp_path / "home").mkdir(exist_ok=True)
    script = _with_real_values(command, sandbox, env, tmp_path)

    run = shell(script, env=env, cwd=tmp_path, timeout=120)

    assert run.returncode == 0, f"{script}\n{run.stderr}"


def _with_real_values(command: str, sandbox: Sandbox, env: dict[str, str], cwd: Path) -> str:
    """`command` with what a reader would put in its placeholders, made for real."""
    for name in ("photo.jpg", "sketch.png"):  # the type is read from the bytes: a PNG will do
        (cwd / name).write_bytes(gradient_png(64, 48, name, 0))
    (cwd / "jobs.txt").write_text('a fox\n{"prompt": "an owl", "size": "16:9"}\n')
    (cwd / "ideas.txt").write_text("a fox\na draft of an owl\na hare\n")
    if "task_01K" in command or re.search(r"(gallery|inspect).* out/", command):
        first = _submitted(env, cwd, "a fox")
        second = _submitted(env, cwd, "an owl")
        saved = apimart("wait", first, "-o", "out/", env=env, cwd=cwd)
        assert saved.returncode == 0, saved.stderr
        command = command.replace("task_01K...", first).replace("task_01L...", second)
    if "history --pending" in command:
        _submitted(env, cwd, "a hare")  # one task still unfinished, as far as the history knows
    if "apimart resend" in command:
        key = _unknown_submission(sandbox, env, cwd)
        command = command.replace("0b6f3c1e-...", key)
    if re.search(r"config set api_key\s*($|#)", command):
        command = f"echo sk-readme-example-0123456789 | {command}"
    return command.replace("| less", "| cat")


def _submitted(env: dict[str, str], cwd: Path, prompt: str) -> str:
    run = apimart("generate", prompt, env=env, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return run.lines[0]


def _unknown_submission(sandbox: Sandbox, env: dict[str, str], cwd: Path) -> str:
    """A submission whose reply was lost after the task was made: its key."""
    sandbox.inject(Fault("after_create", method="POST", path="/v1/images/generations"))
    run = apimart("generate", "a lost fox", "--json", env=env, cwd=cwd)
    assert run.returncode == 5, run.stderr
    error = json.loads(run.stderr.strip().splitlines()[-1])["error"]
    return str(error["idempotency_key"])
