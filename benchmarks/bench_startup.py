"""Start-up: what every shell one-liner pays.

`apimart --version` and `--help` against `python -c "import typer"`, and
`apimart status ID --json` against a bare script that imports typer and httpx
and makes the same GET, each pair run alternately. The bare script keeps
httpx's own command-line client (`httpx._main`) out as the tool does
(`apimart_cli/lean_httpx.py`): the floor is what a careful script pays.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from apimart_cli.sandbox import Sandbox, SandboxConfig
from benchmarks.common import APIMART, Result, alternate, timed_run, user_env

BARE_GET = """
import sys
sys.modules["httpx._main"] = None
import typer, httpx
headers = {"Authorization": "Bearer sk-bench"}
reply = httpx.get(sys.argv[1], headers=headers, params={"language": "en"})
reply.raise_for_status()
print(reply.text)
"""


def _submit_one(sandbox: Sandbox) -> str:
    import httpx

    reply = httpx.post(
        f"{sandbox.base_url}/v1/images/generations",
        json={"model": "gpt-image-2", "prompt": "benchmark"},
        headers={"Authorization": "Bearer sk-bench"},
    )
    return str(reply.json()["data"][0]["task_id"])


def run(smoke: bool = False) -> list[Result]:
    rounds = 3 if smoke else 30
    import_typer = [sys.executable, "-c", "import typer"]
    results = []
    for name, argv, target in (
        ("apimart --version", [*APIMART, "--version"], 1.15),
        ("apimart --help", [*APIMART, "--help"], 1.10),
    ):
        measured, baseline = alternate(
            lambda argv=argv: timed_run(argv), lambda: timed_run(import_typer), rounds
        )
        results.append(Result(name, measured, baseline, target, notes={"baseline": "import typer"}))
    with Sandbox(SandboxConfig(duration=1)) as sandbox, tempfile.TemporaryDirectory() as home:
        task_id = _submit_one(sandbox)
        env = user_env(sandbox.base_url, Path(home))
        timed_run([*APIMART, "status", task_id, "--json"], env)  # create the history once
        measured, baseline = alternate(
            lambda: timed_run([*APIMART, "status", task_id, "--json"], env),
            lambda: timed_run(
                [sys.executable, "-c", BARE_GET, f"{sandbox.base_url}/v1/tasks/{task_id}"], env
            ),
            rounds,
        )
    results.append(
        Result(
            "apimart status ID --json",
            measured,
            baseline,
            1.05,
            notes={"baseline": "typer + httpx without httpx._main + the same GET"},
        )
    )
    return results
