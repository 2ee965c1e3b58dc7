"""The tool's commands for AI agents: a Model Context Protocol server on stdin/stdout.

Imported only by `apimart mcp` (it needs the optional `mcp` extra). Each tool
calls the library the commands call, so an agent gets the same promises a person
does: every submission in the history before its id is returned, no paid request
resent blindly, the limits checked before anything is sent, the deadlines, and
the API key in no reply. A failure is a tool result with `isError` set, carrying
the message and hint a person would see and the same error object `--json`
prints; it never ends the server.

The library is blocking, so each call runs on a worker thread; progress comes
back to the agent as the protocol's progress notifications, and a cancelled
call stops waiting at once (the work in flight ends at its own deadline).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import Field, ValidationError

from apimart_cli import __version__, secrets
from apimart_cli.constants import DEFAULT_COMMAND_TIMEOUT as COMMAND_TIMEOUT
from apimart_cli.constants import DEFAULT_WAIT_TIMEOUT as WAIT_TIMEOUT
from apimart_cli.errors import (
    MAX_SHOWN_CHARS,
    ApimartError,
    ExitCode,
    HistoryError,
    UsageError,
    clipped,
    printable,
    shown,
)
from apimart_cli.fields import BY_NAME, FIELDS
from apimart_cli.tasks import FINAL_STATES, waiting_label

if TYPE_CHECKING:
    from apimart_cli.app import Ui
    from apimart_cli.downloads import SavedFile
    from apimart_cli.engine import Outcome
    from apimart_cli.settings import Settings
    from apimart_cli.tasks import Task


INSTRUCTIONS = """\
Generates images with APIMart's image models (gpt-image-2 by default), and videos
with its video models (`models` with a model shows its operation), and saves
them to disk. `generate` submits a task, waits for it and returns the saved
files' paths; a task id is kept in the local history before it is returned, so
nothing paid for is lost: `history` with `pending` lists what is unfinished and
`wait` resumes it. An error result's `error` object says whether trying again
may help (`retryable`) and, for a submission whose outcome is unknown, its
`idempotency_key`: `resend` it (the service answers with the task it made, or
makes it once); never submit such a prompt anew.
"""


class Progress:
    """The engine's reporter for a tool call: it keeps what the agent gets back, and
    tells the agent how far along the call is (`notify(done, total, message)`).

    `done` is a real fraction of the work, in tasks: each task counts its share as
    it moves (the service's progress, else the time against its estimate, then its
    downloads' bytes), not only once it ends."""

    # A task's share of the bar once it is completed: the rest is its downloads.
    WAITED = 0.8

    def __init__(self, notify: Callable[[float, float, str], None]) -> None:
        self._notify = notify
        self._lock = threading.Lock()
        self.tasks: dict[str, dict[str, Any]] = {}  # what the agent gets, by task id
        self.errors: dict[str, ApimartError] = {}
        self._shares: dict[str, float] = {}  # each task's work done, 0-1
        self._bytes: dict[tuple[str, int], float] = {}  # each image's download, 0-1
        self._replies: dict[str, Task] = {}  # each task's latest reply
        self._last_bytes_note = 0.0

    def _tell(self, message: str) -> None:
        with self._lock:
            total = len(self.tasks)
            done = 0.0
            for task_id, task in self.tasks.items():
                if task["status"] in FINAL_STATES and task["status"] != "completed":
                    done += 1
                else:
                    done += self._shares.get(task_id, 0.0)
        self._notify(round(min(done, total), 4), total, secrets.redact(message))

    def _share(self, task: Task) -> float:
        """How far along a task is (0-1) by its latest reply."""
        if task.status == "completed":
            images = [v for (t, _), v in self._bytes.items() if t == task.task_id]
            got = sum(images) / max(len(task.images), len(images), 1)
            return min(self.WAITED + (1 - self.WAITED) * got, 0.99)  # 1 once it is finished
        if task.finished:
            return 1.0
        now = time.time()
        fraction = waiting_label(task, now=now, seen=now)[1]
        return self.WAITED * (fraction or 0.0)

    def _task(self, task_id: str) -> dict[str, Any]:
        return self.tasks.setdefault(task_id, {"task_id": task_id, "status": "submitted"})

    def added(self, task_id: str) -> None:
        with self._lock:
            self._task(task_id)

    def update(self, task: Task) -> None:
        with self._lock:
            entry = self._task(task.task_id)
            entry["status"] = task.status
            if task.cost is not None:
                entry["cost"] = task.cost
            self._shares[task.task_id] = self._share(task)
            self._replies[task.task_id] = task
        progress = f" {task.progress}%" if task.progress else ""
        self._tell(f"{task.task_id}: {task.status}{progress}")

    def transferred(self, task_id: str, index: int, received: int, total: int | None) -> None:
        """A download's bytes move the fraction on: told at most twice a second."""
        now = time.monotonic()
        with self._lock:
            self._bytes[(task_id, index)] = received / total if total else 0.0
            task = self._replies.get(task_id)
            if task is not None:
                self._shares[task_id] = self._share(task)
            if now - self._last_bytes_note < 0.5:
                return
            self._last_bytes_note = now
        self._tell(f"{task_id}: downloading its images")

    def saved(self, task: Task, index: int, saved: SavedFile) -> None:
        with self._lock:
            self._task(task.task_id).setdefault("files", []).append(str(saved.path))
            self._bytes[(task.task_id, index)] = 1.0
            self._shares[task.task_id] = self._share(task)
        self._tell(f"{task.task_id}: saved {saved.path}")

    def failed(self, task_id: str | None, error: ApimartError) -> None:
        if task_id is not None:
            with self._lock:
                self.errors.setdefault(task_id, error)
                self._task(task_id)["error"] = secrets.redact(error.message)

    def history_failed(self, error: HistoryError) -> None:
        self._tell(f"Warning: {error.message} The history is not updated further.")

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        with self._lock:
            entry = self._task(task.task_id)
            entry["status"] = task.status
            entry["files"] = [str(path) for path in files]
            if task.error_message:
                entry["error"] = secrets.redact(task.error_message)
            self._shares[task.task_id] = 1.0
        self._tell(f"{task.task_id}: {task.status}")

    def image(self, escape: str) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class Tools:
    """What the tools do, apart from the protocol: the use-cases of `app`, their
    results as plain data.

    `api_key` and `base_url` are the server's own flags (`apimart --api-key ... mcp`);
    the environment and the config file supply the rest, as for any command.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        info: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
        debug: Callable[[str], None] | None = None,
    ) -> None:
        """`info`, `warn` and `debug` (None: no trace) write to standard error, the
        protocol having standard output: the `apimart mcp` command hands in its own;
        by default, each line redacted."""
        self._api_key = api_key
        self._base_url = base_url
        self._info = info or _to_stderr
        self._warn = warn or _to_stderr
        self._debug = debug

    def _settings(
        self,
        output_dir: str | None = None,
        references: str | None = None,
        metadata: bool | None = None,
    ) -> Settings:
        from apimart_cli.settings import resolve

        if output_dir is not None:
            _check_folder(output_dir)
        settings = resolve(
            api_key=self._api_key,
            base_url=self._base_url,
            output_dir=output_dir,
            references=references,
            metadata=metadata,
            info=self._info,
            warn=self._warn,
        )
        source = settings.sources.get("output_dir")
        if output_dir is None and (source is None or source.kind == "default"):
            # Not the server's working folder (often `/` for a desktop agent).
            from dataclasses import replace

            settings = replace(settings, output_dir=default_output_dir())
        return settings

    def _ui(self, notes: list[str] | None = None) -> Ui:
        """Standard error, as for a command; or, where the agent gets them, `notes`."""
        from apimart_cli.app import Ui

        info = self._info if notes is None else notes.append
        warn = self._warn if notes is None else notes.append
        return Ui(info, warn, secrets.hide, secrets.redact, self._debug)

    def generate(
        self,
        fields: dict[str, Any],
        *,
        output_dir: str | None,
        references: str | None,
        metadata: bool | None,
        wait: bool,
        timeout: float,
        notify: Callable[[float, float, str], None],
    ) -> dict[str, Any]:
        """`fields` are the request's, as `fields.FIELDS` names them."""
        from apimart_cli import app
        from apimart_cli.deadline import Deadline
        from apimart_cli.engine import WaitPlan
        from apimart_cli.payload import request_from

        request = request_from(fields)
        notes = list(request.notes)
        settings = self._settings(output_dir, references=references, metadata=metadata)
        deadline = Deadline.after(timeout)
        progress = Progress(notify)
        waiting = None
        if wait:
            plan = WaitPlan(deadline, folder=settings.output_dir)
            waiting = app.Waiting(plan, lambda: progress, stamp=settings.metadata)
        generated = app.generate(
            request, settings, self._ui(notes), deadline=deadline, waiting=waiting
        )
        result: dict[str, Any] = {"task_ids": generated.task_ids, "notes": notes}
        if generated.outcome is None:
            return result
        return _ended(progress, generated.task_ids, generated.outcome, result)

    def wait(
        self,
        task_ids: list[str],
        *,
        output_dir: str | None,
        timeout: float,
        once: bool = False,
        notify: Callable[[float, float, str], None],
    ) -> dict[str, Any]:
        from apimart_cli import app
        from apimart_cli.deadline import Deadline
        from apimart_cli.engine import WaitPlan

        ids = _checked(task_ids)
        settings = self._settings(output_dir)
        progress = Progress(notify)
        plan = WaitPlan(Deadline.after(timeout), folder=settings.output_dir, once=once)
        waiting = app.Waiting(plan, lambda: progress, stamp=settings.metadata)
        outcome = app.wait(settings, self._ui(), waiting, task_ids=ids)
        return _ended(progress, ids, outcome, {})

    def status(self, task_ids: list[str], *, timeout: float) -> dict[str, Any]:
        from apimart_cli import app
        from apimart_cli.deadline import Deadline

        ids = _checked(task_ids)
        result = app.status(self._settings(), self._ui(), ids, deadline=Deadline.after(timeout))
        tasks: list[dict[str, Any]] = []
        answers = result.answers
        failed: list[str] = []
        worst = ExitCode.OK
        for task_id, answer in zip(ids, answers, strict=True):
            if isinstance(answer, ApimartError):
                tasks.append({"task_id": task_id, "error": answer.as_data()})
                failed.append(task_id)
                worst = max(worst, answer.exit_code)
            else:
                tasks.append(dict(answer.raw))
                if answer.status in ("failed", "cancelled"):
                    failed.append(task_id)
                    worst = max(worst, ExitCode.FAILED)
        if len(failed) == len(ids):  # nothing in the call went well: a failure, as data too
            what = "could not be queried or failed" if len(ids) > 1 else "could not be queried"
            if len(ids) == 1 and not isinstance(answers[0], ApimartError):
                what = f"is {answers[0].status}"
            error = ApimartError(
                f"{'Every task' if len(ids) > 1 else 'The task'} {what}.",
                exit_code=worst,
                task_ids=failed,
            )
            raise _RunFailed(error, {"tasks": tasks})
        return {"tasks": tasks}

    def balance(self, *, timeout: float) -> dict[str, Any]:
        from apimart_cli import app
        from apimart_cli.deadline import Deadline

        return app.balance(self._settings(), self._ui(), deadline=Deadline.after(timeout))

    def upload(self, paths: list[str], *, timeout: float) -> dict[str, Any]:
        from apimart_cli import app
        from apimart_cli.deadline import Deadline

        notes: list[str] = []
        deadline = Deadline.after(timeout)
        uploads = app.upload(self._settings(), self._ui(notes), paths, deadline=deadline)
        return {"uploads": list(uploads), "notes": notes}

    def models(self, model: str | None, *, timeout: float, docs: bool = False) -> dict[str, Any]:
        from apimart_cli import app
        from apimart_cli.deadline import Deadline

        if docs and model is None:
            raise UsageError("`docs` needs a `model`: the id of the model to document.")
        notes: list[str] = []
        deadline = Deadline.after(timeout)
        if model is None:
            return {"models": app.models(self._settings(), self._ui(), deadline=deadline)}
        if docs:
            found = app.model_docs(self._settings(), self._ui(notes), model, deadline=deadline)
            return {"docs": found, "notes": notes}
        schema = app.model_schema(self._settings(), self._ui(notes), model, deadline=deadline)
        return {"schema": schema, "notes": notes}

    def resend(self, keys: list[str], *, timeout: float) -> dict[str, Any]:
        from apimart_cli import app
        from apimart_cli.deadline import Deadline

        # A bad key: nothing sent.
        deadline = Deadline.after(timeout)
        results = list(app.resend(self._settings(), self._ui(), keys, deadline=deadline))
        submissions = [
            {"idempotency_key": r.key, "task_ids": list(r.task_ids)}
            if r.error is None
            else {"idempotency_key": r.key, "error": r.error.as_data()}
            for r in results
        ]
        errors = [r.error for r in results if r.error is not None]
        if errors and len(errors) == len(results):  # every one failed: a failure
            worst = max(errors, key=lambda error: error.exit_code)
            raise _RunFailed(worst, {"submissions": submissions})
        return {"submissions": submissions}

    def history(self, limit: int, pending: bool) -> dict[str, Any]:
        from apimart_cli import app

        records = app.history_records(self._ui(), pending=pending, limit=limit)
        return {
            "tasks": [
                {
                    "task_id": record.task_id,
                    "base_url": record.base_url,
                    "sandbox": record.sandbox,
                    "state": record.state,
                    # A prompt may be megabytes (the API states no limit): each call
                    # would hand it all back.
                    "prompt": clipped(record.prompt, MAX_PROMPT_CHARS),
                    "created_at": record.created_at,
                    "cost": record.cost,
                    "files": list(record.files),
                    "error": record.error,
                    "idempotency_key": record.idempotency_key,
                }
                for record in records
            ]
        }


# The most characters of a prompt `history` quotes.
MAX_PROMPT_CHARS = 2000


def _ended(
    progress: Progress, task_ids: list[str], outcome: Outcome, result: dict[str, Any]
) -> dict[str, Any]:
    """What a wait came to: each task as it ended, with `result`; or the error of the
    worst of them, carrying what was done all the same (the ids are paid for)."""
    tasks = [progress.tasks.get(task_id, {"task_id": task_id}) for task_id in task_ids]
    costs = [task["cost"] for task in tasks if isinstance(task.get("cost"), (int, float))]
    result = {**result, "tasks": tasks, "cost": sum(costs) if costs else None}
    error = outcome.as_error("Call `wait` with the task_ids to resume; nothing is lost.")
    if error is not None:
        raise _RunFailed(error, result)
    return result


def _to_stderr(message: str) -> None:
    """A line on standard error, redacted."""
    import sys

    print(secrets.redact(message), file=sys.stderr, flush=True)


def default_output_dir() -> Path:
    """Where images go without `output_dir` or the setting: the user's pictures folder."""
    from platformdirs import user_pictures_dir

    return Path(user_pictures_dir()) / "apimart"


def _check_folder(output_dir: str) -> None:
    """An `output_dir` argument the server can take as the agent means it, else UsageError
    (nothing sent): absolute (a relative one would be the server's own working folder's,
    which the agent does not know, often `/`), with no control character (a NUL the
    system refuses, an escape sequence, a line break)."""
    from apimart_cli.config_file import user_path

    if printable(output_dir) != output_dir:
        raise UsageError(
            f"The output_dir {shown(output_dir)} has a control character.",
            "Give the folder's absolute path, without control characters.",
        )
    if not user_path(output_dir, "The output_dir").is_absolute():
        raise UsageError(
            f"The output_dir {shown(output_dir)} is not an absolute path: it would be taken "
            "from the server's own working folder, which is not the agent's.",
            "Give the folder's absolute path (or one under ~), or leave `output_dir` out.",
        )


class _RunFailed(ApimartError):
    """A wait that did not end well: the worst error, and what was done all the same."""

    def __init__(self, error: ApimartError, result: dict[str, Any]) -> None:
        super().__init__(
            error.message, error.hint, exit_code=error.exit_code, task_ids=error.task_ids
        )
        self.result = result


def _checked(task_ids: list[str]) -> list[str]:
    from apimart_cli.tasks import validate_task_id

    if not task_ids:
        raise UsageError("No task ids given.", "Pass the ids `generate` returned.")
    return list(dict.fromkeys(validate_task_id(task_id) for task_id in task_ids))


def _result(data: dict[str, Any]) -> CallToolResult:
    """A tool's reply: the object as structured content, and as JSON text for older clients."""
    text = secrets.redact(json.dumps(data, ensure_ascii=False, indent=2))
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=json.loads(text)
    )


