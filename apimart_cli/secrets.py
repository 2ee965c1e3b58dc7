"""The secrets the tool never prints or writes: the API key, in every form it may take.

Whoever takes the key to send it calls ``hide``; from then on every writer (the
display, the history, the cache, the manifest, sidecars, provenance, the
gallery, error messages) passes its text through ``redact`` or ``redact_data``.
A server may echo the key in any message or result, whole, encoded, cut short or
split in two, so any long enough part of it is hidden as well. This module imports nothing of the
tool's, so any module may use it.
"""

import functools
from collections.abc import Mapping
from typing import TextIO, cast

_secrets: frozenset[str] = frozenset()
HIDDEN = "[API key]"
# A shorter "key" (`any`, the sandbox's `sandbox`) is no secret, and cutting it out of
# every line would mangle ordinary words. It is also the shortest part of a key that is
# hidden: a message cut short may end in the key's first characters, or begin in its last.
MIN_SECRET_CHARS = 8
# Where, in each form of a secret, a run of MIN_SECRET_CHARS is looked for (its anchors):
# every ANCHOR_STEP characters, and at its end. Any run of MIN_SECRET_CHARS + ANCHOR_STEP - 1
# characters from anywhere in it holds one, so a key split across two fields, or shown
# without its first characters, leaks no such run either.
ANCHOR_STEP = 4
# A text holding more parts of a secret than this is withheld whole (see `redact`).
MAX_PARTS = 1000
# Each anchor, and the forms (with the offset in each) it was taken from.
_anchors: dict[str, tuple[tuple[str, int], ...]] = {}


def hide(secret: str) -> None:
    """Never print or write `secret`: a server may echo the key back in any message or result.

    Its encoded forms are hidden too, since that is how it shows in JSON, in a
    quoted value, in a URL and in an echoed `Authorization` header (base64): with
    a backslash or a quote, the key as written there is not the key as typed.
    """
    global _secrets, _anchors
    if len(secret) >= MIN_SECRET_CHARS:
        _secrets |= encoded_forms(secret)
        _anchors = _anchors_of(_secrets)


def forget() -> None:
    """Hide nothing any more (a new command in the same process, a test)."""
    global _secrets, _anchors
    _secrets = frozenset()
    _anchors = {}


def encoded_forms(secret: str) -> frozenset[str]:
    """`secret` as it may appear in what the tool prints or writes."""
    import json
    import re
    from urllib.parse import quote, quote_plus

    url_forms = {quote(secret, safe=""), quote_plus(secret, safe="")}
    forms = {
        secret,
        json.dumps(secret)[1:-1],  # JSON, as --json prints it
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],  # a value quoted in a message
        *url_forms,
        # The same escapes in lower case (`%2f`), as some servers write them.
        *(re.sub(r"%[0-9A-F]{2}", lambda escape: escape[0].lower(), form) for form in url_forms),
        *_base64_forms(secret.encode("utf-8")),
    }
    return frozenset(form for form in forms if len(form) >= MIN_SECRET_CHARS)


def _base64_forms(secret: bytes) -> set[str]:
    """What is sure to show of `secret` in any base64 text that encodes it, wherever it
    starts (`Bearer KEY` encoded whole puts it 7 bytes in), in either alphabet.

    Base64 turns 3 bytes into 4 characters, so the characters at each end that mix
    the secret's bits with its neighbours' depend on what surrounds it: those are
    left out, for each of the 3 offsets the secret may start at."""
    import base64

    forms = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for before in range(3):
            text = encode(bytes(before) + secret).decode("ascii").rstrip("=")
            # The first characters mix in the bytes before; the last, those after.
            mixed_at_start = (0, 2, 3)[before]
            mixed_at_end = 1 if (before + len(secret)) % 3 else 0
            forms.add(text[mixed_at_start : len(text) - mixed_at_end])
    return forms


def _anchors_of(forms: frozenset[str]) -> dict[str, tuple[tuple[str, int], ...]]:
    anchors: dict[str, list[tuple[str, int]]] = {}
    for form in forms:
        last = len(form) - MIN_SECRET_CHARS
        for offset in {*range(0, last + 1, ANCHOR_STEP), last}:
            anchors.setdefault(form[offset : offset + MIN_SECRET_CHARS], []).append((form, offset))
    return {anchor: tuple(places) for anchor, places in anchors.items()}


