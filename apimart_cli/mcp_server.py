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

from apimart_cli import __version__, console
from apimart_cli.constants import DEFAULT_COMMAND_TIMEOUT as COMMAND_TIMEOUT
from apimart_cli.constants import DEFAULT_MODEL
from apimart_cli.constants import DEFAULT_WAIT_TIMEOUT as WAIT_TIMEOUT
from apimart_cli.errors import (
    ApimartError,
    ExitCode,
    HistoryError,
    UsageError,
)
from apimart_cli.models import FINAL_STATES

if TYPE_CHECKING:
    from apimart_cli.client import Client
    from apimart_cli.downloads import SavedFile
    from apimart_cli.history import History
    from apimart_cli.models import Task
    from apimart_cli.settings import Settings


INSTRUCTIONS = """\
Generates images with APIMart's image models (gpt-image-2 by default) and saves
them to disk. `generate` submits a task, waits for it and returns the saved
files' paths; a task id is kept in the local history before it is returned, so
nothing paid for is lost: `history` with `pending` lists what is unfinished and
`wait` resumes it. An error result's `error` object says whether trying again
may help (`retryable`) and, for a submission whose outcome is unknown, its
`idempotency_key`: never resubmit such a prompt without checking `history`.
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
        self._notify(round(min(done, total), 4), total, console.redact(message))

    def _share(self, task: Task) -> float:
        """How far along a task is (0-1) by its latest reply."""
        from apimart_cli.progress import waiting_label

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
                self._task(task_id)["error"] = console.redact(error.message)

    def history_failed(self, error: HistoryError) -> None:
        self._tell(f"Warning: {error.message} The history is not updated further.")

    def finished(self, task: Task, files: Sequence[Path]) -> None:
        with self._lock:
            entry = self._task(task.task_id)
            entry["status"] = task.status
            entry["files"] = [str(path) for path in files]
            if task.error_message:
                entry["error"] = console.redact(task.error_message)
            self._shares[task.task_id] = 1.0
        self._tell(f"{task.task_id}: {task.status}")

    def image(self, escape: str) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


class Tools:
    """What the tools do, apart from the protocol: plain functions of plain values.

    `api_key` and `base_url` are the server's own flags (`apimart --api-key ... mcp`);
    the environment and the config file supply the rest, as for any command.
    """

    def __init__(self, *, api_key: str | None = None, base_url: str | None = None) -> None:
        self._api_key = api_key
        self._base_url = base_url

    def _settings(self, output_dir: str | None = None, references: str | None = None) -> Settings:
        from apimart_cli.settings import resolve

        settings = resolve(
            api_key=self._api_key,
            base_url=self._base_url,
            output_dir=output_dir,
            references=references,
            info=console.info,  # standard error: the protocol has standard output
            warn=console.warn,
        )
        source = settings.sources.get("output_dir")
        if output_dir is None and (source is None or source.kind == "default"):
            # Not the server's working folder (often `/` for a desktop agent).
            from dataclasses import replace

            settings = replace(settings, output_dir=default_output_dir())
        return settings

    def _client(self, settings: Settings, timeout: float) -> Client:
        from apimart_cli.client import Client
        from apimart_cli.retry import Deadline

        key = settings.require_key()
        console.hide(key)
        return Client(settings.base_url, key, deadline=Deadline.after(timeout))

    def generate(
        self,
        prompt: str,
        *,
        size: str | None,
        resolution: str | None,
        n: int | None,
        images: list[str],
        model: str,
        params: dict[str, Any],
        output_dir: str | None,
        references: str | None,
        wait: bool,
        timeout: float,
        notify: Callable[[float, float, str], None],
    ) -> dict[str, Any]:
        from apimart_cli.history import History
        from apimart_cli.payload import build_request
        from apimart_cli.references import ReferenceSender

        request = build_request(
            prompt,
            model=model,
            size=size,
            resolution=resolution,
            n=n,
            images=images,
            params=params,
        )
        notes = list(request.notes)
        settings = self._settings(output_dir, references=references)
        client = self._client(settings, timeout)
        # What `generate` does: the model's schema checked, the references sent as the
        # setting says (uploaded instead where the service refuses base64), and the
        # output folder checked, all before anything is paid for.
        sender = ReferenceSender(client, settings.references, info=notes.append, warn=notes.append)
        with History.open() as history:
            try:
                if wait:
                    from apimart_cli.downloads import Downloader

                    Downloader(client, settings.output_dir).prepare()
                task_ids = sender.send(history, request)
            finally:
                if not wait:
                    client.close()
            result: dict[str, Any] = {"task_ids": task_ids, "notes": notes}
            if not wait:
                return result
            try:
                return {**result, **self._wait(client, settings, task_ids, history, notify)}
            except _RunFailed as failure:  # the ids are paid for: the agent gets them still
                failure.result = {**result, **failure.result}
                raise

    def wait(
        self,
        task_ids: list[str],
        *,
        output_dir: str | None,
        timeout: float,
        once: bool = False,
        notify: Callable[[float, float, str], None],
    ) -> dict[str, Any]:
        from apimart_cli.history import History

        ids = _checked(task_ids)
        settings = self._settings(output_dir)
        client = self._client(settings, timeout)
        with History.open() as history:
            return self._wait(client, settings, ids, history, notify, once=once)

    def _wait(
        self,
        client: Client,
        settings: Settings,
        task_ids: list[str],
        history: History,
        notify: Callable[[float, float, str], None],
        *,
        once: bool = False,
    ) -> dict[str, Any]:
        """The engine `wait` runs, its images stamped as the settings say; the tasks as
        they ended, or the error of the worst of them with what was done all the same."""
        from apimart_cli.engine import WaitPlan, wait_for_tasks
        from apimart_cli.progress import save_hooks

        progress = Progress(notify)
        plan = WaitPlan(client.deadline, folder=settings.output_dir, once=once)
        hooks = save_hooks(None, stamp=settings.metadata)
        outcome = wait_for_tasks(
            client, plan, progress, task_ids=task_ids, history=history, hooks=hooks
        )
        tasks = [progress.tasks.get(task_id, {"task_id": task_id}) for task_id in task_ids]
        costs = [task["cost"] for task in tasks if isinstance(task.get("cost"), (int, float))]
        result: dict[str, Any] = {"tasks": tasks, "cost": sum(costs) if costs else None}
        error = outcome.as_error("Call `wait` with the task_ids to resume; nothing is lost.")
        if error is not None:
            raise _RunFailed(error, result)
        return result

    def status(self, task_ids: list[str], *, timeout: float) -> dict[str, Any]:
        from apimart_cli.engine import query_tasks
        from apimart_cli.history import History

        ids = _checked(task_ids)
        with self._client(self._settings(), timeout) as client, History.open() as history:
            answers = query_tasks(client, ids, history=history)
        tasks: list[dict[str, Any]] = []
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
        with self._client(self._settings(), timeout) as client:
            return dict(client.balance())

    def upload(self, paths: list[str], *, timeout: float) -> dict[str, Any]:
        from apimart_cli.references import check_upload_files, upload_files

        references = check_upload_files(paths)  # every file checked before any is sent
        notes: list[str] = []
        with self._client(self._settings(), timeout) as client:
            uploads = list(upload_files(client, references, warn=notes.append))
        return {"uploads": uploads, "notes": notes}

    def models(self, model: str | None, *, timeout: float) -> dict[str, Any]:
        from apimart_cli.schema import model_info

        notes: list[str] = []
        with self._client(self._settings(), timeout) as client:
            if model is None:
                return {"models": list(client.list_models())}
            return {"schema": model_info(client, model, warn=notes.append), "notes": notes}

    def history(self, limit: int, pending: bool) -> dict[str, Any]:
        from apimart_cli.history import History

        with History.open() as history:
            records = history.list(pending_only=pending, limit=limit)
        return {
            "tasks": [
                {
                    "task_id": record.task_id,
                    "base_url": record.base_url,
                    "sandbox": record.sandbox,
                    "state": record.state,
                    "prompt": record.prompt,
                    "created_at": record.created_at,
                    "cost": record.cost,
                    "files": list(record.files),
                    "error": record.error,
                    "idempotency_key": record.idempotency_key,
                }
                for record in records
            ]
        }


def default_output_dir() -> Path:
    """Where images go without `output_dir` or the setting: the user's pictures folder."""
    from platformdirs import user_pictures_dir

    return Path(user_pictures_dir()) / "apimart"