# The command line's flags that a tool has as an argument; a hint naming any other
# flag is about something the tools cannot do, and is left out.
_ARGUMENTS = {
    "-i/--image": "`images`",
    "--image": "`images`",
    "--param": "`params`",
    "--refs": "`references`",
    "-s/--size": "`size`",
    "--size": "`size`",
    "-r/--resolution": "`resolution`",
    "--resolution": "`resolution`",
    "-n/--n": "`n`",
    "--model": "`model`",
    "--timeout": "`timeout`",
    "-o/--output": "`output_dir`",
    "--output": "`output_dir`",
}
_FLAG = re.compile(r"(?<![\w-])(?:-[a-z]/)?--[a-z][a-z-]*")


def for_agents(text: str) -> str:
    """A message or hint as an agent can act on it: the flags a tool has as arguments
    named as those arguments, and any sentence about another flag left out."""
    kept = []
    for part in re.split(r"(?<=[.;])\s+", text):
        part = _FLAG.sub(lambda match: _ARGUMENTS.get(match.group(0), match.group(0)), part)
        if not _FLAG.search(part):
            kept.append(part)
    result = " ".join(kept).strip()
    return result[:-1] + "." if result.endswith(";") else result


def _agent_error(error: ApimartError) -> ApimartError:
    """`error` with its message and hint put as `for_agents` does (the same class kept)."""
    hint = for_agents(error.hint) if error.hint else None
    if error.message == for_agents(error.message) and hint == error.hint:
        return error
    error.message, error.hint = for_agents(error.message) or error.message, hint or None
    return error