def holds_secret(text: str) -> bool:
    """Whether `text` holds any part of a hidden secret that `redact` would cut out."""
    return any(anchor in text for anchor in _anchors)


def holds(text: str, secret: str) -> bool:
    """Whether `text` holds `secret`, or any part of it `redact` would cut out once hidden:
    for a URL the service sent, never to be fetched, or an id never to be used."""
    return len(secret) >= MIN_SECRET_CHARS and any(anchor in text for anchor in _parts(secret))


@functools.lru_cache(maxsize=4)
def _parts(secret: str) -> frozenset[str]:
    return frozenset(_anchors_of(encoded_forms(secret)))


def redact(text: str) -> str:
    """`text` with every hidden secret (in every encoded form) cut out, and with any part of
    one cut out too: a run of MIN_SECRET_CHARS or more characters that starts or ends one
    (a key cut short), or of MIN_SECRET_CHARS + ANCHOR_STEP - 1 from anywhere in it."""
    anchors = _anchors
    if not anchors or not text or not holds_secret(text):
        return text
    # Each whole form first, at C speed (a reply may repeat the key thousands of times);
    # then what is left of one, a part at a time. The longest form first: one that
    # stops early would leave the rest.
    for form in sorted(_secrets, key=len, reverse=True):
        text = text.replace(form, HIDDEN)
    # Each part left costs a look around it: a text made of thousands of them (a hostile
    # reply of 8 MiB of the key's tail took 5 s) is withheld whole, counted at C speed.
    if sum(text.count(anchor) for anchor in anchors) > MAX_PARTS:
        return f"[withheld: {len(text)} characters holding parts of the API key]"
    runs: list[tuple[int, int]] = []
    for anchor, places in anchors.items():
        at = text.find(anchor)
        while at >= 0:
            # The longest run of a form through here: one that stops early would leave the rest.
            start, end = at, at + MIN_SECRET_CHARS
            for form, offset in places:
                run_start, run_end = _run(text, at, form, offset)
                start, end = min(start, run_start), max(end, run_end)
            runs.append((start, end))
            # On past the run: a form that repeats its own anchor is all that could
            # need another look inside it, and no key does.
            at = text.find(anchor, max(at + 1, end - MIN_SECRET_CHARS + 1))
    if not runs:
        return text
    parts: list[str] = []
    done = 0
    for start, end in sorted(runs):
        if end <= done:
            continue
        if start > done:
            parts.append(text[done:start])
            parts.append(HIDDEN)
        elif not parts:  # a run at the very start
            parts.append(HIDDEN)
        done = end
    parts.append(text[done:])
    return "".join(parts)


def _run(text: str, at: int, form: str, offset: int) -> tuple[int, int]:
    """Where the run of `text` that matches `form` around `at` (where `form[offset:]`'s
    anchor was found) starts and ends."""
    before = _common_length(text[max(0, at - offset) : at][::-1], form[:offset][::-1])
    after_at, after_offset = at + MIN_SECRET_CHARS, offset + MIN_SECRET_CHARS
    after = _common_length(
        text[after_at : after_at + len(form) - after_offset], form[after_offset:]
    )
    return at - before, after_at + after


def _common_length(one: str, other: str) -> int:
    """How many first characters `one` and `other` share (slices compared, not characters:
    a reply may hold thousands of runs)."""
    low, high = 0, min(len(one), len(other))
    while low < high:
        middle = (low + high + 1) // 2
        if one[:middle] == other[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def redact_data(value: object) -> object:
    """A JSON-like value with every string in it redacted (keys too), before it is encoded:
    redacting the encoded text could cut an escape sequence in half. Tuples become lists,
    as JSON has them; anything else is kept as it is."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_data(key): redact_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_data(item) for item in value]
    return value


def redacting(stream: TextIO) -> TextIO:
    """`stream`, every write to it redacted: for what is written without passing through
    `redact` (rich's tables and progress, the log records of the MCP server)."""
    return cast(TextIO, _Redacting(stream))


class _Redacting:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(redact(text))

    def __getattr__(self, name: str) -> object:  # isatty, fileno, flush, encoding...
        return getattr(self._stream, name)