class _RunFailed(ApimartError):
    """A wait that did not end well: the worst error, and what was done all the same."""

    def __init__(self, error: ApimartError, result: dict[str, Any]) -> None:
        super().__init__(
            error.message, error.hint, exit_code=error.exit_code, task_ids=error.task_ids
        )
        self.result = result


def _checked(task_ids: list[str]) -> list[str]:
    from apimart_cli.models import validate_task_id

    if not task_ids:
        raise UsageError("No task ids given.", "Pass the ids `generate` returned.")
    return list(dict.fromkeys(validate_task_id(task_id) for task_id in task_ids))


def _result(data: dict[str, Any]) -> CallToolResult:
    """A tool's reply: the object as structured content, and as JSON text for older clients."""
    text = console.redact(json.dumps(data, ensure_ascii=False, indent=2))
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


def _failure(error: ApimartError) -> CallToolResult:
    """An error as a person sees it (message, then hint) and as `--json` prints it, with
    what was done all the same (a wait's saved files) where there is any."""
    error = _agent_error(error)
    lines = [f"Error: {error.message}", *([error.hint] if error.hint else [])]
    data = {"error": error.as_data(), **getattr(error, "result", {})}
    text = console.redact("\n".join(lines))
    structured = json.loads(console.redact(json.dumps(data, ensure_ascii=False)))
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


