"""The MCP server's tools as an agent calls them, through the MCP SDK's own client
connected to the server in this process, against the sandbox. The server on its
standard input and output, started as an agent starts it, is in `tests/e2e/test_mcp.py`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, redirect_stderr
from pathlib import Path
from typing import Any

import anyio

from tests.helpers import needs_mcp
from tests.helpers.commands import API_KEY, as_the_user
from tests.helpers.images import png

pytestmark = needs_mcp


@asynccontextmanager
async def connected(env: Mapping[str, str], cwd: Path, errlog: Any) -> AsyncIterator[Any]:
    """A client session with the server `apimart mcp` serves (no flags: the environment
    and the config file name the key and the service), its standard error to `errlog`."""
    import mcp

    from apimart_cli.mcp_server import Tools, build_server

    with as_the_user(env, cwd), redirect_stderr(errlog):
        async with mcp.Client(build_server(Tools())) as session:
            yield session


def call(
    env: Mapping[str, str], cwd: Path, tmp_path: Path, *calls: tuple[str, dict[str, Any]]
) -> list[Any]:
    """Each (tool, arguments) in one session; their results, and no key anywhere."""

    async def main() -> list[Any]:
        with (tmp_path / "mcp-stderr.log").open("w") as errlog:
            async with connected(env, cwd, errlog) as session:
                return [await session.call_tool(name, arguments) for name, arguments in calls]

    results: list[Any] = anyio.run(main)
    for result in results:
        assert API_KEY not in result.model_dump_json()
    assert API_KEY not in (tmp_path / "mcp-stderr.log").read_text()
    return results


def text(result: Any) -> str:
    return "".join(block.text for block in result.content)


def test_the_tools_an_agent_sees(env: dict[str, str], tmp_path: Path) -> None:
    async def main() -> Any:
        with (tmp_path / "err.log").open("w") as errlog:
            async with connected(env, tmp_path, errlog) as session:
                return await session.list_tools()

    tools = {tool.name: tool for tool in anyio.run(main).tools}

    assert set(tools) == {
        "generate",
        "status",
        "wait",
        "download",
        "balance",
        "history",
        "upload",
        "models",
        "resend",
    }
    assert tools["generate"].input_schema["required"] == ["prompt"]
    assert tools["status"].input_schema["required"] == ["task_ids"]
    for tool in tools.values():
        assert tool.description, f"{tool.name} has no description an agent can act on"
        assert tool.input_schema["type"] == "object"


def test_balance(env: dict[str, str], tmp_path: Path) -> None:
    (result,) = call(env, tmp_path, tmp_path, ("balance", {}))

    assert not result.is_error, text(result)
    assert result.structured_content["remain_balance"] is not None
    assert json.loads(text(result)) == result.structured_content


def test_a_failure_is_a_result_with_the_error_as_data(env: dict[str, str], tmp_path: Path) -> None:
    env = {key: value for key, value in env.items() if key != "APIMART_API_KEY"}

    balance, history = call(env, tmp_path, tmp_path, ("balance", {}), ("history", {}))

    assert balance.is_error
    assert text(balance).startswith("Error: No API key.\n")
    assert balance.structured_content["error"]["exit_code"] == 3
    assert not history.is_error, "the server goes on after a failure"


def test_the_key_echoed_by_the_service_never_reaches_the_agent(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    from apimart_cli.sandbox import Fault

    sandbox.inject(Fault("echo_key", path="/v1/balance", status=401))

    (result,) = call(env, tmp_path, tmp_path, ("balance", {}))  # `call` checks for the key

    assert result.is_error
    assert result.structured_content["error"]["exit_code"] == 3
    assert "[API key]" in text(result), "the echo arrived, with the key cut out"


def test_generate_without_wait_then_wait_then_download(env: dict[str, str], tmp_path: Path) -> None:
    (submitted,) = call(env, tmp_path, tmp_path, ("generate", {"prompt": "a fox", "wait": False}))
    (task_id,) = submitted.structured_content["task_ids"]
    assert "tasks" not in submitted.structured_content

    waited, again = call(
        env,
        tmp_path,
        tmp_path,
        ("wait", {"task_ids": [task_id], "output_dir": str(tmp_path / "a")}),
        ("download", {"task_ids": [task_id], "output_dir": str(tmp_path / "b")}),
    )

    assert not waited.is_error, text(waited)
    assert not again.is_error, text(again)
    (first,) = waited.structured_content["tasks"][0]["files"]
    (second,) = again.structured_content["tasks"][0]["files"]
    assert Path(first).read_bytes() == Path(second).read_bytes()


def test_bad_input_is_refused_before_anything_is_sent(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    size, ids, docs = call(
        env,
        tmp_path,
        tmp_path,
        ("generate", {"prompt": "a fox", "size": "7:5"}),
        ("status", {"task_ids": ["../etc"]}),
        ("models", {"docs": True}),  # docs of which model?
    )

    assert size.is_error and size.structured_content["error"]["exit_code"] == 2
    assert "7:5" in text(size)
    assert ids.is_error and ids.structured_content["error"]["exit_code"] == 2
    assert docs.is_error and docs.structured_content["error"]["exit_code"] == 2
    assert "`docs` needs a `model`" in text(docs)
    assert sandbox.submissions() == []


def test_an_unknown_task_is_an_error_in_its_place(env: dict[str, str], tmp_path: Path) -> None:
    (result,) = call(env, tmp_path, tmp_path, ("status", {"task_ids": ["task_nope"]}))

    assert result.is_error  # every task of the call failed: the call failed
    (task,) = result.structured_content["tasks"]
    assert task["task_id"] == "task_nope" and task["error"]["exit_code"] == 1


def test_a_timeout_returns_the_ids_to_resume(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    sandbox.configure(duration=600)

    (result,) = call(env, tmp_path, tmp_path, ("generate", {"prompt": "a fox", "timeout": 2}))

    assert result.is_error
    error = result.structured_content["error"]
    assert error["exit_code"] == 124 and error["retryable"] is True
    (task_id,) = result.structured_content["task_ids"]
    assert error["task_ids"] == [task_id]


def test_upload_then_generate_from_the_url_and_a_second_model_with_a_param(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    from tests.helpers.images import png_size

    reference = tmp_path / "sketch.png"
    reference.write_bytes(png(64, 64))

    models, schema, uploaded = call(
        env,
        tmp_path,
        tmp_path,
        ("models", {}),
        ("models", {"model": "gpt-image-2-official"}),
        ("upload", {"paths": [str(reference)]}),
    )
    ids = [model["id"] for model in models.structured_content["models"]]
    assert "gpt-image-2-official" in ids
    assert "quality" in json.dumps(schema.structured_content["schema"])
    (upload,) = uploaded.structured_content["uploads"]

    good, bad = call(
        env,
        tmp_path,
        tmp_path,
        (
            "generate",
            {
                "prompt": "ink it",
                "images": [upload["url"]],
                "model": "gpt-image-2-official",
                "params": {"quality": "high"},
                "output_dir": str(tmp_path / "out"),
            },
        ),
        (
            "generate",
            {"prompt": "ink it", "model": "gpt-image-2-official", "params": {"quality": "ultra"}},
        ),
    )

    assert not good.is_error, text(good)
    (path,) = good.structured_content["tasks"][0]["files"]
    assert png_size(Path(path))
    sent = sandbox.submissions()[-1].json
    assert sent["quality"] == "high" and sent["image_urls"] == [upload["url"]]
    assert bad.is_error and bad.structured_content["error"]["exit_code"] == 2
    assert "quality" in text(bad)
    assert len(sandbox.submissions()) == 1, "the refused one was never sent"


def test_references_upload_sends_a_local_file_by_url(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    reference = tmp_path / "sketch.png"
    reference.write_bytes(png(64, 64))

    (result,) = call(
        env,
        tmp_path,
        tmp_path,
        (
            "generate",
            {"prompt": "ink it", "images": [str(reference)], "references": "upload", "wait": False},
        ),
    )

    assert not result.is_error, text(result)
    (url,) = sandbox.submissions()[-1].json["image_urls"]
    assert url.startswith("http") and len(sandbox.uploads) == 1


def test_an_unknown_outcome_is_resent_with_its_key_and_paid_for_once(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    from apimart_cli.sandbox import Fault

    sandbox.inject(Fault("after_create", method="POST", path="/v1/images/generations"))
    (lost,) = call(env, tmp_path, tmp_path, ("generate", {"prompt": "a fox", "wait": False}))
    assert lost.is_error
    key = lost.structured_content["error"]["idempotency_key"]
    assert f"apimart resend {key}" in text(lost)

    resent, again = call(env, tmp_path, tmp_path, ("resend", {"keys": [key]}), ("resend", {}))

    assert not resent.is_error, text(resent)
    [made] = sandbox.submissions()
    assert resent.structured_content == {
        "submissions": [{"idempotency_key": key, "task_ids": [made.task_id]}]
    }
    assert again.structured_content == {"submissions": []}, "nothing is left unknown"


def test_generate_with_a_video_model_saves_the_video_and_refuses_what_it_cannot_save(
    env: dict[str, str], tmp_path: Path
) -> None:
    from apimart_cli.integrity import flaw
    from apimart_cli.sandbox.rules import SPEECH_MODEL, VIDEO_MODEL

    out = tmp_path / "out"
    video, speech = call(
        env,
        tmp_path,
        tmp_path,
        (
            "generate",
            {
                "prompt": "waves",
                "model": VIDEO_MODEL,
                "params": {"duration": 4},
                "output_dir": str(out),
            },
        ),
        ("generate", {"prompt": "a song", "model": SPEECH_MODEL, "output_dir": str(out)}),
    )
    assert not video.is_error, text(video)
    (task,) = video.structured_content["tasks"]
    (path,) = task["files"]
    assert path.endswith(".mp4") and flaw(Path(path).read_bytes(), to_the_end=True) is None
    assert speech.is_error
    error = speech.structured_content["error"]
    assert error["exit_code"] == 2 and "speech_generation" in error["message"]


def test_an_argument_the_tool_does_not_take_is_refused_before_anything_is_sent(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    # A misspelt or invented argument would otherwise be dropped, and the task paid for
    # made without it (16:9 asked for, a square made).
    generate, history = call(
        env,
        tmp_path,
        tmp_path,
        ("generate", {"prompt": "a fox", "aspect_ratio": "16:9", "wait": False}),
        ("history", {"limit": 5, "pending": True, "state": "failed"}),
    )

    for result, tool, name in (
        (generate, "generate", "aspect_ratio"),
        (history, "history", "state"),
    ):
        assert result.is_error
        error = result.structured_content["error"]
        assert error["exit_code"] == 2 and error["retryable"] is False
        assert error["message"].startswith(f"Bad arguments to `{tool}`: {name}: ")
    assert "size" in generate.structured_content["error"]["message"], "names what it takes"
    assert sandbox.submissions() == []


def test_the_input_schemas_take_no_other_arguments(env: dict[str, str], tmp_path: Path) -> None:
    async def main() -> Any:
        with (tmp_path / "err.log").open("w") as errlog:
            async with connected(env, tmp_path, errlog) as session:
                return await session.list_tools()

    for tool in anyio.run(main).tools:
        assert tool.input_schema.get("additionalProperties") is False, tool.name


def test_an_unknown_tool_is_the_same_error_object(env: dict[str, str], tmp_path: Path) -> None:
    (result,) = call(env, tmp_path, tmp_path, ("generate_image", {"prompt": "a fox"}))

    assert result.is_error
    error = result.structured_content["error"]
    assert error["exit_code"] == 2 and error["retryable"] is False
    assert "generate_image" in error["message"] and "generate" in error.get("hint", "")


def test_an_output_dir_the_agent_cannot_mean_is_refused_before_anything_is_sent(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    # Relative to the server's own working folder, which the agent does not know (often
    # `/`); or with a control character (a NUL the system refuses, an escape sequence).
    cwd = tmp_path / "server"
    cwd.mkdir()
    folders = ["out", "../../../etc/x", "", ".", str(tmp_path / "a\x00b"), str(tmp_path / "a\nb")]
    folders += [str(tmp_path / "a\x1b[31mb"), "~no-such-user-here/out"]

    results = call(
        env,
        cwd,
        tmp_path,
        *(("generate", {"prompt": "a fox", "output_dir": folder}) for folder in folders),
        ("wait", {"task_ids": ["task_x"], "output_dir": "out"}),
        ("download", {"task_ids": ["task_x"], "output_dir": "out"}),
    )

    for folder, result in zip([*folders, "out", "out"], results, strict=True):
        assert result.is_error, folder
        error = result.structured_content["error"]
        assert error["exit_code"] == 2, (folder, error)
        assert "Internal error" not in error["message"]
    assert "absolute" in results[0].structured_content["error"]["message"]
    assert sandbox.requests == [], "nothing sent"
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "mcp-stderr.log",
        "server",
    ]


def test_too_many_task_ids_are_refused_before_anything_is_sent(
    env: dict[str, str], sandbox: Any, tmp_path: Path
) -> None:
    ids = [f"task_{index:026d}" for index in range(10_000)]
    keys = [f"00000000-0000-4000-8000-{index:012d}" for index in range(10_000)]

    results = call(
        env,
        tmp_path,
        tmp_path,
        ("status", {"task_ids": ids}),
        ("wait", {"task_ids": ids, "output_dir": str(tmp_path / "out")}),
        ("download", {"task_ids": ids, "output_dir": str(tmp_path / "out")}),
        ("resend", {"keys": keys}),
        ("upload", {"paths": [str(tmp_path / f"{index}.png") for index in range(10_000)]}),
    )

    for result in results:
        assert result.is_error
        error = result.structured_content["error"]
        assert error["exit_code"] == 2 and "at most 1000" in error["message"], error
        assert len(result.model_dump_json()) < 2000, "the ids are not echoed back"
    assert sandbox.requests == [], "nothing sent"


def test_history_quotes_a_huge_prompt_cut_short(env: dict[str, str], tmp_path: Path) -> None:
    # The API states no limit on a prompt; a megabyte one is sent and kept whole, but
    # each `history` call would hand it back (twice: as text and as data) to the agent.
    prompt = "a fox " * 200_000

    submitted, history = call(
        env,
        tmp_path,
        tmp_path,
        ("generate", {"prompt": prompt, "wait": False}),
        ("history", {}),
    )

    assert not submitted.is_error, text(submitted)
    assert len(history.model_dump_json()) < 20_000
    [task] = history.structured_content["tasks"]
    assert (
        task["prompt"].startswith("a fox a fox") and f"({len(prompt)} characters)" in task["prompt"]
    )
