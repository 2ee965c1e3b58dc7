"""The config file: a flat TOML table, written atomically with mode 0600.

This module reads and writes the file; which keys it may hold, and what their
values mean, is ``settings``'s table.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from apimart_cli import safefiles
from apimart_cli.errors import ConfigError, UsageError, named, shown

# The largest config file read: six settings take a few hundred bytes, and a file of
# 100 MB (a log written to the wrong name) would be read whole by every command.
MAX_CONFIG_BYTES = 1024 * 1024


def user_path(text: str, what: str) -> Path:
    """`text` as a path, `~` and `~user` expanded: a UsageError naming `what` where no
    file can have it (a NUL in it) or no such user exists."""
    if "\0" in text:
        raise UsageError(f"{what} has a NUL character, which no path can hold: {shown(text)}.")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # `~name` of no user here
        raise UsageError(f"{what} names a home folder that is not here: {shown(text)}.") from None


def config_path() -> Path:
    """`$APIMART_CONFIG`, else `config.toml` in the user's config folder."""
    override = os.environ.get("APIMART_CONFIG")
    if override:
        return user_path(override, "APIMART_CONFIG")
    from platformdirs import user_config_dir  # only here: keeps start-up light

    return Path(user_config_dir("apimart")) / "config.toml"


def load(path: Path) -> dict[str, object]:
    """Every key in the file with its value as TOML read it; empty if there is no file."""
    try:
        text = _read_regular(path)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the config file {named(path)}: {exc.strerror or exc}",
            "Fix or remove the file.",
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Cannot read the config file {named(path)}: {exc}", "Fix or remove the file."
        ) from None
    # Imported only once there is a file to parse: start-up time.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message names the line and column, except at the very end.
        last_line = max(1, len(text.rstrip().splitlines()))
        detail = str(exc).replace("(at end of document)", f"(at the end of line {last_line})")
        raise ConfigError(
            f"The config file {named(path)} is not valid TOML: {detail}",
            "Fix that line, or remove the file and use `apimart config set`.",
        ) from None
    except RecursionError:  # `key = [[[[...`: the reader's own stack gives out
        raise ConfigError(
            f"The config file {named(path)} is not valid TOML: a value nested too deeply to read.",
            "Fix that value, or remove the file and use `apimart config set`.",
        ) from None
    return dict(data)


def _read_regular(path: Path) -> str:
    """The text of the file at `path`, which must be a regular file: a FIFO would hold
    every command until something wrote to it, a device might never end."""
    import stat

    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ConfigError(
            f"The config file {named(path)} is not a regular file.",
            "Remove it, or set APIMART_CONFIG to a file.",
        )
    with os.fdopen(descriptor, "rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"The config file {named(path)} is over {MAX_CONFIG_BYTES // (1024 * 1024)} MiB;"
            " no config file of apimart is.",
            "Fix or remove the file, or set APIMART_CONFIG to another one.",
        )
    return data.decode("utf-8")


def _toml_value(key: str, value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's string escapes are all valid in a TOML basic string; TOML also bars DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    raise ConfigError(
        f"Cannot rewrite the config file: {key!r} holds a table or list, which `config set`"
        " does not write.",
        "Remove that entry from the file (`apimart config path` names it), then try again.",
    )


def _toml_key(key: str) -> str:
    import re

    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key, key)


def dumps(settings: Mapping[str, object]) -> str:
    """The settings as a flat TOML table."""
    return "".join(
        f"{_toml_key(key)} = {_toml_value(key, value)}\n" for key, value in settings.items()
    )


def save(path: Path, settings: Mapping[str, object]) -> None:
    """Write the file atomically (`safefiles.write_atomic`), mode 0600.

    A config file that is a symbolic link (to a dotfiles repository, say) stays
    one: the file it points to is replaced, the temp file made beside that.
    """
    target = Path(os.path.realpath(path))
    try:
        content = dumps(settings).encode("utf-8")
    except UnicodeEncodeError:  # e.g. undecodable bytes from the command line
        raise ConfigError(
            f"Cannot write the config file {named(path)}: a value is not valid UTF-8 text.",
            "Give the value again as plain text.",
        ) from None
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Private from the moment it is made, so the key is never readable by others.
        safefiles.write_atomic(target, content, mode=0o600)
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the config file {named(path)}: {exc.strerror or exc}",
            "Check the folder's permissions and free space, or set APIMART_CONFIG to another path.",
        ) from None


def mask(value: str) -> str:
    """A key as `sk-…abcd`: enough to tell keys apart, not enough to use one."""
    if len(value) <= 8:
        return "…" * bool(value)
    prefix = value[:3] if value[2:3] == "-" else ""
    return f"{prefix}…{value[-4:]}"
