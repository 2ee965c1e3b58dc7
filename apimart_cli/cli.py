"""The `apimart` command: global options, and the commands it is made of.

Only Typer and the command modules are imported here; each command imports
what it needs (httpx, rich, sqlite3, ...) in its body, so `apimart --version`
and `--help` stay fast. A run that names a command builds an app with that
command alone (`app_for`): Typer then reads one signature, not fifteen.
"""

import functools
import importlib
from collections.abc import Iterable, Sequence
from typing import IO, Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from apimart_cli import __version__, console

# The commands, in the order `apimart --help` lists them, each with the summary it lists
# (the first paragraph of its help): each is the function of the same name in its module
# of apimart_cli.commands (a group: that module's Typer app, its summary `HELP`).
# Listing them from here imports none of their modules (tests/test_startup.py checks
# each summary against its command's help).
COMMANDS = {
    "generate": "Submit a generation task and print its id.",
    "status": "Show the state of tasks.",
    "wait": "Wait for tasks to finish and save their images.",
    "download": "Download the images of completed tasks; print each saved path.",
    "history": "List the tasks submitted from here, newest first, with a total of their cost.",
    "resend": "Resend submissions whose outcome is unknown, with their keys; print task ids.",
    "batch": "Run many generations from a file of jobs; print each saved path.",
    "gallery": "Write a page of a folder's images (index.html); print its path.",
    "inspect": "Show what made each image: its prompt, fields, task, times and cost.",
    "balance": "Show the key's remaining and used balance.",
    "upload": "Upload images and print each one's URL (valid for 72 hours).",
    "models": "List the service's models, one id per line; with MODEL, print its input schema.",
    "config": "See the settings in effect, and store them in the config file.",
    "sizes": "Print the size x resolution table of the API.",
    "sandbox": "Run a local stand-in for the API: no key, no network, real PNGs.",
    "mcp": "Serve the commands to AI agents over MCP, on stdin and stdout.",
    "completion": "Install shell completion for bash, zsh or fish, or print its script.",
}
# The commands that are groups of their own: each module's Typer `app`, its summary `HELP`.
GROUPS = ("config", "completion")


def new_app(commands: Iterable[str] = tuple(COMMANDS)) -> typer.Typer:
    """The `apimart` app with the global options and `commands`."""
    app = _bare_app(runs=True)
    for name in commands:
        module = importlib.import_module(f"apimart_cli.commands.{name}")
        if name in GROUPS:
            app.add_typer(module.app, name=name)
        else:
            command = getattr(module, name)
            app.command(name, short_help=_summary(command.__doc__))(command)
    return app


def _summary(doc: str | None) -> str:
    """A command's whole first line, for the list of commands: Click would cut it to
    fit the 80 columns it formats help to, whatever the terminal's width."""
    return (doc or "").strip().splitlines()[0]


def listing_app() -> typer.Typer:
    """The app for `apimart --help`, no command or a mistyped one: every command by its
    name and summary, with none of its options, which Typer would read (fifteen
    signatures) only to list the names, and none of their modules imported. Help for
    one command is that command's app."""
    app = _bare_app()
    # As Typer lists the whole app: the commands, then the groups (`config`...).
    for name in [*(name for name in COMMANDS if name not in GROUPS), *GROUPS]:
        summary = COMMANDS[name]
        app.command(name, help=summary, short_help=summary)(_listed)
    return app


def _listed() -> None:
    """A command as `listing_app` lists it; never run (a run names it: `app_for`)."""


class _App(TyperGroup):
    """The `apimart` group: the usage errors Click finds, in the global options and in
    every command under it, told in two lines as every other error is (`_UsageError`).
    (Contexts are `Any` here: Typer's own Click is not public.)"""

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        given = list(args)  # Click's parser consumes `args`
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except typer.TyperException as error:
            raise _UsageError.told(error, given) from None
        ctx.meta[_ARGS] = given
        return ctx

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.TyperException as error:
            raise _UsageError.told(error, ctx.meta.get(_ARGS, [])) from None


_ARGS = "apimart.args"  # the command line, in the root context's `meta`


