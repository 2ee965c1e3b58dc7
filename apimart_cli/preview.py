"""Inline previews: a saved image drawn in the terminal, kitty's or iTerm2's way.

Both protocols take the file's own bytes in base64 and a display size in
character cells, and the terminal scales the picture: no image library, no
decoding here. Only the PNG header is read, for the picture's proportions, so
that a tall image is not drawn taller than the window. `protocol()` tells from
the environment which one the terminal speaks (or none); `escape()` builds
what to write. Writing it is the display layer's business (standard error).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from apimart_cli.images import png_dimensions

Protocol = Literal["kitty", "iterm"]

KITTY_CHUNK = 4096  # base64 bytes per escape, as kitty's protocol requires
MAX_COLUMNS = 60  # a preview, not a wallpaper
MIN_COLUMNS = 8
# A character cell is about twice as tall as it is wide.
CELL_ASPECT = 2.0
MAX_PREVIEW_BYTES = 32 * 1024 * 1024  # larger files are not worth pushing through a terminal


def protocol(env: Mapping[str, str] | None = None) -> Protocol | None:
    """The inline image protocol the terminal in `env` speaks, or None."""
    env = os.environ if env is None else env
    term = env.get("TERM", "")
    program = env.get("TERM_PROGRAM", "")
    if env.get("KITTY_WINDOW_ID") or "kitty" in term or program in ("ghostty", "kitty"):
        return "kitty"
    if program in ("iTerm.app", "WezTerm") or env.get("LC_TERMINAL") == "iTerm2":
        return "iterm"
    if "ghostty" in term:
        return "kitty"
    return None


def cells(size: tuple[int, int] | None, columns: int, rows: int) -> tuple[int, int | None]:
    """The display size in cells: at most MAX_COLUMNS wide and half the window tall.

    The row count is given only when the picture's size is known (so that the
    width can be chosen to keep its proportions); otherwise the terminal works it out.
    """
    width = max(MIN_COLUMNS, min(MAX_COLUMNS, columns - 1))
    if size is None:
        return width, None
    pixels_wide, pixels_high = size
    most_rows = max(4, rows // 2)
    ratio = pixels_high / pixels_wide / CELL_ASPECT  # rows per column
    if width * ratio > most_rows:
        width = max(MIN_COLUMNS // 2, int(most_rows / ratio))
    return width, max(1, round(width * ratio))


def kitty(data: bytes, columns: int, rows: int | None = None) -> list[str]:
    """kitty's graphics protocol: escapes that transmit and show a PNG (f=100).

    The base64 payload goes in chunks of 4096 bytes, m=1 on all but the last.
    q=2 keeps the terminal from answering on standard input; c/r give the size in
    cells (with only c, the terminal keeps the proportions).
    """
    payload = base64.standard_b64encode(data).decode("ascii")
    pieces = [payload[i : i + KITTY_CHUNK] for i in range(0, len(payload), KITTY_CHUNK)] or [""]
    size = f",c={columns}" + (f",r={rows}" if rows else "")
    parts = []
    for number, piece in enumerate(pieces):
        more = 1 if number < len(pieces) - 1 else 0
        keys = f"a=T,f=100,q=2{size},m={more}" if number == 0 else f"m={more}"
        parts.append(f"\x1b_G{keys};{piece}\x1b\\")
    return parts


def iterm(data: bytes, columns: int, name: str = "") -> str:
    """iTerm2's inline image: the whole file in one OSC 1337, its width in cells."""
    payload = base64.standard_b64encode(data).decode("ascii")
    label = base64.standard_b64encode(name.encode("utf-8")).decode("ascii")
    keys = f"name={label};size={len(data)};width={columns};preserveAspectRatio=1;inline=1"
    return f"\x1b]1337;File={keys}:{payload}\x07"


def tmux_passthrough(sequence: str) -> str:
    """The sequence wrapped for tmux to pass to the terminal outside it (allow-passthrough)."""
    return "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"


def escape(
    path: Path,
    kind: Protocol,
    *,
    columns: int = 80,
    rows: int = 24,
    in_tmux: bool = False,
) -> str | None:
    """What to write to draw the image at `path`, or None if this terminal cannot show it."""
    try:
        if path.stat().st_size > MAX_PREVIEW_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    size = png_dimensions(data[:24])
    if kind == "kitty":
        if size is None:  # kitty's protocol takes PNG; anything else would need decoding
            return None
        width, height = cells(size, columns, rows)
        pieces = kitty(data, width, height)
    else:
        width, _ = cells(size, columns, rows)
        pieces = [iterm(data, width, path.name)]
    # Inside tmux each escape is passed through on its own, as tmux wants them.
    return "".join(tmux_passthrough(piece) if in_tmux else piece for piece in pieces)


class Previewer:
    """Draws saved images for one terminal: `escape(path)` is what to write for each."""

    def __init__(self, kind: Protocol, *, in_tmux: bool = False, fd: int = 2) -> None:
        self.kind, self._in_tmux, self._fd = kind, in_tmux, fd

    def escape(self, path: Path) -> str | None:
        columns, rows = window_size(self._fd)
        return escape(path, self.kind, columns=columns, rows=rows, in_tmux=self._in_tmux)


def window_size(fd: int, env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """The terminal's columns and rows; where it reports none (0, as a fresh pseudo-terminal
    may), $COLUMNS and $LINES, else 80 x 24."""
    env = os.environ if env is None else env
    try:
        columns, rows = os.get_terminal_size(fd)
    except OSError:
        columns, rows = 0, 0

    def fallback(name: str, default: int) -> int:
        text = env.get(name, "")
        return int(text) if text.isdigit() and int(text) > 0 else default

    return columns or fallback("COLUMNS", 80), rows or fallback("LINES", 24)


def previewer(
    wanted: bool,
    *,
    is_terminal: bool,
    note: Callable[[str], None],
    env: Mapping[str, str] | None = None,
) -> Previewer | None:
    """The previewer for standard error, if previews are wanted and it can show them.

    Where it cannot, `note` hears why, once (a --verbose line).
    """
    if not wanted:
        return None
    env = os.environ if env is None else env
    if not is_terminal:
        note("No inline preview: standard error is not a terminal.")
        return None
    kind = protocol(env)
    if kind is None:
        term = env.get("TERM_PROGRAM") or env.get("TERM") or "unknown"
        note(
            f"No inline preview: this terminal ({term}) speaks neither kitty's graphics "
            "protocol nor iTerm2's inline images."
        )
        return None
    return Previewer(kind, in_tmux=bool(env.get("TMUX")))