def _argument_error(tool: str, error: ValidationError) -> ApimartError:
    """Arguments the schema refuses, as every other failure: one error object naming
    each bad argument and what it takes (never the values, which may be large)."""
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'arguments'}: {item['msg']}"
        for item in error.errors()
    ]
    return UsageError(
        f"Bad arguments to `{tool}`: {'; '.join(problems)}.",
        "Call it again with the arguments its input schema describes.",
    )


def _unknown_arguments(tool: str, unknown: list[str], taken: list[str]) -> ApimartError:
    """Arguments the tool does not have: each named (cut short, no control character),
    with the ones it takes."""
    problems = [f"{clipped(printable(name), MAX_SHOWN_CHARS)}: not an argument" for name in unknown]
    if len(problems) > 10:
        problems[10:] = [f"and {len(problems) - 10} more"]
    return UsageError(
        f"Bad arguments to `{tool}`: {'; '.join(problems)}. It takes {', '.join(taken)}.",
        "Call it again with the arguments its input schema describes.",
    )


def _failure(error: ApimartError) -> CallToolResult:
    """An error as a person sees it (message, then hint) and as `--json` prints it, with
    what was done all the same (a wait's saved files) where there is any."""
    error = _agent_error(error)
    lines = [f"Error: {error.message}", *([error.hint] if error.hint else [])]
    data = {"error": error.as_data(), **getattr(error, "result", {})}
    text = secrets.redact("\n".join(lines))
    structured = json.loads(secrets.redact(json.dumps(data, ensure_ascii=False)))
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=structured, is_error=True
    )


