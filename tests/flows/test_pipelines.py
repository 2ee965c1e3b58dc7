"""The README's one-command flows against the sandbox: paths on standard output, ids on
standard error, `--sandbox` without a key, the key kept from the image host, help and
version without settings. The pipelines themselves are in `tests/e2e/test_pipelines.py`."""

from __future__ import annotations

import sys
from pathlib import Path

from apimart_cli.sandbox import Sandbox
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart
from tests.helpers.images import png_size


def test_generate_wait_prints_paths_and_sends_ids_to_stderr(
    env: dict[str, str], tmp_path: Path
) -> None:
    run = apimart("generate", "a lighthouse", "--wait", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    [path] = run.lines
    assert png_size(tmp_path / path) == (1024, 1024)
    task_id = Path(path).name.rsplit("_", 1)[0]
    assert task_id in run.stderr


def test_global_sandbox_flag_needs_no_key(env: dict[str, str], tmp_path: Path) -> None:
    no_key = {
        k: v for k, v in env.items() if not k.startswith("APIMART_API") and k != "APIMART_BASE_URL"
    }
    run = apimart(
        "--sandbox",
        "generate",
        "a lighthouse at dawn",
        "-s",
        "3:2",
        "--wait",
        "-o",
        "out",
        env=no_key,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    [path] = run.lines
    assert png_size(tmp_path / path) == (1536, 1024)


def test_image_host_never_receives_the_key(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    run = apimart("generate", "a fox", "--wait", "-o", "out", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    image_requests = [r for r in sandbox.requests if r.origin == "image"]
    api_requests = [r for r in sandbox.requests if r.origin == "api"]
    assert image_requests and api_requests
    assert all("authorization" not in r.headers for r in image_requests)
    assert all(r.headers.get("authorization") == f"Bearer {API_KEY}" for r in api_requests)


def test_help_and_version_work_without_settings(env: dict[str, str]) -> None:
    assert apimart("--version", env=env).stdout.startswith("apimart ")
    run = apimart("--help", env=env)
    for command in (
        "generate",
        "status",
        "wait",
        "download",
        "balance",
        "config",
        "history",
        "sizes",
        "sandbox",
    ):
        assert command in run.stdout
    assert sys.executable  # the same interpreter runs the command
