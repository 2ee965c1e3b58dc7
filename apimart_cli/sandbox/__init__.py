"""A local stand-in for the APIMart image API, on loopback, standard library only.

Two origins run in daemon threads: the API (`base_url`) and the image host
(`image_base_url`, another port, like the real storage host). Tasks advance
submitted -> processing -> completed over `SandboxConfig.duration` seconds of
the sandbox's clock, and their images are real PNGs of the size the API's table
gives. Tests inject faults (`Sandbox.inject`, or `POST /__sandbox/faults` from
another process), change switches (`Sandbox.configure`, `POST /__sandbox/config`),
move time forward (`Sandbox.advance`, `POST /__sandbox/clock`) and read back
every request (`Sandbox.requests`, or `GET /__sandbox/requests`).

    with Sandbox(SandboxConfig(duration=0.5)) as sandbox:
        httpx.post(f"{sandbox.base_url}/v1/images/generations", ...)

The modules: `config` (the switches), `faults` (one-shot misbehaviours), `rules`
(what a submission may be; models and their schemas), `state` (tasks and their
timeline, uploads), `images` (PNG encoding), `clock` (real or manual time),
`server` (HTTP plumbing) and `service` (the endpoints, tying it together).
"""

from apimart_cli.sandbox.clock import Clock, ManualClock, SystemClock
from apimart_cli.sandbox.config import SandboxConfig, parse_duration
from apimart_cli.sandbox.faults import FAULT_KINDS, Fault
from apimart_cli.sandbox.images import encode_png, gradient_png, noise_png
from apimart_cli.sandbox.rules import validate_submission
from apimart_cli.sandbox.server import Reply
from apimart_cli.sandbox.service import RecordedRequest, Sandbox
from apimart_cli.sandbox.state import Upload

__all__ = [
    "FAULT_KINDS",
    "Clock",
    "Fault",
    "ManualClock",
    "RecordedRequest",
    "Reply",
    "Sandbox",
    "SandboxConfig",
    "SystemClock",
    "Upload",
    "encode_png",
    "gradient_png",
    "noise_png",
    "parse_duration",
    "validate_submission",
]
