"""A newcomer's first mistakes, with the real command: each one says what to do."""

from __future__ import annotations

import socket
from pathlib import Path

from apimart_cli.sandbox import Sandbox
from tests.e2e.conftest import apimart


def test_a_global_option_after_the_command_says_where_it_goes(env: dict[str, str]) -> None:
    run = apimart("generate", "--api-key", "sk-anything-at-all", "a fox", env=env)

    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.splitlines()[-2:] == [
        "Error: No such option: --api-key",
        "--api-key is a global option: it goes before the command,"
        " as in `apimart --api-key ... generate ...`.",
    ]


def test_a_sandbox_that_is_not_running_is_named_at_once(env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    run = apimart("--base-url", f"http://127.0.0.1:{port}", "generate", "a fox", env=env)

    assert run.returncode == 5
    assert "Retrying" not in run.stderr
    assert f"Could not connect to 127.0.0.1:{port}" in run.stderr
    assert "comes from --base-url" in run.stderr


def test_a_ratio_typed_as_pixels_is_refused_and_a_v1_base_url_works(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    env = {**env, "APIMART_BASE_URL": f"{sandbox.base_url}/v1"}
    refused = apimart("generate", "a fox", "-s", "16x9", env=env)
    assert refused.returncode == 2
    assert "did you mean the ratio 16:9?" in refused.stderr

    run = apimart("generate", "a fox", "-s", "16:9", "--wait", "-o", "out", env=env, cwd=tmp_path)

    assert run.returncode == 0, run.stderr
    assert "ends in /v1" in run.stderr
    [saved] = run.lines
    assert (tmp_path / saved).exists()
