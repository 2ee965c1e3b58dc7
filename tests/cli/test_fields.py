"""Every request field of the table reaches the request the same way from the command
line, a batch line and an MCP call: none of the three can forget one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apimart_cli.batch.jobs import parse_line
from apimart_cli.fields import FIELDS, RequestField
from tests.cli.conftest import run

PROMPT = "a fox in the snow"
# One value for each field (and any other field its meaning needs), as JSON gives it.
SAMPLES: dict[str, dict[str, Any]] = {
    "prompt": {},
    "size": {"size": "16:9"},
    "resolution": {"resolution": "2k"},
    "n": {"n": 3},
    "images": {"images": ["https://example.com/a.png", "https://example.com/b.png"]},
    "official_fallback": {"official_fallback": True},
    "force_size": {"force_size": True, "size": "16x9"},
    "model": {"model": "gpt-image-2-official"},
    "params": {"params": {"quality": "high", "seed": 42}},
}


def test_every_field_has_a_sample() -> None:
    assert set(SAMPLES) == {row.name for row in FIELDS}


def test_every_field_is_an_option_of_generate() -> None:
    import typer

    from apimart_cli.commands.generate import generate

    app = typer.Typer()
    app.command()(generate)
    command = typer.main.get_command(app)
    words = {word for param in command.params for word in param.opts}
    for row in FIELDS:
        if row.name == "prompt":
            assert "prompt" in words
        else:
            assert set(row.option.split("/")) <= words, f"generate has no {row.option}"


def command_line(row: RequestField, value: Any) -> list[str]:
    """The words that give `value` to the field's option, as the table names it."""
    option = row.option.split("/")[-1]
    if row.type is bool:
        return [option] if value else []
    if row.type is list:
        return [word for item in value for word in (option, item)]
    if row.type is dict:
        return [word for k, v in value.items() for word in (option, f"{k}={json.dumps(v)}")]
    return [option, str(value)]


def cli_body(fields: dict[str, Any]) -> dict[str, Any]:
    by_name = {row.name: row for row in FIELDS}
    words = [word for name, value in fields.items() for word in command_line(by_name[name], value)]
    result = run("generate", PROMPT, *words, "--dry-run")
    assert result.exit_code == 0, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def batch_body(fields: dict[str, Any], folder: Path) -> dict[str, Any]:
    job = parse_line(1, json.dumps({"prompt": PROMPT, **fields}), folder)
    return job.request.dry_run()


def mcp_body(fields: dict[str, Any]) -> dict[str, Any]:
    """The body the MCP `generate` tool builds from its arguments, as the agent sends them
    (validated against the tool's schema); here it stops short of sending it."""
    pytest.importorskip("mcp", reason="the mcp extra is not installed")
    import anyio

    from apimart_cli.mcp_server import Tools, build_server
    from apimart_cli.payload import request_from

    class DryTools(Tools):
        def generate(self, fields: dict[str, Any], **_: Any) -> dict[str, Any]:  # type: ignore[override]
            return {"body": request_from(fields).dry_run()}

    async def call() -> Any:
        server = build_server(DryTools())
        return await server.call_tool("generate", {"prompt": PROMPT, **fields})

    result = anyio.run(call)
    assert not result.is_error, result.content
    body: dict[str, Any] = result.structured_content["body"]
    return body


@pytest.mark.parametrize("name", [row.name for row in FIELDS])
def test_a_field_makes_the_same_body_from_all_three(name: str, tmp_path: Path) -> None:
    fields = SAMPLES[name]

    body = cli_body(fields)

    assert body["prompt"] == PROMPT
    assert batch_body(fields, tmp_path) == body
    assert mcp_body(fields) == body
    for key, value in fields.items():
        row = next(row for row in FIELDS if row.name == key)
        if row.body == "image_urls":
            assert body["image_urls"] == value
        elif row.body is not None:
            assert body[row.body] == value
        elif key == "params":
            assert {k: body[k] for k in value} == value


@pytest.mark.parametrize("row", [row for row in FIELDS if row.body], ids=lambda row: row.name)
def test_a_field_an_option_sets_is_refused_as_an_extra_one(row: RequestField) -> None:
    result = run("generate", PROMPT, "--param", f"{row.body}=1", "--dry-run")

    assert result.exit_code == 2
    assert f"{row.option} sets it" in result.stderr