TaskIds = Annotated[
    list[str],
    Field(min_length=1, description="Task ids, as `generate` returned them (task_...)."),
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
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=True)


class _Server(MCPServer):
    """The SDK's server, with arguments its schema refuses answered as every failure is."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
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

    @tool(ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def generate(
        prompt: Annotated[str, Field(min_length=1, description="What to draw.")],
        ctx: Context,
        size: Annotated[
            str | None,
            Field(
                description="auto, a ratio such as 16:9 (1:1 3:2 2:3 4:3 3:4 5:4 4:5 16:9 "
                "9:16 2:1 1:2 3:1 1:3 21:9 9:21), or pixels WxH."
            ),
        ] = None,
        resolution: Annotated[str | None, Field(description="1k, 2k or 4k.")] = None,
        n: Annotated[
            int | None, Field(ge=1, description="Images to make (gpt-image-2: 1-10).")
        ] = None,
        images: Annotated[
            list[str] | None,
            Field(
                max_length=16,
                description="Reference images: local file paths, http(s) "
                "URLs or data: URIs (image-to-image). At most 16.",
            ),
        ] = None,
        model: Annotated[str, Field(description="The model; `models` lists them.")] = DEFAULT_MODEL,
        params: Annotated[
            dict[str, Any] | None,
            Field(
                description="Extra body fields the model accepts (see its schema in "
                '`models`), e.g. {"quality": "high"}.'
            ),
        ] = None,
        output_dir: OutputDir = None,
        references: Annotated[
            Literal["inline", "upload"] | None,
            Field(
                description="How local reference files travel: inline (base64 in the "
                "request) or upload (sent once, then by URL). Default: the setting."
            ),
        ] = None,
        wait: Annotated[
            bool, Field(description="Wait for the images and save them (else return the ids).")
        ] = True,
        timeout: Timeout = WAIT_TIMEOUT,
    ) -> CallToolResult:
        """Generate images from a prompt (and optional reference images); by default wait
        for them and save them to disk.

        Returns the task ids, and with wait each task's status, saved file paths and
        cost. The task is paid for when submitted: if the call fails after that, the
        error carries the task ids (resume with `wait`) or, where the outcome is
        unknown, an idempotency_key (check `history` before submitting again).
        """
        call = functools.partial(
            tools.generate,
            prompt,
            size=size,
            resolution=resolution,
            n=n,
            images=images or [],
            model=model,
            params=params or {},
            output_dir=output_dir,
            references=references,
            wait=wait,
            timeout=timeout,
            notify=_notifier(ctx),
        )
        return await _call(call)

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
        unknown: check before submitting that prompt again.
        """
        return await _call(functools.partial(tools.history, limit, pending))

    @tool(ToolAnnotations(destructive_hint=False, open_world_hint=True))
    async def upload(
        paths: Annotated[
            list[str],
            Field(min_length=1, description="Local PNG, JPEG, WebP or GIF files, 20 MiB at most."),
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
        timeout: Timeout = COMMAND_TIMEOUT,
    ) -> CallToolResult:
        """The service's image models; with `model`, the JSON schema of the fields it
        accepts (pass extra ones to `generate` as `params`)."""
        return await _call(functools.partial(tools.models, model, timeout=timeout))

    return server


def serve(*, api_key: str | None = None, base_url: str | None = None) -> None:
    """Serve until the client closes standard input."""
    build_server(Tools(api_key=api_key, base_url=base_url)).run("stdio")
