"""`apimart completion`: shell completion for bash, zsh and fish."""

from typing import Annotated, Optional

import typer

from apimart_cli import console
from apimart_cli.commands.common import handles_errors

HELP = "Install shell completion for bash, zsh or fish, or print its script."
app = typer.Typer(
    help=HELP
    + """

\b
    apimart completion install            # bash, zsh and fish, where each loads it
    apimart completion install zsh
    apimart completion show bash > /etc/bash_completion.d/apimart
""",
    short_help=HELP,
    no_args_is_help=True,
)

ShellArg = Annotated[str, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")]


@app.command(short_help="Put the completion where each shell loads it; print each path.")
@handles_errors
def install(
    shells: Annotated[
        Optional[list[str]],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Argument(help="bash, zsh or fish (default: all three).", metavar="[SHELL]..."),
    ] = None,
) -> None:
    """Put the completion where each shell loads it; print each path.

    bash: bash-completion's folder in the user's data folder; fish: its completions
    folder; zsh: ~/.zfunc/_apimart (with a note if ~/.zshrc does not put ~/.zfunc
    on $fpath).

    \b
        apimart completion install            # bash, zsh and fish
        apimart completion install fish
    """
    from apimart_cli.completion import SHELLS
    from apimart_cli.completion import install as install_script

    for shell in shells or SHELLS:
        path, todo = install_script(shell)
        console.data(str(path))
        if todo:
            console.warn(f"Note: {todo}")


@app.command(short_help="Print a shell's completion script.")
@handles_errors
def show(shell: ShellArg) -> None:
    """Print a shell's completion script.

    \b
        apimart completion show bash > /etc/bash_completion.d/apimart
        eval "$(apimart completion show bash)"
    """
    from apimart_cli.completion import script_path

    console.data(script_path(shell).read_text(encoding="utf-8").rstrip("\n"))