async def _call(function: Callable[[], dict[str, Any]]) -> CallToolResult:
    """Run `function` on a worker thread; its result or its error, as the agent reads them.

    A cancelled call stops waiting at once. What it started goes on to its own
    deadline on the abandoned thread, so images already paid for are still saved
    and recorded (the history's `pending` tasks show the rest).
    """
    try:
        return _result(await anyio.to_thread.run_sync(function, abandon_on_cancel=True))
    except ApimartError as error:
        return _failure(error)
    except Exception as error:  # a bug: one line for the agent, never a crash of the server
        return _failure(ApimartError(f"Internal error ({type(error).__name__}). Please report it."))


def _notifier(ctx: Context) -> Callable[[float, float, str], None]:
    """Progress notifications from a worker thread (no-ops where the agent asked for none)."""

    # The event loop's token: a download's own thread (not anyio's) can reach it too.
    token = anyio.lowlevel.current_token()

    def notify(done: float, total: float, message: str) -> None:
        # Nothing to tell once the call was cancelled or the session is gone.
        with contextlib.suppress(Exception):
            anyio.from_thread.run(ctx.report_progress, done, total or None, message, token=token)

    return notify


# The most items of a list argument: each is a request (or a file read), and an agent
# that gathers more than `history` lists at once has made a mistake.
MAX_ITEMS = 1000
TaskIds = Annotated[
    list[str],
    Field(
        min_length=1,
        max_length=MAX_ITEMS,
        description=f"Task ids, as `generate` returned them (task_...); at most {MAX_ITEMS}.",
    ),
]
OutputDir = Annotated[
    str | None,
    Field(
        description="Folder for the images (created if missing). Default: the output_dir "
        "setting, else apimart in the user's pictures folder."
    ),
]
Timeout = Annotated[
    float, Field(gt=0, le=3600, description="Seconds for the whole call, waiting included.")
]
References = Annotated[
    Literal["auto", "inline", "upload"] | None,
    Field(
        description="How local reference files travel: auto (inline until the service "
        "refuses base64, then upload), inline (base64 in the request) or upload (sent "
        "once, then by URL). Default: the setting."
    ),
]
Metadata = Annotated[
    bool | None,
    Field(description="Stamp each PNG with its prompt and settings. Default: the setting (on)."),
]
Wait = Annotated[
    bool, Field(description="Wait for the images and save them (else return the ids).")
]
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True)


