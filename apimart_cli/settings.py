"""Settings, resolved once: command-line flag > environment > config file > default.

``SETTINGS`` is the one table of them (the README's): each setting's flag,
environment variable, config key and default. ``in_effect`` says, for each,
the value that applies and where it came from; ``resolve`` turns that into the
``Settings`` the commands use. Notes (a base URL ending in /v1) and warnings
(a config file with an unknown key, or readable by others) go to the `info` and
`warn` the caller gives, each once per process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

from apimart_cli import config_file, secrets
from apimart_cli.constants import DEFAULT_BASE_URL, SETTING_KEYS
from apimart_cli.errors import AuthError, ConfigError, UsageError

ENV_API_KEY = "APIMART_API_KEY"
ENV_BASE_URL = "APIMART_BASE_URL"
ENV_OUTPUT_DIR = "APIMART_OUTPUT_DIR"
ENV_REFERENCES = "APIMART_REFERENCES"
ENV_METADATA = "APIMART_METADATA"
ENV_PREVIEW = "APIMART_PREVIEW"

REFERENCE_MODES = ("auto", "inline", "upload")

Value = str | bool | None
Say = Callable[[str], None]  # where a note or a warning goes: console.info, console.warn

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class Setting(NamedTuple):
    """One row of the settings table."""

    key: str  # the config key, and the attribute of ``Settings``
    label: str  # for people
    flag: str | None  # the command-line option that sets it, if any
    env: str
    default: Value
    kind: str = "text"  # text, url, path, choice or switch
    choices: tuple[str, ...] = ()
    secret: bool = False

    def parse(self, raw: object, origin: str | None = None, *, info: Say | None = None) -> Value:
        """``raw`` as this setting's value ('' is unset); ``origin`` names where it came
        from in a message (an environment variable, the config file), None: the user.
        `info` hears a note on a value taken other than as given (a base URL's /v1)."""
        where = f"{origin}: " if origin else ""
        if self.kind == "switch":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if not text:
                return None
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise UsageError(
                f"{where}{self.key} must be 0 or 1 (or true or false), not {_short(raw)}."
            )
        if not isinstance(raw, str):
            # A secret's value is never shown, whatever its type: only what type it is.
            shown = _kind(raw) if self.secret else _short(raw)
            raise ConfigError(
                f"{where}{self.key} must be a string, not {shown}.",
                f'Write it as {self.key} = "..."',
            )
        text = raw.strip()
        if not text:
            return None
        if self.kind == "choice":
            if text.lower() not in self.choices:
                raise UsageError(
                    f"{where}{self.key} must be {_one_of(self.choices)}, not {_short(raw)}."
                )
            return text.lower()
        if self.kind == "url":
            try:
                return check_base_url(text, info)
            except UsageError as error:
                if origin:
                    raise UsageError(f"{error.message} (from {origin})", error.hint) from None
                raise
        if self.kind == "path":
            config_file.user_path(text, f"{where}{self.key}")  # checked now, not at first use
        return text

    def display(self, value: Value, *, reveal: bool = False) -> str:
        """The value as `config get` and `config list` print it: keys masked."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return config_file.mask(value) if self.secret and not reveal else value


SETTINGS: tuple[Setting, ...] = (
    Setting("api_key", "API key", "--api-key", ENV_API_KEY, None, secret=True),
    Setting("base_url", "base URL", "--base-url", ENV_BASE_URL, DEFAULT_BASE_URL, kind="url"),
    Setting("output_dir", "output folder", "-o/--output", ENV_OUTPUT_DIR, ".", kind="path"),
    Setting(
        "references",
        "local references",
        "--refs",
        ENV_REFERENCES,
        "auto",
        kind="choice",
        choices=REFERENCE_MODES,
    ),
    Setting("metadata", "provenance in PNGs", "--no-metadata", ENV_METADATA, True, kind="switch"),
    Setting("preview", "inline preview", "--preview", ENV_PREVIEW, False, kind="switch"),
)
BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}
KEYS: tuple[str, ...] = SETTING_KEYS  # tuple(BY_KEY), as a test checks


def setting(key: str) -> Setting:
    """The setting named ``key``, or a ConfigError naming the one it most resembles."""
    if key in BY_KEY:
        return BY_KEY[key]
    meant = resembles(key)
    raise ConfigError(
        f"Unknown setting {_short(key)}." + (f" Did you mean {meant}?" if meant else ""),
        f"Settings are: {', '.join(KEYS)}.",
    )


def resembles(key: str) -> str | None:
    """The known config key that ``key`` most resembles (`api-key` -> `api_key`), if any."""
    import difflib  # only here: needed only for a mistyped key

    normal = key.strip().lower().replace("-", "_").replace(" ", "_")
    if normal in BY_KEY:
        return normal
    close = difflib.get_close_matches(normal, KEYS, n=1, cutoff=0.6)
    return close[0] if close else None


class Source(NamedTuple):
    """Where a setting's value came from."""

    kind: str  # flag, env, file or default
    name: str  # the flag, the environment variable, the config file's path, or "default"

    def __str__(self) -> str:
        return {"file": "config file", "default": "default"}.get(self.kind, self.name)


class InEffect(NamedTuple):
    """One setting's value in effect, and its source."""

    setting: Setting
    value: Value
    source: Source


@dataclass(frozen=True)
class Settings:
    """The settings in effect (`resolve`): what the commands use."""

    api_key: str | None
    base_url: str
    output_dir: Path
    references: str = "auto"  # how local reference files travel: auto, inline or upload
    metadata: bool = True  # the provenance chunk in saved PNGs
    preview: bool = False  # show saved images inline on a terminal that can
    # Where each value came from (flag, environment variable, config file, default).
    sources: Mapping[str, Source] = field(default_factory=dict, compare=False, repr=False)

    def require_key(self) -> str:
        """The key, checked before it goes into a header: exit 3 if missing, 2 if unsendable.

        Whoever takes the key to send it has it hidden from then on: from every line
        printed and every value the history writes, whatever the service echoes.
        """
        if not self.api_key:
            raise no_key_error()
        secrets.hide(self.api_key)
        check_sendable_key(self.api_key)
        return self.api_key

    def source(self, key: str) -> str:
        """Where ``key``'s value came from, for messages: `--base-url`, `APIMART_BASE_URL`..."""
        found = self.sources.get(key)
        if found is None or found.kind == "default":
            return "the default"
        return f"the config file {found.name}" if found.kind == "file" else found.name


def check_sendable_key(key: str) -> None:
    """A UsageError for a key that cannot go in a header: spaces, control or non-ASCII
    characters (never shown: it is a secret, or most of one)."""
    if not (key.isascii() and key.isprintable() and " " not in key):
        raise UsageError(
            "The API key has spaces or characters that cannot be sent in a header.",
            "Copy it again from https://apimart.ai/keys: `apimart config set api_key`.",
        )


def no_key_error() -> AuthError:
    """The error for a command that needs the API key and has none (exit 3)."""
    return AuthError("No API key.", "Run `apimart config set api_key`, or set APIMART_API_KEY.")


def in_effect(
    flags: Mapping[str, Value] | None = None, *, info: Say, warn: Say
) -> dict[str, InEffect]:
    """Each setting's value in effect and its source, from ``flags`` (by config key),
    the environment and the config file (read only when some value is still missing)."""
    flags = flags or {}
    found: dict[str, InEffect] = {}
    for item in SETTINGS:
        flag = flags.get(item.key)
        # Blank counts as not given (as '' does): `--api-key "   "` leaves the key of the
        # environment or the file in effect, not none at all.
        if flag is not None and (not isinstance(flag, str) or flag.strip()):
            name = item.flag or item.key
            # The user typed it just now: a message need not say where it came from.
            found[item.key] = InEffect(item, item.parse(flag, info=info), Source("flag", name))
            continue
        env = os.environ.get(item.env)
        if env:
            value = item.parse(env, item.env, info=info)
            if value is not None:
                found[item.key] = InEffect(item, value, Source("env", item.env))
    if len(found) < len(SETTINGS):
        path = config_file.config_path()
        stored = config_file.load(path)
        _check_file(path, stored, warn)
        for item in SETTINGS:
            if item.key in found or item.key not in stored:
                continue
            value = item.parse(stored[item.key], f"The config file {path}", info=info)
            if value is not None:
                found[item.key] = InEffect(item, value, Source("file", str(path)))
    return {
        item.key: found.get(item.key) or InEffect(item, item.default, Source("default", "default"))
        for item in SETTINGS
    }


def resolve(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    output_dir: str | None = None,
    references: str | None = None,
    metadata: bool | None = None,
    preview: bool | None = None,
    info: Say,
    warn: Say,
) -> Settings:
    """The settings from flags (the arguments; None: not given), the environment and the file."""
    flags: dict[str, Value] = {
        "api_key": api_key,
        "base_url": base_url,
        "output_dir": output_dir,
        "references": references,
        "metadata": metadata,
        "preview": preview,
    }
    values = in_effect(flags, info=info, warn=warn)
    return Settings(
        api_key=_text(values["api_key"].value),
        base_url=_text(values["base_url"].value) or DEFAULT_BASE_URL,
        output_dir=config_file.user_path(_text(values["output_dir"].value) or ".", "output_dir"),
        references=_text(values["references"].value) or "auto",
        metadata=values["metadata"].value is not False,
        preview=values["preview"].value is True,
        sources={key: value.source for key, value in values.items()},
    )


def _text(value: Value) -> str | None:
    return value if isinstance(value, str) else None


def _kind(value: object) -> str:
    """What a TOML value is, in words, for a message that must not show it."""
    kinds = {bool: "true or false", int: "a number", float: "a number", list: "a list"}
    return "a table" if isinstance(value, dict) else kinds.get(type(value), "another kind of value")


def _one_of(choices: tuple[str, ...]) -> str:
    """`a, b or c`."""
    return " or ".join([", ".join(choices[:-1]), choices[-1]]) if len(choices) > 1 else choices[0]


def _short(value: object, limit: int = 40) -> str:
    text = secrets.redact(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


_warned: set[tuple[str, str]] = set()


def _warn_once(path: Path, message: str, warn: Say) -> None:
    if (str(path), message) not in _warned:
        _warned.add((str(path), message))
        warn(message)


def _check_file(path: Path, stored: Mapping[str, object], warn: Say) -> None:
    """Warn about keys the tool does not know (never their values: a misplaced key is a
    secret) and about a file others can read that holds the API key."""
    for key in stored:
        if key not in BY_KEY:
            meant = resembles(key)
            _warn_once(
                path,
                f"Warning: the config file {path} has an unknown setting {_short(key)}"
                + (f"; did you mean {meant}?" if meant else f"; settings are {', '.join(KEYS)}.")
                + " It is ignored.",
                warn,
            )
    secrets = {item.key for item in SETTINGS if item.secret}
    if any(key in secrets or resembles(key) in secrets for key in stored):
        try:
            mode = path.stat().st_mode
        except OSError:
            return
        if mode & 0o077:
            _warn_once(
                path,
                f"Warning: the config file {path} holds an API key and others can read it"
                f" (mode {mode & 0o777:o}). Run: chmod 600 '{path}'",
                warn,
            )


def _without_v1(url: str, info: Say | None) -> str:
    if not urlsplit(url).path.lower().endswith("/v1"):  # the path: `https://v1` is a host
        return url
    stripped = url[: -len("/v1")].rstrip("/")
    if info is not None and (url, stripped) not in _noted:
        _noted.add((url, stripped))
        info(
            f"Note: the base URL {url} ends in /v1, which every request adds itself;"
            f" using {stripped}."
        )
    return stripped


_noted: set[tuple[str, str]] = set()


def is_sandbox_url(base_url: str) -> bool:
    """Whether `base_url` names this machine: a sandbox's, whose tasks end with it and
    bill nothing."""
    try:
        return is_loopback(urlsplit(base_url).hostname or "")
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    import ipaddress  # here: only a base URL needs it, and not `apimart --help`

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, info: Say | None = None) -> str:
    """The URL without a trailing slash; the key goes over HTTPS, or plain HTTP to loopback.

    A URL ending in `/v1` (as the API's own pages write it) loses it, with a note to
    `info`: every request's path already starts with `/v1`.
    """
    invalid = UsageError(
        f"Invalid base URL {url!r}.", "Use an https:// URL such as https://api.apimart.ai."
    )
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018 - a bad port raises here rather than as a traceback later
    except ValueError:  # e.g. `http://[::1` or a port that is not 0-65535
        raise invalid from None
    if not url.strip().isprintable() or " " in url.strip():  # `https://a b`: no host has one
        raise invalid
    if (parts.scheme == "https" and host) or (parts.scheme == "http" and is_loopback(host)):
        return _without_v1(url.strip().rstrip("/"), info)
    if parts.scheme == "http" and host:
        raise UsageError(
            f"Refusing to send the API key over plain HTTP to {url!r}.",
            "Use an https:// base URL (http:// is allowed only for localhost).",
        )
    raise invalid
