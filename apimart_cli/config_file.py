"""The config file: a flat TOML table of strings, written atomically with mode 0600."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from apimart_cli.errors import ConfigError

KEYS = ("api_key", "base_url", "output_dir")
SECRET_KEYS = frozenset({"api_key"})


def config_path() -> Path:
    """`$APIMART_CONFIG`, else `config.toml` in the user's config folder."""
    override = os.environ.get("APIMART_CONFIG")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir  # only here: keeps start-up light

    return Path(user_config_dir("apimart")) / "config.toml"


def check_key(key: str) -> str:
    if key not in KEYS:
        raise ConfigError(f"Unknown setting {key!r}.", f"Settings are: {', '.join(KEYS)}.")
    return key


def load(path: Path) -> dict[str, str]:
    """The settings in the file; empty if there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Cannot read the config file {path}: {exc}", "Fix or remove the file."
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
            f"The config file {path} is not valid TOML: {detail}",
            "Fix that line, or remove the file and use `apimart config set`.",
        ) from None
    settings = {}
    for key, value in data.items():
        if key in KEYS and not isinstance(value, str):
            raise ConfigError(
                f"The config file {path}: {key} must be a string, not {value!r}.",
                f'Write it as {key} = "..."',
            )
        if isinstance(value, str):
            settings[key] = value
    return settings


def _toml_string(value: str) -> str:
    # JSON's string escapes are all valid in a TOML basic string; TOML also bars DEL.
    import json

    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def dumps(settings: dict[str, str]) -> str:
    """The settings as a flat TOML table."""
    return "".join(f"{key} = {_toml_string(value)}\n" for key, value in settings.items())


def save(path: Path, settings: dict[str, str]) -> None:
    """Write the file atomically: a temp file beside it, mode 0600, then rename."""
    try:
        content = dumps(settings).encode("utf-8")
    except UnicodeEncodeError:  # e.g. undecodable bytes from the command line
        raise ConfigError(
            f"Cannot write the config file {path}: a value is not valid UTF-8 text.",
            "Give the value again as plain text.",
        ) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        import tempfile  # only here: it is slow to import and only `config set` writes

        fd, tmp_name = tempfile.mkstemp(prefix=".config-", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the config file {path}: {exc.strerror or exc}",
            "Check the folder's permissions, or set APIMART_CONFIG to another path.",
        ) from None
    tmp = Path(tmp_name)
    try:
        # mkstemp already creates the file 0600, so the key is never readable by others.
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except OSError as exc:
        raise ConfigError(f"Cannot write the config file {path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def mask(value: str) -> str:
    """A key as `sk-…abcd`: enough to tell keys apart, not enough to use one."""
    if len(value) <= 8:
        return "…" * bool(value)
    prefix = value[:3] if value[2:3] == "-" else ""
    return f"{prefix}…{value[-4:]}"


def display(key: str, value: str, *, reveal: bool) -> str:
    return value if reveal or key not in SECRET_KEYS else mask(value)
