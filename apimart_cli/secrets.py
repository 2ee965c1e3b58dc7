"""The secrets the tool never prints or writes: the API key, in every form it may take.

Whoever takes the key to send it calls ``hide``; from then on every writer (the
display, the history, the cache, the manifest, sidecars, provenance, the
gallery, error messages) passes its text through ``redact`` or ``redact_data``.
A server may echo the key in any message or result, whole or cut short, so a
long enough prefix of it is hidden as well. This module imports nothing of the
tool's, so any module may use it.
"""

from collections.abc import Mapping
from typing import TextIO, cast

_secrets: frozenset[str] = frozenset()
HIDDEN = "[API key]"
# A shorter "key" (`any`, the sandbox's `sandbox`) is no secret, and cutting it
# out of every line would mangle ordinary words. It is also the shortest prefix of
# a key that is hidden: a message cut short may end in the key's first characters.
MIN_SECRET_CHARS = 8


def hide(secret: str) -> None:
    """Never print or write `secret`: a server may echo the key back in any message or result.

    Its encoded forms are hidden too, since that is how it shows in JSON, in a
    quoted value and in a URL: with a backslash or a quote, the key as written
    there is not the key as typed.
    """
    global _secrets
    if len(secret) >= MIN_SECRET_CHARS:
        _secrets |= encoded_forms(secret)


def forget() -> None:
    """Hide nothing any more (a new command in the same process, a test)."""
    global _secrets
    _secrets = frozenset()


def encoded_forms(secret: str) -> frozenset[str]:
    """`secret` as it may appear in what the tool prints or writes."""
    import json
    from urllib.parse import quote, quote_plus

    forms = {
        secret,
        json.dumps(secret)[1:-1],  # JSON, as --json prints it
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],  # a value quoted in a message
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
    }
    return frozenset(form for form in forms if len(form) >= MIN_SECRET_CHARS)


def redact(text: str) -> str:
    """`text` with every hidden secret (in every encoded form) cut out, and with any run of
    MIN_SECRET_CHARS or more characters that starts one (a key cut short) cut out too."""
    if not _secrets or not text:
        return text
    # Where each distinct head is next found (-1: nowhere further), searched again only
    # once passed: a text full of one head costs no rescan for the others.
    next_at = {head: text.find(head) for head in {secret[:MIN_SECRET_CHARS] for secret in _secrets}}
    parts: list[str] = []
    done = 0
    while True:
        for head, at in next_at.items():
            if 0 <= at < done:
                next_at[head] = text.find(head, done)
        found = [at for at in next_at.values() if at >= 0]
        if not found:
            break
        start = min(found)
        # The longest form that matches here: a form that stops early would leave the rest.
        end = max(_match_end(text, start, secret) for secret in _secrets)
        parts += [text[done:start], HIDDEN]
        done = end
    parts.append(text[done:])
    return "".join(parts)


def _match_end(text: str, start: int, secret: str) -> int:
    """Where the longest prefix of `secret` found at `start` in `text` ends (`start`: none
    as long as MIN_SECRET_CHARS)."""
    end = start
    while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
        end += 1
    return end if end - start >= MIN_SECRET_CHARS else start


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
