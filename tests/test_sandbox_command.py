"""`apimart sandbox`: its switches reach the sandbox it runs; a bad one is refused."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.records import plain_client

_SCRIPT = Path(sys.executable).with_name("apimart")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "apimart_cli"]
AUTH = {"Authorization": "Bearer any"}
BODY = {"model": "gpt-image-2", "prompt": "a fox", "image_urls": ["data:image/png;base64,AAAA"]}


def run_sandbox(*args: str) -> Iterator[str]:
    """Start `apimart sandbox` with args; yield its base URL; stop it."""
    process = subprocess.Popen(
        [*COMMAND, "-q", "sandbox", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:"), process.stderr.read() if process.stderr else ""
        yield line
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def started() -> Iterator[str]:
    yield from run_sandbox(
        "--duration",
        "20-30",
        "--no-estimate",
        "--refuse-base64",
        "--latency",
        "0",
        "--seed",
        "3",
        "--poll-rate",
        "5",
        "--video-bytes",
        "2000000",
    )


def test_switches_reach_the_sandbox(started: str) -> None:
    with plain_client(base_url=started, headers=AUTH) as client:
        refused = client.post("/v1/images/generations", json=BODY)
        assert refused.status_code == 400
        assert "upload" in refused.json()["error"]["message"]

        reply = client.post("/v1/images/generations", json={**BODY, "image_urls": []})
        task = client.get(f"/v1/tasks/{reply.json()['data'][0]['task_id']}").json()["data"]
        assert "estimated_time" not in task
        config = client.get("/__sandbox/config").json()["config"]

    assert config["duration"] == [20.0, 30.0]
    assert (config["refuse_base64"], config["seed"], config["poll_rate"]) == (True, 3, 5.0)
    assert config["video_bytes"] == 2_000_000


def test_estimate_factor_flag() -> None:
    for url in run_sandbox("--estimate-factor", "0.5", "--duration", "8"):
        with plain_client(base_url=url, headers=AUTH) as client:
            reply = client.post("/v1/images/generations", json={**BODY, "image_urls": []})
            task = client.get(f"/v1/tasks/{reply.json()['data'][0]['task_id']}").json()["data"]
            assert task["estimated_time"] == 4


@pytest.mark.parametrize("duration", ["fast", "30-20", "-1"])
def test_bad_duration_exits_2_naming_it(duration: str) -> None:
    result = subprocess.run(
        [*COMMAND, "sandbox", "--port", "0", f"--duration={duration}"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert f"invalid duration {duration!r}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
