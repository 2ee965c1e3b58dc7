"""Start-up: what every shell one-liner pays.

`apimart --version` and `--help` against `python -c "import typer"`, and
`apimart status ID --json` against a bare script that imports typer and httpx
and makes the same GET, each pair run alternately. The bare script keeps
httpx's own command-line client (`httpx._main`) out as the tool does
(`apimart_cli/lean_httpx.py`): the floor is what a careful script pays.
"""

from __future__ import annotations

import resource
import statistics
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


class _Cpu:
    """The CPU seconds (user + system) of each command run through `time`, beside its
    wall time: on a machine others share, CPU time moves less than wall time."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def time(self, argv: list[str], env: dict[str, str] | None = None) -> float:
        before = _children_cpu()
        wall = timed_run(argv, env)
        self.seconds.append(_children_cpu() - before)
        return wall

    def ratio(self, other: _Cpu) -> str:
        return f"{statistics.median(self.seconds) / statistics.median(other.seconds):.2f}x"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(smoke: bool = False) -> list[Result]:
    rounds = 3 if smoke else 30
    import_typer = [sys.executable, "-c", "import typer"]
    results = []
    for name, argv, target in (
        ("apimart --version", [*APIMART, "--version"], 1.15),
        ("apimart --help", [*APIMART, "--help"], 1.10),
    ):
        ours, floor = _Cpu(), _Cpu()
        measured, baseline = alternate(
            lambda argv=argv, ours=ours: ours.time(argv),
            lambda floor=floor: floor.time(import_typer),
            rounds,
        )
        notes = {"baseline": "import typer", "CPU ratio": ours.ratio(floor)}
        results.append(Result(name, measured, baseline, target, notes=notes))
    with Sandbox(SandboxConfig(duration=1)) as sandbox, tempfile.TemporaryDirectory() as home:
        task_id = _submit_one(sandbox)
        env = user_env(sandbox.base_url, Path(home))
        timed_run([*APIMART, "status", task_id, "--json"], env)  # create the history once
        ours, floor = _Cpu(), _Cpu()
        measured, baseline = alternate(
            lambda: ours.time([*APIMART, "status", task_id, "--json"], env),
            lambda: floor.time(
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
            notes={
                "baseline": "typer + httpx without httpx._main + the same GET",
                "CPU ratio": ours.ratio(floor),
            },
        )
    )
    return results
