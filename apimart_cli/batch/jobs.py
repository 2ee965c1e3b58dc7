"""The jobs file: one job per line, every line checked before anything is sent.

A plain line is a prompt; a line starting with '{' is a JSON object of fields.
Each line goes through `build_request` (the API's own rules), and every bad
line is reported at once. The `--name` template is checked here too, against
every image the jobs will make, so that no name can leave the output folder
and no two images can get the same one.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
import sys
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from apimart_cli.errors import UsageError, clipped, shown
from apimart_cli.fields import check_types
from apimart_cli.payload import request_from
from apimart_cli.tasks import MAX_TASK_ID_CHARS

if TYPE_CHECKING:
    from apimart_cli.payload import GenerationRequest

PLACEHOLDERS = ("task_id", "index", "line", "slug")
MAX_REPORTED = 20  # bad lines listed before "... and N more"
MAX_PROBLEM_CHARS = 300  # of each bad line's message
SLUG_CHARS = 40
# Room left under the file system's 255 bytes for the extension, `.part` and `.json`.
MAX_NAME_BYTES = 200
_NAME_RE = re.compile(r"\w[\w .,+=@#%&()\[\]~!-]*")

_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_NAME_HINT = "Use {task_id}, {index}, {line} and {slug}, e.g. --name '{line}-{slug}-{index}'."


@dataclass(frozen=True)
class Job:
    """One line of the batch file, checked.

    Its identity is its text, not where it is: `digest` (a hash of the line)
    and `occurrence` (1 for the first line with that text, 2 for the second...),
    so that adding, removing or moving other lines leaves every job the same
    job, while two identical lines stay two jobs. `line` is only where it is now.
    """

    line: int
    request: GenerationRequest
    digest: str
    occurrence: int = 1

    @property
    def identity(self) -> tuple[str, int]:
        return (self.digest, self.occurrence)

    @property
    def slug(self) -> str:
        return slugify(self.request.prompt)


def load_batch(
    file: Path | None,
    name_template: str,
    *,
    info: Callable[[str], None],
    stdin: Callable[[], Iterable[str]] | None = None,
) -> list[Job]:
    """The jobs of FILE (standard input for None or '-', its lines from `stdin` where
    given), and names checked for them; `info` hears the notes on their lines (an
    ignored option...), up to MAX_REPORTED."""
    if file is None or str(file) == "-":
        try:
            lines = list(stdin() if stdin is not None else sys.stdin)
            jobs = parse_jobs(lines, Path.cwd(), "standard input")
        except UnicodeDecodeError:
            raise UsageError("Standard input is not UTF-8 text.") from None
    else:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise UsageError(f"Cannot read {file}: {reason}.") from None
        jobs = parse_jobs(lines, file.parent, str(file))
    check_names(name_template, jobs)
    notes = [f"Note: line {job.line}: {note}" for job in jobs for note in job.request.notes]
    for note in notes[:MAX_REPORTED]:
        info(note)
    if len(notes) > MAX_REPORTED:
        info(f"... and {len(notes) - MAX_REPORTED} more notes")
    return jobs


def parse_jobs(lines: Iterable[str], base: Path, source: str) -> list[Job]:
    """Every job; a UsageError listing the bad lines (up to MAX_REPORTED) if any is bad."""
    jobs: list[Job] = []
    problems: list[str] = []
    seen: Counter[str] = Counter()  # lines of each text so far
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            job = parse_line(number, text, base)
        except UsageError as error:  # cut: a line's bad value may be megabytes long
            problems.append(f"line {number}: {clipped(error.message, MAX_PROBLEM_CHARS)}")
            continue
        seen[job.digest] += 1
        jobs.append(replace(job, occurrence=seen[job.digest]))
    if problems:
        shown = problems[:MAX_REPORTED]
        if len(problems) > MAX_REPORTED:
            shown.append(f"... and {len(problems) - MAX_REPORTED} more")
        raise UsageError(
            f"{len(problems)} bad line(s) in {source}; nothing was sent.\n  " + "\n  ".join(shown),
            "Fix them and run the command again.",
        )
    if not jobs:
        raise UsageError(f"No jobs in {source}.", "Write one prompt, or one JSON object, per line.")
    return jobs


def parse_line(number: int, text: str, base: Path) -> Job:
    """A plain prompt, or a JSON object of fields; relative image paths are taken from `base`.

    The job is the first of its text; `parse_jobs` counts the others.
    """
    fields = check_types(_json_fields(text) if text.startswith("{") else {"prompt": text})
    if "images" in fields:
        fields["images"] = [_from_folder(base, image) for image in fields["images"]]
    request = request_from(fields)
    return Job(number, request, hashlib.sha256(text.encode()).hexdigest()[:16])


def _json_fields(text: str) -> dict[str, Any]:
    """The fields of a JSON line (it starts with '{', so it is an object or no JSON at all);
    `fields.check_types` checks them."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except (ValueError, RecursionError):  # a number of 5,000 digits; `{"a":[[[[...` too deep
        raise UsageError("JSON that cannot be read (nested too deeply, or too large)") from None
    if not isinstance(value, dict):  # pragma: no cover - a line starting with '{' is one
        raise UsageError("not a JSON object")
    return value