class _UsageError(typer.BadParameter):
    """A usage error Click found (an unknown option or command, a value of the wrong type,
    a missing argument), printed as the tool prints every error: `Error: ` and what is
    wrong, then what to do (where a global option goes, or how to get help); with
    `--json`, the same as one JSON object. Click's own takes four lines, the usage first.
    Exit 2, as Click's."""

    def __init__(self, message: str, hint: str, args: Sequence[str]) -> None:
        super().__init__(message)
        self.hint = hint
        self.given = list(args[: args.index("--")] if "--" in args else args)

    @classmethod
    def told(cls, error: typer.TyperException, args: Sequence[str]) -> typer.TyperException:
        """`error` to be told in two lines, if it is one of Click's usage errors (exit 2),
        not yet told so, and not the help a group prints when given no command."""
        if (
            isinstance(error, cls)
            or getattr(error, "exit_code", None) != 2
            or not hasattr(error, "format_message")
            or type(error).__name__ == "NoArgsIsHelpError"
        ):
            return error
        args = list(args)
        ctx = getattr(error, "ctx", None)
        if ctx is not None:
            command = ctx.command_path
        else:  # Click names no context for an option missing its value
            position = command_position(args)
            name = args[position] if position is not None else ""
            command = f"apimart {name}" if name in COMMANDS else "apimart"
        hint = f"Try '{command} -h' for help."
        misplaced = misplaced_global_option(args)
        if misplaced is not None and misplaced[0] == getattr(error, "option_name", None):
            hint = _global_option_hint(*misplaced)  # Click's "No such option" for it
        return cls(error.format_message(), hint, args)

    def show(self, file: IO[Any] | None = None) -> None:
        from apimart_cli.errors import UsageError

        for key in _keys_given(self.given):  # a key typed where a value was due
            console.hide(key)
        as_json = "--json" in self.given
        console.report_error(UsageError(self.message, self.hint), as_json=as_json)


def _keys_given(args: Sequence[str]) -> list[str]:
    """The API keys a usage error could quote: APIMART_API_KEY's, the config file's, and
    each `--api-key` value in `args`, before the settings are read (a usage error comes
    first)."""
    import contextlib
    import os

    from apimart_cli import config_file
    from apimart_cli.errors import ApimartError
    from apimart_cli.settings import ENV_API_KEY

    keys = [os.environ.get(ENV_API_KEY, "")]
    with contextlib.suppress(ApimartError):  # a file that cannot be read holds no key to quote
        keys.append(str(config_file.load(config_file.config_path()).get("api_key", "")))
    for position, arg in enumerate(args):
        if arg.startswith("--api-key="):
            keys.append(arg.removeprefix("--api-key="))
        elif arg == "--api-key" and position + 1 < len(args):
            keys.append(args[position + 1])
    return [key for key in keys if key]


