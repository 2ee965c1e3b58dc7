"""Bad input on the command line, in the environment or in the config file: a clear
error naming the bad value, exit 2, nothing sent and nothing written. Never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_httpx import HTTPXMock

from tests.cli.conftest import PNG, api_requests, record, run

# Every command that takes --timeout (and --interval), as a user would call it.
TIMED = [
    ("generate", "a red fox"),
    ("generate", "a red fox", "--wait"),
    ("status", "task_1"),
    ("wait", "task_1"),
    ("download", "task_1"),
    ("batch", "jobs.txt"),
    ("upload", "a.png"),
    ("models",),
    ("balance",),
    ("resend",),
]
POLLING = [("generate", "a red fox", "--wait"), ("wait", "task_1"), ("batch", "jobs.txt")]


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(PNG)
    (tmp_path / "jobs.txt").write_text("a red fox\n")
    return tmp_path


@pytest.mark.parametrize("command", TIMED, ids=" ".join)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "1e308", str(10**30)])
def test_a_timeout_that_is_no_number_of_seconds_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, files: Path, command: tuple[str, ...], value: str
) -> None:
    result = run(*command, "--timeout", value)
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.stderr
    assert result.stdout == ""
    assert api_requests(httpx_mock) == []
    assert sorted(p.name for p in files.iterdir()) == ["a.png", "jobs.txt"]


@pytest.mark.parametrize("command", POLLING, ids=" ".join)
@pytest.mark.parametrize("value", ["nan", "inf", "1e308"])
def test_an_interval_that_is_no_number_of_seconds_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, files: Path, command: tuple[str, ...], value: str
) -> None:
    result = run(*command, "--interval", value)
    assert result.exit_code == 2, result.output
    assert "--interval" in result.stderr
    assert api_requests(httpx_mock) == []


@pytest.mark.parametrize("value", ["257", "100000", str(10**30)])
def test_max_in_flight_past_its_limit_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, value: str
) -> None:
    # Each slot was a thread started up front: 10**30 of them hung the command.
    result = run("wait", "task_1", "--max-in-flight", value)
    assert result.exit_code == 2, result.output
    assert "--max-in-flight" in result.stderr and "256" in result.stderr
    assert api_requests(httpx_mock) == []


def test_a_history_limit_past_any_integer_lists_everything() -> None:
    record("task_1")
    result = run("history", "--limit", str(10**30))
    assert result.exit_code == 0, result.output
    assert "task_1" in result.stdout


BAD_MODELS = ["a\nb", "a\x00b", "gpt\x1b[31m", "gpt\u202eimage", "gpt image", "m" * (1 << 20)]
BAD_MODEL_IDS = ["newline", "nul", "escape", "bidi", "space", "1-MiB"]


@pytest.mark.parametrize("model", BAD_MODELS, ids=BAD_MODEL_IDS)
@pytest.mark.parametrize("command", [("generate", "a red fox", "--model"), ("models",)], ids=str)
def test_a_model_name_no_service_has_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, command: tuple[str, ...], model: str
) -> None:
    # A megabyte's name ended in a traceback (httpx: "URL component 'query' too long");
    # the others were sent to /v1/model-schema.
    result = run(*command, model)
    assert result.exit_code == 2, result.output
    assert "Invalid model name" in result.stderr
    assert len(result.stderr.splitlines()) == 2 and len(result.stderr) < 300
    assert api_requests(httpx_mock) == []


def test_a_jobs_line_with_a_model_no_service_has_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, files: Path
) -> None:
    (files / "jobs.txt").write_text('{"prompt": "a red fox", "model": "a\\nb"}\n')
    result = run("batch", "jobs.txt", "-o", "out")
    assert result.exit_code == 2, result.output
    assert "line 1: Invalid model name 'a\\nb'" in result.stderr
    assert api_requests(httpx_mock) == []
    assert not (files / "out").exists()


@pytest.mark.parametrize(
    "url",
    ["https://a b/c.png", "https://cdn.test/a b.png", "https://cdn.test/\x1b[2J.png"],
    ids=["space-in-host", "space-in-path", "escape"],
)
def test_a_reference_url_with_spaces_or_controls_exits_2_with_nothing_sent(
    api: str, httpx_mock: HTTPXMock, url: str
) -> None:
    result = run("generate", "a red fox", "-i", url)
    assert result.exit_code == 2, result.output
    assert f"Reference URL {url!r}" in result.stderr
    assert api_requests(httpx_mock) == []


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("a\nb.png", "'a\\nb.png'"),
        ("fo\u202e.png", "'fo\\u202e.png'"),
        ("x" * 5000, "'" + "x" * 60 + "…'"),
    ],
    ids=["newline", "bidi", "5000-chars"],
)
@pytest.mark.parametrize("command", [("generate", "a red fox", "-i"), ("upload",)], ids=str)
def test_a_missing_reference_is_named_on_one_line_as_typed(
    api: str,
    httpx_mock: HTTPXMock,
    files: Path,
    command: tuple[str, ...],
    name: str,
    shown: str,
) -> None:
    result = run(*command, name)
    assert result.exit_code == 2, result.output
    first = result.stderr.splitlines()[0]
    assert first.endswith(shown) or f"{shown}:" in first, first
    assert len(result.stderr.splitlines()) == 2
    assert api_requests(httpx_mock) == []


@pytest.mark.parametrize(
    "option",
    [
        "--estimate-factor",
        "--latency",
        "--download-rate",
        "--submit-rate",
        "--poll-rate",
        "--failure-rate",
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_sandbox_switch_that_is_no_finite_number_exits_2_before_serving(
    option: str, value: str
) -> None:
    result = run("sandbox", "--port", "0", option, value)

    assert result.exit_code == 2, result.output
    assert option in result.stderr and value in result.stderr
    assert result.stdout == ""  # no base URL: nothing was served


@pytest.mark.parametrize(
    ("where", "value", "named"),
    [
        ("flag", "~no-such-user-here/out", "output_dir names a home folder that is not here"),
        ("APIMART_OUTPUT_DIR", "~no-such-user-here/out", "APIMART_OUTPUT_DIR"),
        ("APIMART_DATA_DIR", "~no-such-user-here", "APIMART_DATA_DIR names a home folder"),
        ("APIMART_CONFIG", "~no-such-user-here/c.toml", "APIMART_CONFIG names a home folder"),
        ("config", "/tmp/out\x00put", "output_dir has a NUL character"),
    ],
)
def test_a_path_no_file_can_have_exits_2_naming_it_with_nothing_sent(
    api: str,
    httpx_mock: HTTPXMock,
    files: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    value: str,
    named: str,
) -> None:
    args = ["generate", "a red fox", "--wait"]
    if where == "flag":
        args += ["-o", value]
    elif where == "config":
        config = files / "config.toml"
        escaped = value.replace("\x00", "\\u0000")  # as TOML writes a NUL
        config.write_text(f'output_dir = "{escaped}"\n')
        monkeypatch.setenv("APIMART_CONFIG", str(config))
    else:
        monkeypatch.setenv(where, value)

    result = run(*args)

    assert result.exit_code == 2, result.output
    assert named in result.stderr and "internal error" not in result.stderr
    assert api_requests(httpx_mock) == []
