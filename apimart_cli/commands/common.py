"""What every command shares: the global options, the error funnel, task ids."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar, overload

import typer

from apimart_cli import console
from apimart_cli.errors import ApimartError, ExitCode, UsageError, interrupted_code

if TYPE_CHECKING:
    from apimart_cli.app import Ui
    from apimart_cli.engine import Outcome
    from apimart_cli.history import History
    from apimart_cli.preview import Previewer
    from apimart_cli.retry import Deadline
    from apimart_cli.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class AppState:
    """The global options, given before the command."""

    api_key: str | None = None
    base_url: str | None = None
    verbose: bool = False
    quiet: bool = False
    sandbox: bool = False  # --sandbox: base_url is a sandbox that ends with this command

    def settings(
        self,
        output: Path | None = None,
        *,
        references: str | None = None,
        metadata: bool | None = None,
        preview: bool | None = None,
    ) -> Settings:
        """The settings in effect; the arguments are the command's own flags (None: not given)."""
        from apimart_cli.settings import Source, resolve

        settings = resolve(
            **self.flags(),
            output_dir=str(output) if output is not None else None,
            references=references,
            metadata=metadata,
            preview=preview,
            info=console.info,
            warn=console.warn,
        )
        if self.sandbox:  # the base URL is the sandbox this command started
            sources = {**settings.sources, "base_url": Source("flag", "--sandbox")}
            settings = replace(settings, sources=sources)
        return settings

    def flags(self) -> dict[str, str | None]:
        """The settings given as global options, by config key."""
        return {"api_key": self.api_key, "base_url": self.base_url}

    def ui(self) -> Ui:
        """Where the library's words go: standard error, requests only with --verbose."""
        return terminal_ui(verbose=self.verbose)

    def resume(
        self, output: Path | None, *, download: bool = True, as_json: bool = False
    ) -> Callable[[list[str]], str] | None:
        """What makes the command that resumes a wait; None under --sandbox, whose
        tasks end with the command."""
        if self.sandbox:
            return None
        from apimart_cli.engine import resume_hint

        return functools.partial(
            resume_hint, output=output, base_url=self.base_url, download=download, as_json=as_json
        )


def state(ctx: typer.Context) -> AppState:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, AppState) else AppState()


def terminal_ui(*, verbose: bool = False) -> Ui:
    """The console as the library's `Ui`."""
    from apimart_cli.app import Ui

    debug = console.debug if verbose else None
    return Ui(console.info, console.warn, console.hide, console.redact, debug)


@overload
def open_history(*, deadline: Deadline | None = None) -> History: ...
@overload
def open_history(*, required: bool, deadline: Deadline | None = None) -> History | None: ...
def open_history(*, required: bool = True, deadline: Deadline | None = None) -> History | None:
    """The task history (`app.open_history`, its warning on standard error)."""
    from apimart_cli.app import open_history

    return open_history(terminal_ui(), required=required, deadline=deadline)


def open_saved_files(outcome: Outcome) -> None:
    """`--open`: every image the run saved, in the desktop's viewer."""
    from apimart_cli.opening import open_files

    open_files([path for paths in outcome.files.values() for path in paths], note=console.warn)


def previewer(wanted: bool) -> Previewer | None:
    """`--preview`: what draws each image on standard error, where it can; a note says
    why not."""
    if not wanted:
        return None
    from apimart_cli.preview import previewer

    shown = not console.is_quiet()
    # Where it cannot draw, one note says why (previews were asked for).
    return previewer(shown, is_terminal=console.is_terminal(sys.stderr), note=console.info)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """The one funnel from errors to a message on standard error and an exit code.

    A command's `--json` (its `as_json` parameter) makes the error data as well.
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except ApimartError as error:
            console.report_error(error, as_json=bool(kwargs.get("as_json")))
            raise typer.Exit(int(error.exit_code)) from None
        except KeyboardInterrupt as interrupt:
            code = interrupted_code(interrupt)
            console.warn("Terminated." if code == ExitCode.TERMINATED else "Interrupted.")
            raise typer.Exit(int(code)) from None

    return run


def ids_from_stdin() -> Iterator[str]:
    """Lines of standard input as they arrive, stripped, blank ones skipped."""
    for line in sys.stdin:
        if line.strip():
            yield line.strip()


def wants_stdin(task_ids: list[str] | None) -> bool:
    """No ids, or '-': the ids come from standard input."""
    return not task_ids or task_ids == ["-"]


def read_task_ids(task_ids: list[str] | None) -> list[str]:
    """All the ids, from the arguments or standard input, checked before anything is sent."""
    from apimart_cli.models import validate_task_id

    if wants_stdin(task_ids):
        if console.is_terminal(sys.stdin):
            raise UsageError(
                "No task ids given.", "Pass them as arguments, or pipe them in, one per line."
            )
        task_ids = list(ids_from_stdin())
        if not task_ids:
            raise UsageError("No task ids on standard input.")
    assert task_ids is not None
    return list(dict.fromkeys(validate_task_id(task_id) for task_id in task_ids))
