"""`apimart balance`: what is left to spend."""

from typing import Annotated

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors, state
from apimart_cli.commands.options import COMMAND_TIMEOUT, JsonOpt, TimeoutOpt


@handles_errors
def balance(
    ctx: typer.Context,
    account: Annotated[
        bool, typer.Option("--account", help="The whole account's balance, not this key's.")
    ] = False,
    as_json: JsonOpt = False,
    timeout: TimeoutOpt = COMMAND_TIMEOUT,
) -> None:
    """Show the key's remaining and used balance.

    \b
        apimart balance --json | jq .remain_balance
    """
    from apimart_cli import app as use_cases
    from apimart_cli.deadline import Deadline

    app = state(ctx)
    deadline = Deadline.after(timeout)  # it ends by the deadline
    reply = use_cases.balance(app.settings(), app.ui(), deadline=deadline, account=account)
    if as_json:
        console.data_json(reply)
        return
    remain = reply.get("remain_balance")
    unlimited = remain == -1 or reply.get("unlimited_quota") is True
    # The unit only where the service names one: a bare number is never given a currency.
    named = next((reply[k] for k in ("currency", "unit") if isinstance(reply.get(k), str)), "")
    unit = f" {_shown(named.strip())}" if named.strip() else ""
    console.data(f"remaining\t{'unlimited' if unlimited else f'{_shown(remain)}{unit}'}")
    console.data(f"used\t{_shown(reply.get('used_balance'))}{unit}")
    for key in ("remain_credits", "used_credits"):
        if key in reply:
            console.data(f"{key.replace('_', ' ')}\t{_shown(reply[key])}")


def _shown(value: object) -> str:
    """A value of the reply for the terminal: the service's text can carry escape
    sequences and line breaks, never printed as they are."""
    from apimart_cli.errors import clipped, printable

    return clipped(printable(str(value)), 100)
