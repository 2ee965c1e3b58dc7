"""A newcomer's first mistakes, with the command against the sandbox: each one says what
to do."""

from __future__ import annotations

import socket
from pathlib import Path

from apimart_cli.sandbox import Sandbox
from tests.helpers.commands import API_KEY
from tests.helpers.commands import run as apimart


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


def test_config_set_api_key_is_checked_and_list_names_each_source(
    sandbox: Sandbox, env: dict[str, str], isolated: Path
) -> None:
    without_key = {k: v for k, v in env.items() if k != "APIMART_API_KEY"}

    stored = apimart("config", "set", "api_key", env=without_key, input=f"{API_KEY}\n")

    assert stored.returncode == 0, stored.stderr
    assert stored.stderr == (
        f"{sandbox.base_url} accepted the key.\nSaved api_key in {isolated / 'config.toml'}\n"
    )
    listed = apimart("config", "list", env=without_key)
    assert listed.lines[:2] == [
        f"api_key = sk-…{API_KEY[-4:]}  (config file)",
        f"base_url = {sandbox.base_url}  (APIMART_BASE_URL)",
    ]
