"""Open saved files in the desktop's viewer, the way Python's `webbrowser` does.

So `$BROWSER` is honoured, and `xdg-open`, `open` or the Windows shell are used
where there is a desktop. A viewer that cannot be found is a note, never a failure.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path


def open_files(paths: Iterable[Path], *, note: Callable[[str], None]) -> int:
    """Open each file; `note` hears of those no viewer took. How many were opened."""
    import webbrowser  # here, not at the top: only --open needs it (and it is slow to import)

    opened = 0
    for path in paths:
        url = path.resolve().as_uri()
        try:
            with _stdout_to_stderr():
                done = webbrowser.open(url)
        except (webbrowser.Error, OSError) as exc:
            note(f"Could not open {path}: {exc}")
            continue
        if done:
            opened += 1
        else:
            browser = os.environ.get("BROWSER")
            if browser:
                note(f"Could not open {path}: BROWSER is {browser!r}, which could not be run.")
            else:
                note(f"No viewer found to open {path}; set BROWSER to the program to use.")
            break  # the next file would find none either
    return opened


class _stdout_to_stderr:
    """While a viewer starts, its own output goes to standard error: standard output is data."""

    def __enter__(self) -> None:
        sys.stdout.flush()
        self._saved: int | None = None
        try:
            self._saved = os.dup(1)
            os.dup2(2, 1)
        except OSError:
            self._saved = None

    def __exit__(self, *exc_info: object) -> None:
        if self._saved is not None:
            os.dup2(self._saved, 1)
            os.close(self._saved)
