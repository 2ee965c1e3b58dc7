"""Faults: one-shot misbehaviours for the next requests that match a method and path.

Each kind, and the fields it reads:

- `status`: an error reply: `status`, `retry_after`, `html` (a gateway's page).
- `after_create`: the submission is carried out (the task exists and completes),
  then a `status` error is the reply.
- `malformed`: 200 with a body cut off in the middle of its JSON.
- `html`: 200 with an HTML page; `content_type`: the same labelled `content_type`.
- `huge`: 200 with a 16 MiB JSON body; `nested`: 200 with JSON `depth` levels deep.
- `drop`: the connection closed without a reply.
- `slow`: the normal reply after `delay` seconds.
- `truncate`: the normal reply's length announced, `cut` of its body sent, closed.
- `short`: `cut` of the normal reply's body, sent whole with its own length (a
  host that serves a file cut short as if it were all there).
- `unsized`: the normal reply with no Content-Length, `cut` of its body sent, closed.
- `stall`: the normal reply's length announced, `cut` of its body sent, then
  nothing for `delay` seconds (0: until the client or the sandbox hangs up).
- `drip`: `size` bytes announced (at least the normal body, padded with spaces),
  sent one byte every `interval` seconds.
- `drip_headers`: the status line, then a header sent one byte every `interval`
  seconds that never ends (until the client or the sandbox hangs up).
- `throttle`: the normal reply sent at `rate` bytes per second.
- `gzip`: the normal reply's body gzip-compressed, with `Content-Encoding: gzip`.
- `swap`: the image changes for good (another picture, another ETag) first.
- `garbage`: the body replaced by a PNG signature and random bytes, as long.
- `task_id`: the reply's task id replaced by the template `task_id`, where `{id}`
  is the real id, `{other}` a fresh valid id and `{key}` the bearer key sent.
- `echo_key`: a `status` error whose message echoes the bearer key sent.
- `error_in_200`: HTTP 200 whose body is an error with the code `status`, in the
  `shape` "code" (`{"code", "message", "data": null}`), "msg" (`{"code", "msg"}`)
  or "success" (`{"success": false, "message"}`); nothing is carried out.
- `model_error`: HTTP `status` (a 503, say) whose error is a model problem, its
  `error_code` `model_not_found` (or another, such as `unsupported_generation_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

FAULT_KINDS = frozenset(
    {
        "status",
        "malformed",
        "drop",
        "slow",
        "truncate",
        "short",
        "after_create",
        "html",
        "content_type",
        "huge",
        "nested",
        "unsized",
        "stall",
        "drip",
        "drip_headers",
        "throttle",
        "gzip",
        "swap",
        "garbage",
        "task_id",
        "echo_key",
        "error_in_200",
        "model_error",
    }
)
ERROR_SHAPES = frozenset({"code", "msg", "success"})
_INT_FIELDS = ("times", "status", "size", "depth")
_NUMBER_FIELDS = ("delay", "cut", "interval", "rate")


@dataclass
class Fault:
    """A one-shot misbehaviour for the next `times` requests matching method and path prefix."""

    kind: str  # one of FAULT_KINDS
    method: str = "GET"
    path: str = "/"  # a prefix: "/v1/tasks/", "/v1/images/generations", "/f/" (image host)
    times: int = 1
    status: int = 500  # for "status", "after_create" and "echo_key"
    retry_after: str | None = None  # Retry-After for "status"
    html: bool = False  # "status" with a gateway's HTML page instead of JSON
    delay: float = 0.0  # for "slow" and "stall"
    content_type: str = "text/html"  # for "content_type"
    cut: float = 0.5  # the share of the body "truncate", "short", "unsized" and "stall" send
    size: int = 1024 * 1024  # the bytes "drip" announces
    interval: float = 1.0  # seconds between the bytes of "drip" and "drip_headers"
    rate: float = 1024.0  # bytes per second for "throttle"
    depth: int = 100_000  # levels of "nested"
    task_id: str = "{other}"  # the id "task_id" puts in the reply
    shape: str = "code"  # the body of "error_in_200": "code", "msg" or "success"
    error_code: str = "model_not_found"  # the code of "model_error"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(sorted(FAULT_KINDS))}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"fault {name} must be an integer")
        for name in _NUMBER_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"fault {name} must be a number of at least 0")
        if not 0 <= self.cut <= 1:
            raise ValueError("fault cut must be from 0 to 1")
        if self.shape not in ERROR_SHAPES:
            raise ValueError(f"fault shape must be one of {', '.join(sorted(ERROR_SHAPES))}")
        if not isinstance(self.error_code, str) or not self.error_code:
            raise ValueError("fault error_code must be a non-empty string")
        if self.kind == "throttle" and self.rate <= 0:
            raise ValueError("fault rate must be above 0")

    def matches(self, method: str, path: str) -> bool:
        return self.method.upper() == method and path.startswith(self.path)

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """A fault from the admin endpoint's JSON; ValueError names what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        try:
            return cls(**data)
        except TypeError as exc:  # "kind" missing
            raise ValueError(str(exc)) from None