def _from_folder(base: Path, image: str) -> str:
    """A relative file path taken from `base`; URLs and data: URIs as given."""
    if image[:5].lower() == "data:" or _URL_RE.match(image) or not image.strip():
        return image
    path = Path(image).expanduser()
    return image if path.is_absolute() else str(base / path)


# -- file names ------------------------------------------------------------------------------


def slugify(prompt: str, limit: int = SLUG_CHARS) -> str:
    """Lowercase ASCII letters, digits and '-' from the prompt, at most `limit` characters."""
    text = unicodedata.normalize("NFKD", prompt).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "image"


def format_name(template: str, *, task_id: str, index: int, line: int, slug: str) -> str:
    """The file name (without extension) for one image; UsageError unless it is a plain,
    short name inside the folder."""
    for _, placeholder, spec, conversion in _parsed(template):
        if placeholder is None:
            continue
        if placeholder not in PLACEHOLDERS:
            raise UsageError(
                f"Unknown placeholder {{{placeholder[:40]}}} in --name {shown(template)}.",
                _NAME_HINT,
            )
        if conversion is not None or "{" in (spec or ""):
            raise UsageError(
                f"--name {shown(template)}: a placeholder takes a format such as {{index:03}}, "
                "not a conversion (!r, !s, !a) or a nested placeholder.",
                _NAME_HINT,
            )
    try:
        name = template.format(task_id=task_id, index=index, line=line, slug=slug)
    except (ValueError, IndexError, KeyError) as exc:
        raise UsageError(f"Invalid --name {shown(template)}: {exc}.", _NAME_HINT) from None
    problem = _name_problem(name)
    if problem:
        raise UsageError(
            f"--name {shown(template)} gives the file name {shown(name)}, {problem}.",
            "A name is letters, digits and ' _-.,+=@#%&()[]~!', begins with a letter, "
            f"a digit or '_', and is at most {MAX_NAME_BYTES} bytes.",
        )
    return name


def _parsed(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as exc:  # a lone '{' or '}'
        raise UsageError(f"Invalid --name {shown(template)}: {exc}.", _NAME_HINT) from None


def _name_problem(name: str) -> str | None:
    """What is wrong with `name` as a file name in the output folder, if anything."""
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        return f"longer than {MAX_NAME_BYTES} bytes"
    if not name.strip() or name.startswith(".") or any(s in name for s in ("/", "\\", "..")):
        return "which could leave the folder"
    if not _NAME_RE.fullmatch(name) or name != name.rstrip(" ."):
        return "which is not a plain file name"
    return None


def check_names(template: str, jobs: Sequence[Job]) -> None:
    """Before anything is sent: every image gets a safe name, and no two get the same one."""
    seen: dict[str, int] = {}
    for job in jobs:
        stand_in = f"task_{job.line:0{MAX_TASK_ID_CHARS - 5}d}"  # unique, and the longest
        for index in range(job.request.n or 1):
            # The shortest id too: a width (`{task_id:>80}`) pads it with what no plain
            # name holds, which the longest, wider than any width that fits, never shows.
            format_name(template, task_id="t", index=index, line=job.line, slug=job.slug)
            name = format_name(
                template, task_id=stand_in, index=index, line=job.line, slug=job.slug
            )
            if name in seen:
                lines = sorted({seen[name], job.line})
                raise UsageError(
                    f"--name {template!r} gives two images the name {name!r} "
                    f"(line {' and '.join(map(str, lines))}).",
                    "Add {index} and {task_id} or {line} to the template.",
                )
            seen[name] = job.line
