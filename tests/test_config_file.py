"""The config file: TOML round trip, mode 0600, atomic writes, clear errors."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from apimart_cli.config_file import (
    config_path,
    dumps,
    load,
    mask,
    save,
)
from apimart_cli.errors import ConfigError, ExitCode

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "conf" / "config.toml"


@pytest.mark.parametrize(
    "value",
    [
        "sk-abcdefgh1234",
        "https://api.apimart.ai",
        'with "double" quotes',
        "with 'single' quotes",
        "back\\slash and \\n not a newline",
        "C:\\Users\\me\\out",
        "unicode: 图片 café ✓ 🦊",
        "del \x7f char",
        "controls \x00 \x01 \x1f \t \n \r \b \f",
        "trailing backslash \\",
        '"""',
        "'''",
        "",
        " spaces around ",
        "# not a comment",
        "a = b",
        "\u2028 \u2029 \ufeff",
    ],
)
def test_round_trip(path: Path, value: str) -> None:
    settings = {"api_key": value, "base_url": "https://x.test", "output_dir": value}
    save(path, settings)
    assert load(path) == settings
    # What is written is TOML any reader takes, not just ours.
    assert tomllib.loads(path.read_text(encoding="utf-8")) == settings


def test_dumps_is_a_flat_table() -> None:
    assert dumps({"api_key": "sk-1", "base_url": "https://a"}) == (
        'api_key = "sk-1"\nbase_url = "https://a"\n'
    )
    assert dumps({}) == ""


def test_load_missing_file_is_empty(path: Path) -> None:
    assert load(path) == {}


