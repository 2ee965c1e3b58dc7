"""The sandbox's strict idempotency keys, as the IETF draft has them: 409 while the first
request with a key is in flight, 422 for a key that comes back with another body, and the
original task for the same body."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from tests.helpers.records import plain_client
from tests.helpers.waiting import wait_until

AUTH = {"Authorization": "Bearer sk-test-secret"}
SUBMIT = "/v1/images/generations"
HELD = 99.0  # the delay of the "slow" fault that the gate below holds instead


def body(prompt: str = "a fox") -> dict[str, Any]:
    return {"model": "gpt-image-2", "prompt": prompt}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.0, strict_idempotency=True)) as server:
        yield server


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with plain_client(base_url=sandbox.base_url, headers=AUTH, timeout=10) as http:
        yield http


def post(client: httpx.Client, key: str, prompt: str = "a fox") -> httpx.Response:
    return client.post(SUBMIT, json=body(prompt), headers={"Idempotency-Key": key})


def test_a_key_in_flight_is_409_then_its_task_is_replayed_and_another_body_is_422(
    sandbox: Sandbox, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real_pause = sandbox.pause
    monkeypatch.setattr(sandbox, "pause", lambda s: gate.wait(10) if s == HELD else real_pause(s))
    sandbox.inject(Fault("slow", method="POST", path=SUBMIT, delay=HELD))
    first: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: first.append(post(client, "k1")))
    sender.start()
    wait_until(lambda: any(r.path == SUBMIT for r in sandbox.requests))

    in_flight = post(client, "k1")

    gate.set()
    sender.join()
    assert in_flight.status_code == 409
    assert "still being processed" in in_flight.json()["error"]["message"]
    [made] = sandbox.submissions()
    assert first[0].json()["data"][0]["task_id"] == made.task_id
    replayed = post(client, "k1")
    assert replayed.status_code == 200
    assert replayed.json()["data"][0]["task_id"] == made.task_id
    other = post(client, "k1", "an owl")
    assert other.status_code == 422
    assert len(sandbox.submissions()) == 1


def test_a_key_whose_request_made_nothing_is_free_again(
    sandbox: Sandbox, client: httpx.Client
) -> None:
    sandbox.inject(Fault("drop", method="POST", path=SUBMIT))
    with pytest.raises(httpx.TransportError):
        post(client, "k1")
    assert sandbox.submissions() == []
    refused = client.post(SUBMIT, json={"prompt": ""}, headers={"Idempotency-Key": "k1"})
    assert refused.status_code == 400
    made = post(client, "k1", "an owl")  # another body: nothing was made under the key
    assert made.status_code == 200
    assert [r.json["prompt"] for r in sandbox.submissions()] == ["an owl"]


def test_without_the_switch_a_key_is_replayed_whatever_the_body() -> None:
    with (
        Sandbox(SandboxConfig(duration=0.0)) as lenient,
        plain_client(base_url=lenient.base_url, headers=AUTH, timeout=10) as client,
    ):
        first, other = post(client, "k1"), post(client, "k1", "an owl")
        assert first.json() == other.json()
        assert len(lenient.submissions()) == 1
