"""The service's wider dialect, end to end: the real commands against a sandbox that
speaks it (errors inside a 200, model errors under a 503, state synonyms in upper case,
ISO times, synchronous results, replays)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from apimart_cli.history import History
from apimart_cli.sandbox import Fault, ManualClock, Sandbox, SandboxConfig
from tests.cli.conftest import KEY, run
from tests.helpers.records import SUBMIT, posts

TASKS = "/v1/tasks/"


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig(duration=0.2)) as server:
        monkeypatch.setenv("APIMART_API_KEY", KEY)
        monkeypatch.setenv("APIMART_BASE_URL", server.base_url)
        yield server


def rows() -> list[dict[str, object]]:
    with History.open() as history:
        return [vars(record) for record in history.list()]


def saved(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("shape", ["code", "msg", "success"])
def test_a_submit_refused_inside_a_200_created_nothing(sandbox: Sandbox, shape: str) -> None:
    sandbox.inject(Fault("error_in_200", method="POST", path=SUBMIT, status=400, shape=shape))

    result = run("generate", "a fox")

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "Bad Request (sandbox fault, inside a 200)" in result.stderr
    assert "may have been created" not in result.stderr
    assert len(posts(sandbox)) == 1  # not resent
    assert rows() == []  # refused: no unknown submission kept


def test_a_submit_failing_with_500_inside_a_200_is_unknown_with_its_key(sandbox: Sandbox) -> None:
    sandbox.inject(Fault("error_in_200", method="POST", path=SUBMIT, status=500, shape="msg"))

    result = run("generate", "a fox", "--json")

    assert result.exit_code == 5, result.output
    error = json.loads(result.stderr.splitlines()[-1])["error"]
    assert "Internal Server Error (sandbox fault, inside a 200)" in error["message"]
    (row,) = rows()
    assert row["state"] == "unknown"
    assert error["idempotency_key"] == row["idempotency_key"]
    assert len(posts(sandbox)) == 1


def test_a_poll_answered_with_an_error_inside_a_200_is_that_error(sandbox: Sandbox) -> None:
    task_id = run("generate", "a fox").stdout.strip()
    sandbox.inject(Fault("error_in_200", path=TASKS, status=400, times=50))

    result = run("wait", task_id, "--json", "-o", "out")

    assert result.exit_code == 1, result.output
    assert "Bad Request (sandbox fault, inside a 200)" in result.stderr
    assert "not an object" not in result.stderr
    error = json.loads(result.stderr.splitlines()[-1])["error"]
    assert error["retryable"] is False
    polls = [r for r in sandbox.requests if r.path.startswith(TASKS)]
    assert len(polls) == 1  # a refusal, not load: asked once


def test_a_model_error_under_a_503_is_not_resent_and_names_the_model(sandbox: Sandbox) -> None:
    sandbox.inject(Fault("model_error", method="POST", path=SUBMIT, status=503))

    result = run("generate", "a fox")

    assert result.exit_code == 1, result.output
    assert "the model gpt-image-2" in result.stderr
    assert len(posts(sandbox)) == 1
    assert rows() == []


def test_states_in_upper_case_with_synonyms_end_in_saved_images(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(state_synonyms=True, iso_times=True)

    result = run("generate", "a fox", "-n", "2", "--wait", "-o", "out", "--timeout", "30")

    assert result.exit_code == 0, result.output
    (task_id,) = [line for line in result.stderr.split() if line.startswith("task_")][:1]
    assert saved(tmp_path / "out") == [f"{task_id}_0.png", f"{task_id}_1.png"]
    (row,) = rows()
    assert row["state"] == "completed"
    assert isinstance(row["expires_at"], float)  # read from ISO text


def test_an_expiry_in_iso_text_is_honoured_before_any_fetch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = ManualClock()  # its wall time is in the past: the images have expired by now
    with Sandbox(SandboxConfig(duration=1, iso_times=True, image_ttl=60), clock=clock) as server:
        monkeypatch.setenv("APIMART_API_KEY", KEY)
        monkeypatch.setenv("APIMART_BASE_URL", server.base_url)
        task_id = run("generate", "a fox").stdout.strip()
        server.advance(2)

        result = run("wait", task_id, "-o", "out")

        assert result.exit_code == 1, result.output
        assert "expired at" in result.stderr
        assert "24 hours" not in result.stderr
        assert [r for r in server.requests if r.origin == "image"] == []


def test_a_synchronous_result_is_saved_under_an_id_from_its_request_id(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.configure(sync_results=True)

    submitted = run("generate", "a fox")
    assert submitted.exit_code == 0, submitted.output
    (task_id,) = submitted.stdout.split()
    assert task_id.startswith("result_req_")
    assert "finished result" in submitted.stderr
    (row,) = rows()
    assert row["task_id"] == task_id and row["state"] == "completed"
    assert row["request_id"] == task_id.removeprefix("result_")

    waited = run("wait", task_id, "-o", "out")  # another command: the result was kept

    assert waited.exit_code == 0, waited.output
    assert saved(tmp_path / "out") == [f"{task_id}_0.png"]
    assert [r for r in sandbox.requests if r.path.startswith(TASKS)] == []


def test_a_synchronous_result_with_wait(sandbox: Sandbox, tmp_path: Path) -> None:
    sandbox.configure(sync_results=True)

    result = run("generate", "a fox", "--wait", "-o", "out")

    assert result.exit_code == 0, result.output
    (name,) = saved(tmp_path / "out")
    assert name.startswith("result_req_")


def test_a_replay_is_said_and_its_request_id_kept(sandbox: Sandbox) -> None:
    # The task is created, then a 503 is the reply: the same key goes again, and the
    # service answers with the original task, marked as a replay.
    sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=503))

    result = run("generate", "a fox")

    assert result.exit_code == 0, result.output
    (task_id,) = result.stdout.split()
    assert "replayed an earlier submission" in result.stderr
    assert len(sandbox.submissions()) == 1  # one task, paid once
    (row,) = rows()
    assert row["task_id"] == task_id
    assert isinstance(row["request_id"], str) and row["request_id"].startswith("req_")
    listed = json.loads(run("history", "--json").stdout.splitlines()[0])
    assert listed["request_id"] == row["request_id"]


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    from tests.cli.conftest import PNG

    path = tmp_path / "ref.png"
    path.write_bytes(PNG)
    return path


def submitted_bodies(sandbox: Sandbox) -> list[list[str]]:
    return [
        [url[:5] for url in r.json.get("image_urls", [])]
        for r in sandbox.requests
        if r.method == "POST" and r.path == SUBMIT
    ]


def test_refs_auto_remembers_a_base64_refusal_for_later_commands(
    sandbox: Sandbox, ref: Path
) -> None:
    sandbox.configure(refuse_base64=True)

    first = run("generate", "a fox", "-i", str(ref))
    assert first.exit_code == 0, first.output
    assert "refused base64 references" in first.stderr
    assert submitted_bodies(sandbox) == [["data:"], ["http:"]]

    later = run("generate", "a fox", "-i", str(ref))  # another command: uploads first

    assert later.exit_code == 0, later.output
    assert later.stderr.count("\n") == 1
    assert "Uploading local references first" in later.stderr
    assert submitted_bodies(sandbox)[2:] == [["http:"]]

    # The user's explicit word wins over what was remembered.
    sandbox.configure(refuse_base64=False)
    inline = run("generate", "a fox", "-i", str(ref), "--refs", "inline")
    assert inline.exit_code == 0, inline.output
    assert submitted_bodies(sandbox)[3:] == [["data:"]]
    assert "Uploading" not in inline.stderr


@pytest.mark.parametrize(
    "planted",
    [1e300, -1e300, float("nan"), float("inf"), 10**400, -1],
    ids=["1e300", "-1e300", "nan", "inf", "400 digits", "-1"],
)
def test_refs_auto_with_a_hostile_refusal_time_in_the_cache_still_uploads(
    sandbox: Sandbox, ref: Path, planted: float
) -> None:
    from apimart_cli.cache import Cache

    # Another program (or a damaged file) left a refusal whose time makes no date.
    Cache().remember_note(sandbox.base_url, "refuses-base64", planted, time.time() + 3600)

    result = run("generate", "a fox", "-i", str(ref))

    assert result.exit_code == 0, result.output
    assert "Uploading local references first" in result.stderr
    assert " on " not in result.stderr.splitlines()[0]  # no date made up from it
    assert submitted_bodies(sandbox) == [["http:"]]


def test_refs_auto_without_a_refusal_sends_inline(sandbox: Sandbox, ref: Path) -> None:
    result = run("generate", "a fox", "-i", str(ref))

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert submitted_bodies(sandbox) == [["data:"]]


def test_models_docs_prints_the_markdown_and_keeps_it_for_its_ttl(sandbox: Sandbox) -> None:
    result = run("models", "gpt-image-2-official", "--docs")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# gpt-image-2-official\n")
    assert "`mask_url`" in result.stdout
    as_json = run("models", "gpt-image-2-official", "--docs", "--json")
    assert json.loads(as_json.stdout)["object"] == "model.documentation"
    asked = [r for r in sandbox.requests if r.path.startswith("/v1/model-docs")]
    assert len(asked) == 1  # the second answer came from the cache


def test_models_docs_of_an_unknown_model_or_none(sandbox: Sandbox) -> None:
    unknown = run("models", "dall-e-9", "--docs")
    assert unknown.exit_code == 1
    assert "dall-e-9" in unknown.stderr
    no_model = run("models", "--docs")
    assert no_model.exit_code == 2
    assert [r for r in sandbox.requests if r.path.startswith("/v1/model-docs")][:1] == [
        r for r in sandbox.requests if "dall-e-9" in r.path
    ]


def test_the_mcp_models_tool_gives_docs(sandbox: Sandbox) -> None:
    from apimart_cli.mcp_server import Tools

    answer = Tools(api_key=KEY, base_url=sandbox.base_url).models(
        "gemini-3.1-flash-image-preview", timeout=30, docs=True
    )
    assert answer["docs"]["markdown"].startswith("# gemini-3.1-flash-image-preview")


@pytest.mark.parametrize(
    "args",
    [
        ("--model", "gemini-3.1-flash-image-preview", "-s", "1:4"),
        ("--model", "gpt-image-2-official", "-s", "16:9", "-r", "2k", "-n", "2"),
        (
            "--model",
            "gpt-image-2-official",
            "--param",
            "quality=high",
            "--param",
            "background=transparent",
            "--param",
            "output_format=png",
        ),
    ],
)
def test_the_readme_examples_of_other_models_work(
    sandbox: Sandbox, tmp_path: Path, args: tuple[str, ...]
) -> None:
    result = run("generate", "a tall banner", *args, "--wait", "-o", "out", "--timeout", "30")

    assert result.exit_code == 0, result.output
    assert saved(tmp_path / "out")


def test_refs_auto_reads_no_cache_without_local_references(
    sandbox: Sandbox, isolated: Path
) -> None:
    result = run("generate", "a fox")

    assert result.exit_code == 0, result.output
    assert not (isolated / "data" / "cache.sqlite3").exists()