def test_save_creates_the_folder_and_mode_0600(path: Path) -> None:
    save(path, {"api_key": "sk-secret"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0


def test_save_over_a_world_readable_file_makes_it_0600(path: Path) -> None:
    path.parent.mkdir()
    path.write_text('api_key = "old"\n')
    path.chmod(0o644)
    save(path, {"api_key": "sk-new"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load(path) == {"api_key": "sk-new"}


def test_save_leaves_no_temp_file(path: Path) -> None:
    save(path, {"api_key": "sk-1"})
    save(path, {"api_key": "sk-2", "base_url": "https://b"})
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]


def test_failed_replace_keeps_the_old_file_and_leaves_no_temp_file(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(path, {"api_key": "sk-old"})

    def fail(self: Path, target: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", fail)
    monkeypatch.setattr(os, "replace", lambda *args, **kwargs: fail(path, None))
    with pytest.raises(ConfigError) as caught:
        save(path, {"api_key": "sk-new"})
    assert str(path) in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE
    assert "sk-new" not in caught.value.message
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.toml"]
    monkeypatch.undo()
    assert load(path) == {"api_key": "sk-old"}


def test_failed_write_leaves_no_temp_file(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path.parent.mkdir()

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(ConfigError):
        save(path, {"api_key": "sk-1"})
    assert list(path.parent.iterdir()) == []


def test_value_that_is_not_utf8_is_a_config_error(path: Path) -> None:
    # An undecodable command-line argument arrives as a lone surrogate.
    with pytest.raises(ConfigError) as caught:
        save(path, {"output_dir": "out\udcff"})
    assert str(path) in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE
    assert not path.exists()
    assert not path.parent.exists() or list(path.parent.iterdir()) == []


def test_unwritable_folder_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as caught:
        save(blocker / "config.toml", {"api_key": "sk-1"})
    assert str(blocker / "config.toml") in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('api_key = "sk-1"\nbase_url = https://x\n', 2),
        ('api_key = "unterminated\n', 1),
        ('api_key = "a"\napi_key = "b"\n', 2),
        ("\n\n\nthis is not toml\n", 4),
        # Cut short: the decoder says only "at end of document".
        ("api_key = [\n", 1),
        ('api_key = "sk-1"\nbase_url = "https://unterminated', 2),
        ('api_key = "sk-1"\nbase_url =\n\n\n', 2),
    ],
)
def test_malformed_toml_names_the_file_and_line(path: Path, text: str, line: int) -> None:
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(path) in caught.value.message
    assert f"line {line}" in caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.hint


def test_undecodable_file_is_a_config_error(path: Path) -> None:
    path.parent.mkdir()
    path.write_bytes(b'api_key = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(path) in caught.value.message


def test_a_file_of_100_mb_is_a_config_error_not_read_whole(path: Path) -> None:
    path.parent.mkdir()
    with path.open("w") as file:
        file.write('base_url = "https://api.apimart.ai"\n')
        file.truncate(100 * 1024 * 1024)  # sparse: NULs after the first line
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(path) in caught.value.message
    assert "over 1 MiB" in caught.value.message


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "config.toml"
    folder.mkdir()  # a folder where the file should be
    with pytest.raises(ConfigError) as caught:
        load(folder)
    assert str(folder) in caught.value.message


def test_load_gives_every_key_as_toml_read_it(path: Path) -> None:
    # Which keys are known, and what their values may be, is for `settings` to say.
    path.parent.mkdir()
    path.write_text('api_key = "sk-1"\ncolour = "red"\nmetadata = false\nretries = 3\n')
    assert load(path) == {"api_key": "sk-1", "colour": "red", "metadata": False, "retries": 3}


def test_booleans_and_numbers_round_trip(path: Path) -> None:
    settings = {"metadata": False, "preview": True, "retries": 3, "ratio": 1.5}
    save(path, settings)
    assert path.read_text() == "metadata = false\npreview = true\nretries = 3\nratio = 1.5\n"
    assert load(path) == settings


def test_a_key_toml_must_quote_is_quoted(path: Path) -> None:
    save(path, {"api key": "x"})
    assert load(path) == {"api key": "x"}


def test_a_table_it_cannot_rewrite_is_an_error_not_lost(path: Path) -> None:
    path.parent.mkdir()
    path.write_text('api_key = "sk-1"\n[extra]\na = 1\n')
    with pytest.raises(ConfigError) as caught:
        save(path, {**load(path), "base_url": "https://x"})
    assert "'extra'" in caught.value.message
    assert load(path) == {"api_key": "sk-1", "extra": {"a": 1}}


def test_a_symlinked_config_file_stays_a_link_and_its_target_is_written(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "apimart.toml"
    target.write_text('base_url = "https://old.test"\n')
    link = tmp_path / "conf" / "config.toml"
    link.parent.mkdir()
    link.symlink_to(target)

    save(link, {"base_url": "https://new.test"})

    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    assert target.read_text() == 'base_url = "https://new.test"\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    # The temp file was made beside the target and renamed onto it: nothing left over.
    assert sorted(p.name for p in dotfiles.iterdir()) == ["apimart.toml"]
    assert sorted(p.name for p in link.parent.iterdir()) == ["config.toml"]


def test_a_dangling_symlink_is_written_through_to_its_target(tmp_path: Path) -> None:
    target = tmp_path / "dotfiles" / "apimart.toml"
    link = tmp_path / "config.toml"
    link.symlink_to(target)

    save(link, {"output_dir": "out"})

    assert link.is_symlink()
    assert load(target) == {"output_dir": "out"}


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("sk-abcdefgh1234", "sk-…1234"),
        ("sk-abcd", "…"),
        ("sk-abcde", "…"),
        ("sk-abcdef", "sk-…cdef"),
        ("abcdefghijkl", "…ijkl"),
        ("12345678", "…"),
        ("x", "…"),
        ("", ""),
    ],
)
def test_mask(value: str, masked: str) -> None:
    assert mask(value) == masked


def test_mask_never_shows_a_short_key() -> None:
    for length in range(1, 9):
        key = "k" * length
        assert key not in mask(key)


def test_config_path_honours_apimart_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APIMART_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert config_path() == tmp_path / "elsewhere.toml"
    monkeypatch.setenv("APIMART_CONFIG", "~/apimart.toml")
    assert config_path() == Path.home() / "apimart.toml"


def test_config_path_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("APIMART_CONFIG")
    from platformdirs import user_config_dir

    assert config_path() == Path(user_config_dir("apimart")) / "config.toml"


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_config_file_that_is_no_file_is_refused_at_once(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.message == f"The config file {path} is not a regular file."


def test_a_config_path_with_escapes_reaches_no_message_raw(tmp_path: Path) -> None:
    # APIMART_CONFIG may name any path: an escape sequence or a line break in it must
    # not drive the terminal or forge a line when an error names the file.
    folder = tmp_path / "c\x1b]0;title\x07\x1b[31mred\nsecond line"
    folder.mkdir()
    (folder / "bad.toml").write_text("key = [\n")
    (folder / "file").write_text("")
    errors = []
    for attempt in (
        lambda: load(folder / "bad.toml"),
        lambda: load(folder / "file" / "config.toml"),
        lambda: save(folder / "file" / "config.toml", {"output_dir": "x"}),
    ):
        with pytest.raises(ConfigError) as caught:
            attempt()
        errors.append(caught.value.message)
    for message in errors:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in message), message
        assert "second line" in message
