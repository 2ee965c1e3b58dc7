"""What the batch tests share: jobs parsed from text, as a jobs file would give them."""

from __future__ import annotations

from pathlib import Path

import pytest

from apimart_cli.batch import Job, parse_jobs
from apimart_cli.errors import UsageError
from apimart_cli.sandbox import encode_png

PNG = encode_png(1, 1, b"\x00\x00\x00\x00")  # the smallest valid image


def parse(text: str, base: Path | None = None) -> list[Job]:
    return parse_jobs(text.splitlines(), base or Path.cwd(), "jobs.txt")


def bad_lines(text: str, base: Path | None = None) -> str:
    with pytest.raises(UsageError) as caught:
        parse(text, base)
    return caught.value.message
