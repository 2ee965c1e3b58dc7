"""`apimart config`: read and write the config file."""

import sys
from typing import Annotated, Optional

import typer

from apimart_cli import config_file, console
from apimart_cli.commands.common import handles_errors
from apimart_cli.errors import ConfigError, UsageError

app = typer.Typer(
    help="Read and write the settings in the config file.",
    no_args_is_help=True,
)

KeyArg = Annotated[str, typer.Argument(help=f"One of: {', '.join(config_file.KEYS)}.")]
RevealOpt = Annotated[bool, typer.Option("--reveal", help="Show the API key unmasked.")]


def _read_secret(key: str) -> str:
    """A value from a hidden prompt on a terminal, else the first line of standard input."""
    if console.is_terminal(sys.stdin):
        value: str = typer.prompt(key, hide_input=True, err=True)
    else:
        value = sys.stdin.readline()
    return value.strip()


@app.command("set")
@handles_errors
def set_(
    key: KeyArg,
    value: Annotated[
        Optional[str],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(help="The value; for api_key, leave it out to type it unseen."),
    ] = None,
) -> None:
    """Store a setting. With no VALUE, read it from a hidden prompt or standard input.

    \b
        apimart config set api_key      # prompts: the key stays out of shell history
        apimart config set output_dir ~/Pictures/apimart
    """
    config_file.check_key(key)
    if value is None:
        value = _read_secret(key)
    if not value:
        raise UsageError(f"No value given for {key}.")
    if key == "base_url":
        from apimart_cli.settings import check_base_url

        value = check_base_url(value)
    path = config_file.config_path()
    settings = config_file.load(path)
    settings[key] = value
    config_file.save(path, settings)
    console.info(f"Saved {key} in {path}")


@app.command()
@handles_errors
def get(key: KeyArg, reveal: RevealOpt = False) -> None:
    """Print a setting (the API key masked unless --reveal).

    apimart config get base_url
    """
    config_file.check_key(key)
    path = config_file.config_path()
    value = config_file.load(path).get(key)
    if value is None:
        raise ConfigError(f"{key} is not set in {path}.")
    console.data(config_file.display(key, value, reveal=reveal))


@app.command()
@handles_errors
def unset(key: KeyArg) -> None:
    """Remove a setting from the config file.

    apimart config unset output_dir
    """
    config_file.check_key(key)
    path = config_file.config_path()
    settings = config_file.load(path)
    if settings.pop(key, None) is not None:
        config_file.save(path, settings)
        console.info(f"Removed {key} from {path}")


@app.command("list")
@handles_errors
def list_(reveal: RevealOpt = False) -> None:
    """Print every setting in the config file as `key = value`.

    apimart config list
    """
    for key, value in config_file.load(config_file.config_path()).items():
        console.data(f"{key} = {config_file.display(key, value, reveal=reveal)}")


@app.command()
@handles_errors
def path() -> None:
    """Print the config file's path (set APIMART_CONFIG to use another).

    apimart config path
    """
    console.data(str(config_file.config_path()))