def _bare_app(*, runs: bool = False) -> typer.Typer:
    """The `apimart` app with its global options and no command yet. Where it `runs` a
    command, its global options go through the error funnel; the listing app's never
    run (help, a usage error), so it does without (and without its import)."""
    app = typer.Typer(
        cls=_App,
        name="apimart",
        help="Generate images with APIMart's gpt-image-2 from the shell.",
        no_args_is_help=True,
        add_completion=False,
        # Plain help: rendering it with rich would double the time `apimart --help` takes.
        rich_markup_mode=None,
        # Never print a traceback with local variables: one of them could be the API key.
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    if runs:
        from apimart_cli.commands.common import handles_errors

        app.callback()(handles_errors(main_options))
    else:
        app.callback()(main_options)
    return app


def _version(value: bool) -> None:
    if value:
        console.data(f"apimart {__version__}")
        raise typer.Exit()


def main_options(
    ctx: typer.Context,
    api_key: Annotated[
        Optional[str],  # noqa: UP045 - Typer reads this annotation at run time
        typer.Option(
            "--api-key",
            help="API key. [default: $APIMART_API_KEY or the config]",
            show_default=False,
        ),
    ] = None,
    base_url: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--base-url", help="API base URL. [default: https://api.apimart.ai]", show_default=False
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log each request to standard error.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes.")] = False,
    use_sandbox: Annotated[
        bool,
        typer.Option("--sandbox", help="Run against a local sandbox started for this command."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Generate images with APIMart's gpt-image-2 from the shell.

    apimart generate "a red fox in the snow" --wait -o out/
    """
    from apimart_cli.commands.common import AppState

    console.configure(quiet=quiet, verbose=verbose)
    state = AppState(api_key=api_key, base_url=base_url, verbose=verbose, quiet=quiet)
    if use_sandbox:
        from apimart_cli.sandbox import Sandbox

        server = Sandbox().start()
        ctx.call_on_close(server.stop)
        state.base_url, state.api_key, state.sandbox = server.base_url, "sandbox", True
        console.info(f"Using a sandbox at {server.base_url}")
    ctx.obj = state


@functools.cache
def whole_app() -> typer.Typer:
    """The app with every command: for help, a mistyped command, the completions, tests."""
    return new_app()


def __getattr__(name: str) -> typer.Typer:
    """`cli.app` is `whole_app()`, built on first use: a run that names a command never
    imports the other commands' modules (PEP 562)."""
    if name == "app":
        return whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def app_for(args: list[str]) -> typer.Typer:
    """The app that runs `args`: where they name a command, one with that command alone.

    Typer reads the signature of every command it knows on each run; reading one
    instead of fifteen is what keeps a one-liner's start-up close to `import typer`.
    Help, a mistyped command and no command at all get `listing_app`.
    """
    position = command_position(args)
    if position is None or args[position] not in COMMANDS:
        return listing_app()
    return new_app([args[position]])


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM (`timeout`, CI runners, `kill`): unwind like Ctrl-C, with the same records
    and resume hints, and exit 143."""
    from apimart_cli.errors import Terminated

    raise Terminated


# The exit status of a writer whose reader went away (128 + SIGPIPE), as `yes | head` gives.
EXIT_BROKEN_PIPE = 141


# The global options, and whether each takes a value.
GLOBAL_OPTIONS = {
    "--api-key": True,
    "--base-url": True,
    "--verbose": False,
    "-v": False,
    "--quiet": False,
    "-q": False,
    "--sandbox": False,
    "--version": False,
}


def command_position(args: list[str]) -> int | None:
    """Where the command is in `args`: the first word that is neither a global option
    nor its value. None if there is none, or `--` comes first."""
    expects_value = False
    for position, arg in enumerate(args):
        if expects_value:
            expects_value = False
        elif arg == "--":
            return None
        elif arg.startswith("-"):
            expects_value = GLOBAL_OPTIONS.get(arg.split("=", 1)[0], False) and "=" not in arg
        else:
            return position
    return None


def misplaced_global_option(args: list[str]) -> tuple[str, str] | None:
    """A global option given after the command (`apimart generate --api-key x`), and
    that command; None if there is none. Options after `--` are arguments."""
    position = command_position(args)
    if position is None:
        return None
    for arg in args[position + 1 :]:
        if arg == "--":
            return None
        name = arg.split("=", 1)[0]
        if name in GLOBAL_OPTIONS:
            return name, args[position]
    return None


def _global_option_hint(option: str, command: str) -> str:
    """Where a global option given after `command` goes."""
    value = " ..." if GLOBAL_OPTIONS[option] else ""
    return (
        f"{option} is a global option: it goes before the command,"
        f" as in `apimart {option}{value} {command} ...`."
    )


def main() -> None:
    """The console script: run the app; a bug becomes one line, never a traceback."""
    import signal
    import sys

    console.open_missing_streams()  # `apimart ... >&-`: a closed stream is not a crash
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app_for(sys.argv[1:])(prog_name="apimart")  # also as `python -m apimart_cli`
    except SystemExit as exiting:
        if console.stdout_closed():
            raise SystemExit(EXIT_BROKEN_PIPE) from None
        if not exiting.code:  # done (`--help` too): nothing to translate, nothing to import
            raise
        from apimart_cli.errors import ExitCode, interrupted_code, interruption

        interrupt = interruption(exiting)  # one that escaped a command: Typer made it 130
        if exiting.code == ExitCode.INTERRUPTED and interrupt is not None:
            raise SystemExit(int(interrupted_code(interrupt))) from None
        raise
    except Exception as error:  # the last line of defence; ApimartError is handled per command
        console.warn(f"Error: internal error ({type(error).__name__}). Please report it.")
        raise SystemExit(1) from None