_ANNOTATED: Any = Annotated  # a hint made at run time, from the table
_JSON_TYPES: dict[type, Any] = {
    str: str,
    int: int,
    bool: bool,
    list: list[str],
    dict: dict[str, Any],
}


def _generate_signature() -> inspect.Signature:
    """The `generate` tool's arguments: every request field of `fields.FIELDS`, as the
    command line has them, then where and how the images are saved."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter(
            "prompt",
            keyword,
            annotation=Annotated[str, Field(min_length=1, description=BY_NAME["prompt"].help)],
        )
    ]
    for row in FIELDS[1:]:  # the prompt first, as the table has it
        hint = _ANNOTATED[_JSON_TYPES[row.type] | None, Field(description=row.help)]
        parameters.append(
            inspect.Parameter(row.name, keyword, annotation=hint, default=row.default)
        )
    return inspect.Signature(
        [
            *parameters,
            inspect.Parameter("output_dir", keyword, annotation=OutputDir, default=None),
            inspect.Parameter("references", keyword, annotation=References, default=None),
            inspect.Parameter("metadata", keyword, annotation=Metadata, default=None),
            inspect.Parameter("wait", keyword, annotation=Wait, default=True),
            inspect.Parameter("timeout", keyword, annotation=Timeout, default=WAIT_TIMEOUT),
            inspect.Parameter("ctx", keyword, annotation=Context),
        ],
        return_annotation=CallToolResult,
    )


class _Server(MCPServer):
    """The SDK's server, with arguments its schema refuses answered as every failure is.

    The schemas take no other arguments than theirs (`additionalProperties` false): the
    SDK would drop one it does not know, and `generate` pay for a task made without it
    (a misspelt `size`, an invented `aspect_ratio`)."""

    async def list_tools(self) -> Any:
        tools = await super().list_tools()
        for tool in tools:
            tool.input_schema["additionalProperties"] = False
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        schemas = {tool.name: tool.input_schema for tool in await self.list_tools()}
        if name not in schemas:
            return _failure(
                UsageError(
                    f"No tool named {shown(name)}.",
                    f"The tools: {', '.join(f'`{tool}`' for tool in schemas)}.",
                )
            )
        taken = schemas[name].get("properties", {})
        unknown = [argument for argument in arguments if argument not in taken]
        if unknown:
            return _failure(_unknown_arguments(name, unknown, list(taken)))
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            if isinstance(exc, UnexpectedToolError) or not isinstance(
                exc.__cause__, ValidationError
            ):
                raise
            return _failure(_argument_error(name, exc.__cause__))


def build_server(tools: Tools) -> MCPServer:
    server = _Server("apimart", version=__version__, instructions=INSTRUCTIONS)

    def tool(annotations: ToolAnnotations) -> Callable[[Any], Any]:
        """`server.tool`, described by the function's docstring without its indentation."""

        def register(function: Any) -> Any:
            description = inspect.cleandoc(function.__doc__ or "")
            return server.tool(annotations=annotations, description=description)(function)

        return register

    async def generate(ctx: Context, **arguments: Any) -> CallToolResult:
        """Generate images from a prompt (and optional reference images); by default wait
        for them and save them to disk.

        Returns the task ids, and with wait each task's status, saved file paths and
        cost. The task is paid for when submitted: if the call fails after that, the
        error carries the task ids (resume with `wait`) or, where the outcome is
        unknown, an idempotency_key: call `resend` with it, never `generate` again.
        """
        fields = {name: arguments.pop(name) for name in BY_NAME if name in arguments}
        call = functools.partial(tools.generate, fields, **arguments, notify=_notifier(ctx))
        return await _call(call)

    generate.__signature__ = _generate_signature()  # type: ignore[attr-defined]
    tool(ToolAnnotations(destructive_hint=False, open_world_hint=True))(generate)

    @tool(READ_ONLY)
    async def status(task_ids: TaskIds, timeout: Timeout = COMMAND_TIMEOUT) -> CallToolResult:
        """The state of tasks (one request each): status, progress, cost, and result URLs
        once completed. An id the service does not know has an `error` instead."""
        return await _call(functools.partial(tools.status, task_ids, timeout=timeout))

    @tool(ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def wait(
        task_ids: TaskIds,
        ctx: Context,
        output_dir: OutputDir = None,
        timeout: Timeout = WAIT_TIMEOUT,
    ) -> CallToolResult:
        """Wait for tasks to finish and save their images; each task's status, saved file
        paths and cost. Resumes a partial download where an earlier call stopped."""
        call = functools.partial(
            tools.wait, task_ids, output_dir=output_dir, timeout=timeout, notify=_notifier(ctx)
        )
        return await _call(call)

    @tool(ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def download(
        task_ids: TaskIds,
        ctx: Context,
        output_dir: OutputDir = None,
        timeout: Timeout = COMMAND_TIMEOUT,
    ) -> CallToolResult:
        """Save the images of tasks that are already completed, without waiting; a task
        not completed, or whose result URLs expired, is an error."""
        call = functools.partial(
            tools.wait,
            task_ids,
            output_dir=output_dir,
            timeout=timeout,
            once=True,
            notify=_notifier(ctx),
        )
        return await _call(call)

    @tool(READ_ONLY)
    async def balance(timeout: Timeout = COMMAND_TIMEOUT) -> CallToolResult:
        """The API key's remaining and used balance, as the service reports it."""
        return await _call(functools.partial(tools.balance, timeout=timeout))

    @tool(ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def history(
        limit: Annotated[int, Field(ge=1, le=1000, description="At most this many tasks.")] = 20,
        pending: Annotated[bool, Field(description="Only the unfinished tasks.")] = False,
    ) -> CallToolResult:
        """Tasks submitted from this machine, newest first: id, state, prompt, cost, files.

        A task with no id and an idempotency key is a submission whose outcome is
        unknown: `resend` it with that key rather than submitting the prompt again.
        """
        return await _call(functools.partial(tools.history, limit, pending))

    @tool(ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def resend(
        keys: Annotated[
            list[str],
            Field(
                max_length=MAX_ITEMS,
                description="Idempotency keys of submissions whose outcome is unknown "
                f"(from an error's idempotency_key, or `history`); empty: all of them; at "
                f"most {MAX_ITEMS}.",
            ),
        ] = [],  # noqa: B006 - the protocol's default, never mutated
        timeout: Timeout = COMMAND_TIMEOUT,
    ) -> CallToolResult:
        """Send submissions whose outcome is unknown again, each with its own key and
        exactly its first body: the service answers with the task it already made, or
        makes it once, so nothing is paid for twice. Returns each key's task_ids (pass
        them to `wait`), or its error; a 409 means try again shortly."""
        return await _call(functools.partial(tools.resend, list(keys), timeout=timeout))

    @tool(ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def upload(
        paths: Annotated[
            list[str],
            Field(
                min_length=1,
                max_length=MAX_ITEMS,
                description="Local PNG, JPEG, WebP or GIF files, 20 MiB at most each; at most "
                f"{MAX_ITEMS} files.",
            ),
        ],
        timeout: Timeout = COMMAND_TIMEOUT,
    ) -> CallToolResult:
        """Upload local images; each one's public URL (valid 72 hours), to pass to
        `generate` as a reference. Every file is checked before any is sent; a file
        uploaded before whose URL still lives is not sent again."""
        return await _call(functools.partial(tools.upload, paths, timeout=timeout))

    @tool(READ_ONLY)
    async def models(
        model: Annotated[
            str | None, Field(description="A model id: return its input schema instead.")
        ] = None,
        docs: Annotated[
            bool,
            Field(
                description="With `model`: return its documentation (Markdown, the authority "
                "on its fields) instead of its schema."
            ),
        ] = False,
        timeout: Timeout = COMMAND_TIMEOUT,
    ) -> CallToolResult:
        """The service's models (of images, videos and more); with `model`, the JSON
        schema of the fields it accepts (pass extra ones to `generate` as `params`), or
        with `docs` its documentation."""
        return await _call(functools.partial(tools.models, model, timeout=timeout, docs=docs))

    return server


def serve(tools: Tools) -> None:
    """Serve until the client closes standard input."""
    server = build_server(tools)
    quiet_logging()  # after the SDK's own set-up, which turns on INFO
    server.run("stdio")


def quiet_logging() -> None:
    """Log only warnings and errors, to standard error, redacted.

    The SDK logs at INFO from the start, and httpx then logs every request's URL:
    a result URL may carry the key (`?sig=...`), and an agent keeps its server's
    standard error in a log file.
    """
    import logging
    import sys

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(secrets.redacting(sys.stderr))
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("httpx", "httpcore", "mcp"):
        logging.getLogger(name).setLevel(logging.WARNING)
