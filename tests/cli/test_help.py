"""Help that reads well at any width: examples on lines of their own, summaries whole."""

from __future__ import annotations

import re

import pytest

from tests.cli.conftest import run

EXAMPLES = {
    "generate": [
        'apimart generate "a lighthouse at dawn" -s 16:9 -r 2k --wait -o out/',
        'apimart generate "ink it" -i sketch.png --refs upload',
    ],
    "models": ["apimart models", "apimart models gpt-image-2-official | jq .properties.quality"],
    "config": ["apimart config set api_key", "apimart config list"],
    "balance": ["apimart balance --json | jq .remain_balance"],
}


@pytest.mark.parametrize("columns", ["40", "80", "200"])
@pytest.mark.parametrize("command", sorted(EXAMPLES))
def test_each_example_is_a_line_of_its_own(
    command: str, columns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.stdout.splitlines()]
    for example in EXAMPLES[command]:
        assert any(line.startswith(example) for line in lines), (example, result.stdout)
    # No example runs on into the next: each "apimart" starts a line.
    assert all(line.count("apimart ") <= 1 for line in lines if line.startswith("apimart ")), (
        result.stdout
    )


def _every_command() -> list[list[str]]:
    import typer.main

    from apimart_cli.cli import COMMANDS, GROUPS, whole_app

    commands = [[name] for name in COMMANDS if name not in GROUPS]
    group = typer.main.get_group(whole_app())
    for name in GROUPS:
        subcommands = group.commands[name].commands  # type: ignore[attr-defined]
        commands += [[name, subcommand] for subcommand in subcommands]
    return commands


@pytest.mark.parametrize("command", _every_command(), ids=" ".join)
def test_every_command_has_an_example_in_its_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0, result.output
    # An example: a command line of its own, indented, before the options.
    description = result.stdout.split("Options")[0].splitlines()[1:]
    examples = [line for line in description if re.match(r"\s+(\S+ )*apimart \w", line)]
    assert examples, result.stdout


@pytest.mark.parametrize("columns", ["80", "200"])
def test_the_command_list_never_cuts_a_summary(
    columns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    for args in (["--help"], ["config", "--help"]):
        result = run(*args)
        assert result.exit_code == 0, result.output
        listed = result.stdout.split("Commands:")[1]
        assert "..." not in listed, result.stdout
    assert "with a total of their cost." in " ".join(run("--help").stdout.split())
