"""End to end: what a user sees of the images where a process of its own matters: a
viewer `--open` starts (its chatter kept off the command's standard output), `--preview`
on a real pseudo-terminal, and the gallery in a real browser. The rest (provenance,
inspect, `--open` without a viewer, the settings) is in `tests/flows/test_visual.py`.

The gallery is checked in a real browser: headless Chromium opens it from disk,
every image must decode and every prompt must show. The test skips, saying why,
only where Chromium is not installed.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import browser_recorder
from tests.e2e.conftest import API_KEY, COMMAND, apimart
from tests.helpers.commands import run as apimart_here
from tests.helpers.viewers import fresh_viewers

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)


def test_open_hands_each_saved_image_to_browser(env: dict[str, str], tmp_path: Path) -> None:
    """The viewer is a process the command starts, on the command's own descriptors: only
    a process of its own shows that the viewer's chatter stays off its standard output."""
    browser, log = browser_recorder(tmp_path)
    made = apimart(
        "generate", "a fox", "-n", "2", "--wait", "-o", "out", "--open",
        env={**env, "BROWSER": str(browser)}, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    expected = sorted((tmp_path / line).resolve().as_uri() for line in made.lines)
    assert sorted(log.read_text().splitlines()) == expected


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux `script` is not installed")
@pytest.mark.parametrize(
    ("terminal", "pattern"),
    [
        ({"TERM": "xterm-kitty"}, rb"\x1b_G([^;]*);([A-Za-z0-9+/=]*)\x1b\\"),
        (
            {"TERM": "xterm-256color", "LC_TERMINAL": "iTerm2"},
            rb"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]*)\x07",
        ),
    ],
)
def test_preview_on_a_real_terminal_draws_each_saved_image(
    env: dict[str, str], tmp_path: Path, terminal: dict[str, str], pattern: bytes
) -> None:
    """Under `script` the command has a real pseudo-terminal, as in a kitty or iTerm2 window."""
    command = " ".join(
        [*COMMAND, "generate", "'a fox'", "-n", "2", "--wait", "-o", "out", "--preview"]
    )
    environment = {
        k: v
        for k, v in env.items()
        if k not in ("KITTY_WINDOW_ID", "TERM_PROGRAM", "LC_TERMINAL", "TMUX")
    }
    environment.update(terminal, COLUMNS="100", LINES="40")
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True, env=environment, cwd=tmp_path, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode(errors="replace")
    saved = sorted((tmp_path / "out").glob("*.png"))
    assert len(saved) == 2
    images: list[bytes] = []
    for keys, payload in re.findall(pattern, result.stdout):
        if b"a=T" in keys or b"inline=1" in keys:
            images.append(b"")
            assert b"f=100" in keys or b"inline=1" in keys
        images[-1] += payload
    assert sorted(base64.b64decode(image) for image in images) == sorted(
        p.read_bytes() for p in saved
    )


# -- the gallery, in a real browser ------------------------------------------------------------

PROBE = """<script>
addEventListener("load", () => {
  const images = [...document.images].map(
    (i) => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images, text: document.body.innerText});
  document.body.append(out);
});
</script>"""


def in_chromium(page: Path, profile: Path) -> dict[str, object]:
    """What Chromium made of `page`: each image's state, and the text it shows.

    The gallery has no script (its policy forbids one), so the probe runs in a
    copy beside it, without the policy line, that loads the same images.
    """
    html = page.read_text("utf-8")
    probe = page.with_name(".probe.html")
    probe.write_text(
        re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html).replace(
            "</body>", PROBE + "</body>"
        ),
        "utf-8",
    )
    assert CHROMIUM is not None
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--disable-sync", f"--user-data-dir={profile}", "--window-size=1280,8000",
            "--virtual-time-budget=15000", "--dump-dom", probe.as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    probe.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, result.stderr[-2000:]
    import html as markup

    return dict(json.loads(markup.unescape(found.group(1))))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_batch_gallery_opens_in_a_real_browser(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The browser is the process here: the commands that make the page run in this one."""
    fresh_viewers(monkeypatch)
    prompts = [
        "a lighthouse at dawn",
        'a fox <script>alert("x")</script> & friends',
        "a tower, tall and thin",
        "this one fails sandbox:fail",
    ]
    jobs = tmp_path / "jobs.txt"
    jobs.write_text(
        "\n".join(
            [
                prompts[0],
                json.dumps({"prompt": prompts[1], "size": "16:9"}),
                json.dumps({"prompt": prompts[2], "size": "9:16", "n": 2}),
                prompts[3],
            ]
        )
        + "\n"
    )
    browser, log = browser_recorder(tmp_path)
    ran = apimart_here(
        "batch",
        str(jobs),
        "-o",
        "out",
        "--open",
        env={**env, "BROWSER": str(browser)},
        cwd=tmp_path,
    )
    assert ran.returncode == 1  # one job failed, by design
    page = tmp_path / "out" / "index.html"
    assert log.read_text().splitlines() == [page.resolve().as_uri()]
    html = page.read_text("utf-8")
    assert "<script" not in html and API_KEY not in html
    seen = in_chromium(page, tmp_path / "profile")
    images = seen["images"]
    assert isinstance(images, list) and len(images) == 4
    assert all(image["ok"] for image in images), images
    assert sorted(image["src"] for image in images) == sorted(
        path.name for path in (tmp_path / "out").glob("*.png")
    )
    text = str(seen["text"])
    for prompt in prompts:
        assert prompt in text
    assert "failed: The sandbox failed this task (sandbox:fail)." in text

    # The same page made afresh by `apimart gallery`, from the history and the manifest.
    page.unlink()
    made = apimart_here("gallery", "out", env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout == f"{Path('out') / 'index.html'}\n"
    # The browser is asked again only about a page that differs from the one it showed:
    # the same markup over the same files is the same page.
    again = seen if page.read_text("utf-8") == html else in_chromium(page, tmp_path / "profile")
    assert [image["ok"] for image in again["images"]] == [True] * 4  # type: ignore[union-attr]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_browser_check_can_fail(tmp_path: Path) -> None:
    """The probe is not a rubber stamp: a broken image is reported as one."""
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page = tmp_path / "index.html"
    page.write_text('<!doctype html><body><img src="bad.png"><p>hello</p></body>')
    seen = in_chromium(page, tmp_path / "profile")
    assert seen["images"] == [{"src": "bad.png", "ok": False}]
    assert "hello" in str(seen["text"])
