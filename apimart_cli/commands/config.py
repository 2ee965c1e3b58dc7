"""`apimart config`: the settings in effect, and the config file that holds some of them."""

import sys
from typing import Annotated, Optional

import typer

from apimart_cli import config_file, console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.commands.options import COMMAND_TIMEOUT, JsonOpt, TimeoutOpt
from apimart_cli.constants import SETTING_KEYS
from apimart_cli.errors import ConfigError, ExitCode, UsageError, interruption

HELP = "See the settings in effect, and store them in the config file."
_EXAMPLES = """

\b
    apimart config set api_key        # asks for it, unseen
    apimart config set output_dir ~/Pictures/apimart
    apimart config list               # every setting, its value and its source
"""
app = typer.Typer(help=HELP + _EXAMPLES, short_help=HELP, no_args_is_help=True)

KeyArg = Annotated[str, typer.Argument(help=f"One of: {', '.join(SETTING_KEYS)}.")]
RevealOpt = Annotated[bool, typer.Option("--reveal", help="Show the API key unmasked.")]


def _read_secret(key: str) -> str:
    """A value from a hidden prompt on a terminal, else the first line of standard input."""
    if console.is_terminal(sys.stdin):
        try:
            label = "API key (typing is hidden)" if key == "api_key" else f"{key} (hidden)"
            value: str = typer.prompt(label, hide_input=True, err=True)
        except typer.Abort as abort:  # Ctrl-C, SIGTERM (143) or end of input at the prompt
            raise (interruption(abort) or KeyboardInterrupt()) from None
    else:
        value = sys.stdin.readline()
    return value.strip()


@app.command("set", short_help="Store a setting.")
@handles_errors
def set_(
    ctx: typer.Context,
    key: KeyArg,
    value: Annotated[
        Optional[str],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(help="The value; for api_key, leave it out to type it unseen."),
    ] = None,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Store api_key without asking the service.")
    ] = False,
    timeout: TimeoutOpt = COMMAND_TIMEOUT,
) -> None:
    """Store a setting. With no VALUE, read it from a hidden prompt or standard input.

    Setting api_key asks the service (the balance call) whether it accepts the
    key: a key it refuses is not stored (exit 3).

    \b
        apimart config set api_key      # prompts: the key stays out of shell history
        apimart config set output_dir ~/Pictures/apimart
        apimart config set references upload
    """
    from apimart_cli import settings

    item = settings.setting(key)
    if value is None:
        value = _read_secret(key)
    parsed = item.parse(value, info=console.info)
    if parsed is None:
        raise UsageError(f"No value given for {key}.")
    if item.secret:
        console.hide(str(parsed))
        settings.check_sendable_key(str(parsed))  # never stored, to fail every command after
    if item.key == "api_key" and not no_check:
        _check_key(ctx, str(parsed), timeout)
    path = config_file.config_path()
    stored = config_file.load(path)
    stored[key] = parsed
    config_file.save(path, stored)
    console.info(f"Saved {key} in {path}")


def _check_key(ctx: typer.Context, key: str, timeout: float) -> None:
    """Ask the service whether it takes ``key``; refused: exit 3, unanswered: a note."""
    from dataclasses import replace

    from apimart_cli.app import balance
    from apimart_cli.deadline import Deadline
    from apimart_cli.errors import ApimartError, AuthError

    app_state = state(ctx)
    in_effect = replace(app_state.settings(), api_key=key)
    try:
        balance(in_effect, app_state.ui(), deadline=Deadline.after(timeout))
    except ApimartError as error:
        if error.exit_code == ExitCode.AUTH:
            raise AuthError(
                f"{in_effect.base_url} refused this key ({error.message}); it was not saved.",
                "Copy it again from https://apimart.ai/keys, or store it as it is"
                " with `apimart config set api_key --no-check`.",
            ) from None
        console.warn(f"Could not check the key with {in_effect.base_url}: {error.message}")
        return
    console.info(f"{in_effect.base_url} accepted the key.")


@app.command(short_help="Print a setting's value in effect (the API key masked).")
@handles_errors
def get(ctx: typer.Context, key: KeyArg, reveal: RevealOpt = False) -> None:
    """Print a setting's value in effect (the API key masked unless --reveal).

    \b
        apimart config get base_url
    """
    from apimart_cli import settings

    item = settings.setting(key)
    found = settings.in_effect(state(ctx).flags(), info=console.info, warn=console.warn)[item.key]
    if found.value is None:
        raise ConfigError(
            f"{key} is not set.",
            f"Set it with `apimart config set {key}` or {item.env}.",
        )
    console.data(item.display(found.value, reveal=reveal))


@app.command(short_help="Remove a setting from the config file.")
@handles_errors
def unset(key: KeyArg) -> None:
    """Remove a setting from the config file (also one the tool does not know).

    \b
        apimart config unset output_dir
    """
    path = config_file.config_path()
    stored = config_file.load(path)
    if key not in stored:
        from apimart_cli import settings

        settings.setting(key)  # an unknown key that is not in the file either: say so
        return
    del stored[key]
    config_file.save(path, stored)
    console.info(f"Removed {key} from {path}")


@app.command("list", short_help="Print every setting in effect and where it came from.")
@handles_errors
def list_(ctx: typer.Context, reveal: RevealOpt = False, as_json: JsonOpt = False) -> None:
    """Print every setting's value in effect and where it came from.

    The source is the flag, the environment variable, the config file or the default.

    \b
        apimart config list
    """
    from apimart_cli import settings

    effect = settings.in_effect(state(ctx).flags(), info=console.info, warn=console.warn)
    for found in effect.values():
        shown = found.setting.display(found.value, reveal=reveal)
        if as_json:
            value = shown if isinstance(found.value, str) else found.value
            console.data_json(
                {
                    "key": found.setting.key,
                    "value": value,
                    "source": found.source.kind,
                    "from": found.source.name,
                }
            )
        else:
            console.data(f"{found.setting.key} = {shown or '(not set)'}  ({found.source})")


@app.command(short_help="Print the config file's path.")
@handles_errors
def path() -> None:
    """Print the config file's path (set APIMART_CONFIG to use another).

    \b
        apimart config path
    """
    console.data(str(config_file.config_path()))
