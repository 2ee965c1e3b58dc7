"""The sandbox's time: its clock, task durations, estimates as wrong as the real ones, latency."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from apimart_cli.sandbox import ManualClock, Sandbox, SandboxConfig, SystemClock, parse_duration
from tests.helpers.records import plain_client

AUTH = {"Authorization": "Bearer sk-timing"}
SUBMIT = "/v1/images/generations"
BODY = {"model": "gpt-image-2", "prompt": "a lighthouse", "size": "64x64"}


class Api:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.client = plain_client(base_url=sandbox.base_url, headers=AUTH, timeout=10)

    def submit(self) -> str:
        task_id: str = self.client.post(SUBMIT, json=BODY).json()["data"][0]["task_id"]
        return task_id

    def task(self, task_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.client.get(f"/v1/tasks/{task_id}").json()["data"]
        return data

    def admin(self, path: str, payload: Any) -> httpx.Response:
        return self.client.post(f"/__sandbox/{path}", json=payload)


@pytest.fixture
def make_api() -> Iterator[Any]:
    started: list[Api] = []

    def make(**config: Any) -> Api:
        started.append(Api(Sandbox(SandboxConfig(**config), clock=ManualClock()).start()))
        return started[-1]

    yield make
    for api in started:
        api.client.close()
        api.sandbox.stop()


@pytest.mark.parametrize(
    ("factor", "estimate"),
    [(2.0, 104), (0.5, 26), (1.0, 52), (None, None)],
)
def test_estimate_is_the_duration_times_the_factor(
    make_api: Any, factor: float | None, estimate: int | None
) -> None:
    api = make_api(duration=52, estimate_factor=factor)
    task_id = api.submit()
    api.sandbox.advance(52)

    task = api.task(task_id)

    assert task.get("estimated_time") == estimate
    assert ("estimated_time" in task) == (factor is not None)
    assert (task["status"], task["actual_time"]) == ("completed", 52)


def test_default_estimate_is_twice_too_long_like_the_service() -> None:
    assert SandboxConfig().estimate_factor == 2.0


def test_duration_range_draws_each_task_its_own_seeded_duration(make_api: Any) -> None:
    first, second = make_api(duration=(20, 30), seed=7), make_api(duration=(20, 30), seed=7)
    runs = []
    for api in (first, second):
        ids = [api.submit() for _ in range(20)]
        api.sandbox.advance(30)
        runs.append([api.task(task_id)["actual_time"] for task_id in ids])

    assert runs[0] == runs[1]  # the same seed, the same durations
    assert all(20 <= seconds <= 30 for seconds in runs[0])
    assert len(set(runs[0])) > 3


def test_a_task_of_a_range_completes_at_its_own_duration(make_api: Any) -> None:
    api = make_api(duration=(20, 30), estimate_factor=1.0)
    task_id = api.submit()
    duration = api.task(task_id)["estimated_time"]  # ceil of its own duration

    api.sandbox.advance(duration - 1)
    assert api.task(task_id)["status"] == "processing"
    api.sandbox.advance(1)
    assert api.task(task_id)["status"] == "completed"


@pytest.mark.parametrize(
    ("text", "duration"),
    [("3", 3.0), ("0.5", 0.5), ("20-30", (20.0, 30.0)), (" 8 ", 8.0), ("0", 0.0)],
)
def test_parse_duration(text: str, duration: float | tuple[float, float]) -> None:
    assert parse_duration(text) == duration


@pytest.mark.parametrize("text", ["", "fast", "30-20", "-3", "1-2-3", "nan", "inf"])
def test_parse_duration_names_a_bad_value(text: str) -> None:
    with pytest.raises(ValueError, match=f"invalid duration {text!r}"):
        parse_duration(text)


@pytest.mark.parametrize(
    "config",
    [{"duration": -1}, {"duration": (3, 1)}, {"estimate_factor": 0}, {"estimate_factor": "2"}],
)
def test_config_refuses_bad_values(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SandboxConfig(**config)


# The clock


def test_manual_clock_stands_still_and_its_sleep_advances_it() -> None:
    clock = ManualClock(start=1000.0)
    assert (clock.monotonic(), clock.time()) == (0.0, 1000.0)
    clock.sleep(2.5)
    clock.advance(0.5)
    assert (clock.monotonic(), clock.time()) == (3.0, 1003.0)
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_system_clock_can_be_moved_forward() -> None:
    clock = SystemClock()
    before = clock.time()
    clock.advance(3600)
    assert clock.time() - before >= 3600


def test_latency_passes_on_the_sandbox_clock(make_api: Any) -> None:
    api = make_api(latency=0.25)
    started = api.sandbox.clock.monotonic()

    api.client.get("/v1/balance")

    assert api.sandbox.clock.monotonic() - started == pytest.approx(0.25)


def test_a_real_clock_moved_forward_completes_a_long_task() -> None:
    with Sandbox(SandboxConfig(duration=3600)) as sandbox:
        api = Api(sandbox)
        task_id = api.submit()
        assert api.task(task_id)["status"] == "submitted"
        sandbox.advance(3600)
        assert api.task(task_id)["status"] == "completed"
        api.client.close()


# Switches while running, in process and through the admin endpoint


def test_configure_changes_switches_while_running(make_api: Any) -> None:
    api = make_api(duration=10)
    task_id = api.submit()

    api.sandbox.configure(estimate_factor=0.5)
    assert api.task(task_id)["estimated_time"] == 5
    api.sandbox.configure(estimate_factor=None)
    assert "estimated_time" not in api.task(task_id)


def test_admin_config_and_clock(make_api: Any) -> None:
    api = make_api(duration=60)
    task_id = api.submit()

    changed = api.admin("config", {"estimate_factor": None, "duration": [20, 30], "latency": 0})
    assert changed.status_code == 200, changed.text
    assert changed.json()["config"]["duration"] == [20, 30]
    assert "estimated_time" not in api.task(task_id)
    moved = api.admin("clock", {"advance": 60})
    assert moved.status_code == 200
    assert api.task(task_id)["status"] == "completed"  # an old task keeps its own duration
    assert api.client.get("/__sandbox/config").json()["config"]["estimate_factor"] is None


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("config", {"colour": "red"}),
        ("config", {"latency": "slow"}),
        ("config", {"noise": 1}),
        ("config", {"duration": [30, 20]}),
        ("config", {"estimate_factor": -2}),
        ("config", [1]),
        ("clock", {"advance": -5}),
        ("clock", {"advance": "1h"}),
        ("clock", {}),
    ],
)
def test_admin_refuses_bad_switches(make_api: Any, path: str, payload: Any) -> None:
    api = make_api()
    before = api.sandbox.config

    reply = api.admin(path, payload)

    assert reply.status_code == 400
    assert api.sandbox.config == before


# Scale: many status requests at once, each held by latency


def test_status_requests_are_served_concurrently() -> None:
    """32 polls at once, each held 0.5 s by latency, are all in flight together."""
    with Sandbox(SandboxConfig(duration=60, latency=0.5)) as sandbox:
        api = Api(sandbox)
        sandbox.configure(latency=0)
        ids = [api.submit() for _ in range(32)]
        sandbox.configure(latency=0.5)
        limits = httpx.Limits(max_connections=32)
        ready = threading.Barrier(32)
        with plain_client(base_url=sandbox.base_url, headers=AUTH, limits=limits) as client:

            def poll(task_id: str) -> int:
                ready.wait()
                return client.get(f"/v1/tasks/{task_id}").status_code

            with ThreadPoolExecutor(32) as pool:
                assert set(pool.map(poll, ids)) == {200}
        api.client.close()

    assert sandbox.peak_in_flight >= 16


def test_poll_rate_answers_429_with_retry_after_and_recovers(make_api: Any) -> None:
    api = make_api(poll_rate=2, duration=60)
    task_id = api.submit()
    codes = [api.client.get(f"/v1/tasks/{task_id}").status_code for _ in range(2)]

    limited = api.client.get(f"/v1/tasks/{task_id}")

    assert codes == [200, 200]
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "1")
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert "status requests per second" in limited.json()["error"]["message"]
    assert api.client.get("/v1/balance").status_code == 200  # only status requests count
    api.sandbox.advance(0.5)
    assert api.client.get(f"/v1/tasks/{task_id}").status_code == 200
    api.sandbox.configure(poll_rate=None)
    assert {api.client.get(f"/v1/tasks/{task_id}").status_code for _ in range(5)} == {200}
