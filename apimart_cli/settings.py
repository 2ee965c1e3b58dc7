"""Settings, resolved once: command-line flag > environment > config file > default."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from apimart_cli import config_file
from apimart_cli.constants import DEFAULT_BASE_URL
from apimart_cli.errors import AuthError, UsageError

ENV_API_KEY = "APIMART_API_KEY"
ENV_BASE_URL = "APIMART_BASE_URL"
ENV_OUTPUT_DIR = "APIMART_OUTPUT_DIR"


@dataclass(frozen=True)
class Settings:
    api_key: str | None
    base_url: str
    output_dir: Path

    def require_key(self) -> str:
        """The key, checked before it goes into a header: exit 3 if missing, 2 if unsendable."""
        if not self.api_key:
            raise no_key_error()
        if not (self.api_key.isascii() and self.api_key.isprintable() and " " not in self.api_key):
            raise UsageError(
                "The API key has spaces or characters that cannot be sent in a header.",
                "Copy it again from https://apimart.ai/keys: `apimart config set api_key`.",
            )
        return self.api_key


def no_key_error() -> AuthError:
    """The error for a command that needs the API key and has none (exit 3)."""
    return AuthError("No API key.", "Run `apimart config set api_key`, or set APIMART_API_KEY.")


def _first(*values: str | None) -> str | None:
    return next((value for value in values if value), None)


def resolve(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    output_dir: str | None = None,
) -> Settings:
    """The settings from flags (the arguments), the environment and the config file."""
    env = os.environ
    needs_file = not (
        _first(api_key, env.get(ENV_API_KEY))
        and _first(base_url, env.get(ENV_BASE_URL))
        and _first(output_dir, env.get(ENV_OUTPUT_DIR))
    )
    stored = config_file.load(config_file.config_path()) if needs_file else {}
    url = _first(base_url, env.get(ENV_BASE_URL), stored.get("base_url")) or DEFAULT_BASE_URL
    folder = _first(output_dir, env.get(ENV_OUTPUT_DIR), stored.get("output_dir")) or "."
    return Settings(
        api_key=(_first(api_key, env.get(ENV_API_KEY), stored.get("api_key")) or "").strip()
        or None,
        base_url=check_base_url(url),
        output_dir=Path(folder).expanduser(),
    )


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """The URL without a trailing slash; the key goes over HTTPS, or plain HTTP to loopback."""
    invalid = UsageError(
        f"Invalid base URL {url!r}.", "Use an https:// URL such as https://api.apimart.ai."
    )
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        parts.port  # noqa: B018 - a bad port raises here rather than as a traceback later
    except ValueError:  # e.g. `http://[::1` or a port that is not 0-65535
        raise invalid from None
    if parts.scheme == "https" and host:
        return url.strip().rstrip("/")
    if parts.scheme == "http" and is_loopback(host):
        return url.strip().rstrip("/")
    if parts.scheme == "http" and host:
        raise UsageError(
            f"Refusing to send the API key over plain HTTP to {url!r}.",
            "Use an https:// base URL (http:// is allowed only for localhost).",
        )
    raise invalid
