"""The desktop's viewers, looked for afresh by a command run in this process.

Python's `webbrowser` looks for the viewers once a process, from the `$BROWSER`
and `PATH` of its first use, and keeps what it found. A new process starts with
nothing found; `fresh_viewers` gives an in-process run the same start, so that it
opens with the viewers its own environment names, not an earlier run's.
"""

from __future__ import annotations

import pytest


def fresh_viewers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the test ends, `webbrowser` has looked for no viewer yet."""
    import webbrowser

    monkeypatch.setattr(webbrowser, "_tryorder", None)
    monkeypatch.setattr(webbrowser, "_browsers", {})
