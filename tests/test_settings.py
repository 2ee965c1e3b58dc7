"""Settings: flag > environment > config file > default, and a safe base URL."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from apimart_cli import config_file, console, settings
from apimart_cli.constants import DEFAULT_BASE_URL
from apimart_cli.errors import AuthError, ConfigError, ExitCode, UsageError
from apimart_cli.settings import (
    BY_KEY,
    KEYS,
    SETTINGS,
    Settings,
    check_base_url,
    is_loopback,
    resembles,
)


def resolve(**flags: Any) -> Settings:
    """The settings, their notes and warnings printed as the commands print them."""
    return settings.resolve(**flags, info=console.info, warn=console.warn)


# setting -> (environment variable, a value from each source, the default)
SOURCES = {
    "api_key": (
        "APIMART_API_KEY",
        {"flag": "sk-flag", "env": "sk-env", "file": "sk-file"},
        None,
    ),
    "base_url": (
        "APIMART_BASE_URL",
        {"flag": "https://flag.test", "env": "https://env.test", "file": "https://file.test"},
        DEFAULT_BASE_URL,
    ),
    "output_dir": (
        "APIMART_OUTPUT_DIR",
        {"flag": "out-flag", "env": "out-env", "file": "out-file"},
        ".",
    ),
    # Two values only: which source won is checked by the source, not just the value.
    "references": (
        "APIMART_REFERENCES",
        {"flag": "upload", "env": "inline", "file": "upload"},
        "auto",
    ),
    "metadata": ("APIMART_METADATA", {"flag": False, "env": "1", "file": False}, True),
    "preview": ("APIMART_PREVIEW", {"flag": True, "env": "0", "file": True}, False),
}
PARSED = {"1": True, "0": False}
COMBINATIONS = list(itertools.product([True, False], repeat=3))
COMBINATION_IDS = [
    "-".join(name for name, on in zip(("flag", "env", "file"), combo, strict=True) if on) or "none"
    for combo in COMBINATIONS
]


def _value(settings: Settings, name: str) -> str | bool | None:
    value = getattr(settings, name)
    return str(value) if isinstance(value, Path) else value


@pytest.mark.parametrize("name", list(SOURCES))
@pytest.mark.parametrize(
    ("flag", "env", "file"),
    COMBINATIONS,
    ids=COMBINATION_IDS,
)
def test_precedence(
    name: str, flag: bool, env: bool, file: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    variable, values, default = SOURCES[name]
    if env:
        monkeypatch.setenv(variable, values["env"])
    if file:
        config_file.save(config_file.config_path(), {name: values["file"]})
    settings = resolve(**{name: values["flag"] if flag else None})
    source = next(
        (source for source, on in (("flag", flag), ("env", env), ("file", file)) if on),
        "default",
    )
    chosen = default if source == "default" else values[source]
    assert _value(settings, name) == PARSED.get(chosen, chosen)  # type: ignore[arg-type]
    assert settings.sources[name].kind == source


def test_each_setting_from_its_own_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIMART_BASE_URL", "https://env.test/")
    config_file.save(
        config_file.config_path(),
        {"api_key": "sk-file", "base_url": "https://file.test", "output_dir": "from-file"},
    )
    settings = resolve(output_dir="from-flag")
    assert settings == Settings(
        api_key="sk-file", base_url="https://env.test", output_dir=Path("from-flag")
    )


def test_empty_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIMART_API_KEY", "")
    monkeypatch.setenv("APIMART_BASE_URL", "")
    config_file.save(config_file.config_path(), {"api_key": "sk-file"})
    settings = resolve(api_key="", base_url="", output_dir="")
    assert settings.api_key == "sk-file"
    assert settings.base_url == DEFAULT_BASE_URL
    assert settings.output_dir == Path(".")


def test_blank_flags_count_as_unset_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # A blank flag was "given" with no value: the environment's key and URL were passed
    # over for no key at all (exit 3) and the default URL.
    monkeypatch.setenv("APIMART_API_KEY", "sk-env")
    monkeypatch.setenv("APIMART_BASE_URL", "https://env.test")
    settings = resolve(api_key="   ", base_url=" \t ", output_dir="  ", references=" ")
    assert settings.api_key == "sk-env"
    assert settings.base_url == "https://env.test"
    assert settings.output_dir == Path(".")
    assert settings.sources["api_key"].kind == "env"


def test_defaults_without_any_source() -> None:
    assert not config_file.config_path().exists()
    assert resolve() == Settings(
        api_key=None,
        base_url=DEFAULT_BASE_URL,
        output_dir=Path("."),
        references="auto",
        metadata=True,
        preview=False,
    )


def test_the_table_names_each_setting_once() -> None:
    assert KEYS == ("api_key", "base_url", "output_dir", "references", "metadata", "preview")
    assert tuple(item.key for item in SETTINGS) == KEYS  # the help's list is the table's
    assert {item.env for item in SETTINGS} == {
        "APIMART_API_KEY",
        "APIMART_BASE_URL",
        "APIMART_OUTPUT_DIR",
        "APIMART_REFERENCES",
        "APIMART_METADATA",
        "APIMART_PREVIEW",
    }
    assert [item.key for item in SETTINGS if item.secret] == ["api_key"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("0", False),
        ("true", True),
        ("FALSE", False),
        (" yes ", True),
        ("off", False),
        (True, True),
        (False, False),
        ("", None),
    ],
)
def test_switches_read_0_1_and_words(raw: str | bool, expected: bool | None) -> None:
    assert BY_KEY["preview"].parse(raw) is expected


@pytest.mark.parametrize("raw", ["2", "maybe", "nope"])
def test_a_switch_refuses_anything_else_naming_where_it_came_from(raw: str) -> None:
    with pytest.raises(UsageError) as caught:
        BY_KEY["metadata"].parse(raw, "APIMART_METADATA")
    assert caught.value.message.startswith("APIMART_METADATA: metadata must be 0 or 1")
    assert repr(raw) in caught.value.message


def test_settings_say_where_each_value_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIMART_BASE_URL", "http://127.0.0.1:9")
    config_file.save(config_file.config_path(), {"output_dir": "out"})
    settings = resolve(api_key="sk-flag")
    assert settings.source("api_key") == "--api-key"
    assert settings.source("base_url") == "APIMART_BASE_URL"
    assert settings.source("output_dir") == f"the config file {config_file.config_path()}"
    assert settings.source("preview") == "the default"


def test_the_config_file_is_not_read_when_flags_and_environment_say_it_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = config_file.config_path()
    path.parent.mkdir(parents=True)
    path.write_text("not toml at all [\n")
    for variable, values, _default in SOURCES.values():
        value = values["env"]
        monkeypatch.setenv(variable, value if isinstance(value, str) else str(int(value)))
    assert resolve().api_key == "sk-env"


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("api-key", "api_key"),
        ("API_KEY", "api_key"),
        ("apikey", "api_key"),
        ("api_kye", "api_key"),
        ("base-url", "base_url"),
        ("baseurl", "base_url"),
        ("output", "output_dir"),
        ("output-dir", "output_dir"),
        ("refs", None),
        ("reference", "references"),
        ("previews", "preview"),
        ("colour", None),
    ],
)
def test_resembles_names_the_key_meant(key: str, meant: str | None) -> None:
    assert resembles(key) == meant


def test_an_unknown_key_in_the_file_is_named_with_the_one_meant_never_its_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = config_file.config_path()
    config_file.save(path, {"api-key": "sk-misplaced-secret-123", "base_url": "https://f.test"})

    settings = resolve()

    assert settings.api_key is None  # not used: it may be anything
    err = capsys.readouterr().err
    assert err == (
        f"Warning: the config file {path} has an unknown setting 'api-key'; did you mean"
        " api_key? It is ignored.\n"
    )
    assert "sk-misplaced" not in err


def test_a_config_file_others_can_read_holding_a_key_is_used_with_a_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = config_file.config_path()
    config_file.save(path, {"api_key": "sk-file-key-1234"})
    path.chmod(0o644)

    assert resolve().api_key == "sk-file-key-1234"

    err = capsys.readouterr().err
    assert err == (
        f"Warning: the config file {path} holds an API key and others can read it (mode 644)."
        f" Run: chmod 600 '{path}'\n"
    )


def test_a_readable_config_file_without_a_key_is_no_concern(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = config_file.config_path()
    config_file.save(path, {"output_dir": "out"})
    path.chmod(0o644)
    resolve()
    assert capsys.readouterr().err == ""


def test_output_dir_expands_the_home_folder() -> None:
    assert resolve(output_dir="~/pictures").output_dir == Path.home() / "pictures"


def test_malformed_config_file_is_a_config_error() -> None:
    path = config_file.config_path()
    path.parent.mkdir(parents=True)
    path.write_text("api_key = \n")
    with pytest.raises(ConfigError) as caught:
        resolve()
    assert str(path) in caught.value.message


def test_base_url_from_the_file_is_checked_too() -> None:
    config_file.save(config_file.config_path(), {"base_url": "http://api.example.com"})
    with pytest.raises(UsageError) as caught:
        resolve(api_key="sk-1")
    assert caught.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.apimart.ai", "https://api.apimart.ai"),
        ("https://api.apimart.ai/", "https://api.apimart.ai"),
        ("  https://api.apimart.ai/  ", "https://api.apimart.ai"),
        ("https://proxy.example.com/apimart/", "https://proxy.example.com/apimart"),
        ("HTTPS://API.APIMART.AI", "HTTPS://API.APIMART.AI"),
        ("https://10.0.0.1:8443", "https://10.0.0.1:8443"),
        ("http://localhost", "http://localhost"),
        ("http://localhost:8787/", "http://localhost:8787"),
        ("http://LOCALHOST:8787", "http://LOCALHOST:8787"),
        ("http://127.0.0.1:8787", "http://127.0.0.1:8787"),
        ("http://127.0.0.5:8/", "http://127.0.0.5:8"),
        ("http://127.255.255.254", "http://127.255.255.254"),
        ("http://[::1]:9", "http://[::1]:9"),
        ("http://[::1]", "http://[::1]"),
    ],
)
def test_check_base_url_accepts(url: str, expected: str) -> None:
    assert check_base_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://api.apimart.ai",
        "http://10.0.0.1",
        "http://192.168.1.1:8787",
        "http://0.0.0.0:8787",
        "http://128.0.0.1",
        "http://[::2]:9",
        "http://localhost.example.com",
        "http://127.0.0.1.example.com",
    ],
)
def test_check_base_url_refuses_plain_http_off_loopback(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url(url)
    assert caught.value.exit_code == ExitCode.USAGE == 2
    assert "HTTP" in caught.value.message
    assert caught.value.hint and "https://" in caught.value.hint


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "ftp://api.apimart.ai",
        "file:///etc/passwd",
        "garbage",
        "",
        "   ",
        "api.apimart.ai",
        "https://",
        "https:///path",
        "http://",
        "//api.apimart.ai",
        "http://[::1",
        "https://[not-an-ip]/",
        "https://api.apimart.ai:99999",
        "https://api.apimart.ai:port",
        "https://a b",  # was accepted, and requests went to `https://a%20b`
        "https://api.apimart.ai\t/",
        "https://api.apimart.ai/\x1b[2J",
        "https://api.\u202eapimart.ai",
    ],
)
def test_check_base_url_refuses_garbage(url: str) -> None:
    with pytest.raises(UsageError) as caught:
        check_base_url(url)
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.hint


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("LocalHost", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("10.0.0.1", False),
        ("::2", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_require_key_returns_the_key() -> None:
    assert Settings("sk-1", DEFAULT_BASE_URL, Path(".")).require_key() == "sk-1"


@pytest.mark.parametrize("key", [None, ""])
def test_require_key_without_a_key_is_an_auth_error(key: str | None) -> None:
    with pytest.raises(AuthError) as caught:
        Settings(key, DEFAULT_BASE_URL, Path(".")).require_key()
    assert caught.value.exit_code == ExitCode.AUTH == 3
    assert caught.value.hint is not None
    assert "apimart config set api_key" in caught.value.hint
    assert "APIMART_API_KEY" in caught.value.hint


def test_a_key_pasted_with_spaces_around_it_is_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIMART_API_KEY", "  sk-abcdef123456\n")
    assert resolve().require_key() == "sk-abcdef123456"


@pytest.mark.parametrize("key", ["sk-abc def123456", "sk-clé-123456789", "sk-abc\x01def12345"])
def test_a_key_that_cannot_go_in_a_header_is_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("APIMART_API_KEY", key)
    with pytest.raises(UsageError) as caught:
        resolve().require_key()
    assert caught.value.exit_code == ExitCode.USAGE
    assert key not in caught.value.message


def test_taking_the_key_to_send_it_hides_it_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any caller (a command, the MCP server) that takes the key has it hidden from
    # what is printed and what the history writes, without having to remember to.
    from apimart_cli import console

    monkeypatch.setenv("APIMART_API_KEY", "sk-taken-to-send-1234")
    assert console.redact("echo sk-taken-to-send-1234") == "echo sk-taken-to-send-1234"
    resolve().require_key()
    assert console.redact("echo sk-taken-to-send-1234") == "echo [API key]"


@pytest.mark.parametrize(
    ("toml", "kind"),
    [
        ('api_key = ["sk-typed-9Lm2Qx7Wv4Kp"]', "a list"),
        ('[api_key]\nvalue = "sk-typed-9Lm2Qx7Wv4Kp"', "a table"),
        ("api_key = 123456789012345", "a number"),
        ("api_key = 1979-05-27T07:32:00Z", "another kind of value"),
    ],
)
def test_a_wrongly_typed_key_is_an_error_that_does_not_show_it(toml: str, kind: str) -> None:
    path = config_file.config_path()
    path.parent.mkdir(parents=True)
    path.write_text(toml + "\n")
    with pytest.raises(ConfigError) as caught:
        resolve()
    message = f"{caught.value.message} {caught.value.hint}"
    assert f"api_key must be a string, not {kind}." in message
    for secret in ("sk-typed", "1234567890", "1979"):
        assert secret not in message
