"""Videos: the command against the sandbox's video model, from the request to the
saved file, the history and the gallery."""

from __future__ import annotations

import json
from pathlib import Path

from apimart_cli.integrity import flaw
from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig
from apimart_cli.sandbox.rules import SPEECH_MODEL, VIDEO_MODEL
from apimart_cli.sandbox.videos import mp4_video
from tests.helpers.commands import run as apimart
from tests.helpers.records import direct

VIDEOS = "/v1/videos/generations"


def test_sandbox_generate_saves_the_whole_mp4_served_in_history_and_gallery(
    env: dict[str, str], tmp_path: Path
) -> None:
    own = {k: v for k, v in env.items() if k not in ("APIMART_API_KEY", "APIMART_BASE_URL")}
    prompt = "waves at dusk"
    argv = ["--sandbox", "generate", prompt, "--model", VIDEO_MODEL, "--param", "duration=4"]
    run = apimart(*argv, "--wait", "-o", "out/", env=own, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    [line] = run.lines
    saved = tmp_path / line
    task_id = saved.name.removesuffix("_0.mp4")
    assert saved.name == f"{task_id}_0.mp4"
    # The sandbox (seed 0) makes each video from its task and prompt: these are its bytes.
    assert saved.read_bytes() == mp4_video(128, 72, 4.0, f"0:{task_id}:{prompt}")
    assert flaw(saved.read_bytes(), to_the_end=True) is None
    assert "1 video saved, 0 tasks failed, cost 0.4." in run.stderr
    history = apimart("history", "--json", env=own, cwd=tmp_path)
    [record] = [json.loads(line) for line in history.lines]
    assert (record["task_id"], record["kind"], record["duration"]) == (task_id, "video", 4.0)
    assert record["files"] == [str(saved)]
    gallery = apimart("gallery", "out", env=own, cwd=tmp_path)
    assert gallery.returncode == 0, gallery.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert f'<video controls preload="metadata" src="{saved.name}"' in page
    assert "<script" not in page
    inspect = apimart("inspect", str(saved), env=own, cwd=tmp_path)
    assert inspect.returncode == 1
    assert "is a video: a video carries no provenance in the file" in inspect.stderr


def test_a_video_served_cut_short_is_refused_then_resumed_whole(
    env: dict[str, str], tmp_path: Path
) -> None:
    with Sandbox(SandboxConfig(duration=0.1)) as sandbox:
        # The host sends half of the file, announced as all of it: only its boxes tell.
        sandbox.inject(Fault("short", path="/f/", cut=0.5))
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        argv = ["generate", "a tide", "--model", VIDEO_MODEL, "--wait", "-o", "out"]
        run = apimart(*argv, env=user, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        [line] = run.lines
        served = direct.get(sandbox.image_base_url + f"/f/image/{Path(line).name}").content
        ranged = [r for r in sandbox.requests if r.origin == "image" and "range" in r.headers]
    assert (tmp_path / line).read_bytes() == served
    assert "cut short" in run.stderr and "mdat" in run.stderr
    assert ranged, "the rest should be asked for with a Range request"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [Path(line).name]


def test_a_model_whose_results_cannot_be_saved_is_refused_before_paying(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    run = apimart("generate", "a song", "--model", SPEECH_MODEL, "--wait", env=env, cwd=tmp_path)
    assert run.returncode == 2
    assert SPEECH_MODEL in run.stderr and "speech_generation" in run.stderr
    assert [r.method for r in sandbox.requests] == ["GET"]  # the schema, nothing paid
    assert sandbox.submissions() == []


def test_batch_saves_a_video_job_beside_an_image_job(
    sandbox: Sandbox, env: dict[str, str], tmp_path: Path
) -> None:
    jobs = tmp_path / "jobs.txt"
    video_job = {"prompt": "waves", "model": VIDEO_MODEL, "params": {"duration": 8}}
    jobs.write_text("a lighthouse\n" + json.dumps(video_job) + "\n")
    run = apimart("batch", str(jobs), "-o", "out", "--metadata", env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    names = sorted(Path(line).suffix for line in run.lines)
    assert names == [".mp4", ".png"]
    posted = sorted(r.path for r in sandbox.requests if r.method == "POST")
    assert posted == ["/v1/images/generations", VIDEOS]
    [video] = [Path(line) for line in run.lines if line.endswith(".mp4")]
    sidecar = json.loads((tmp_path / video).with_suffix(".json").read_text())
    assert (sidecar["kind"], sidecar["duration"], sidecar["prompt"]) == ("video", 8.0, "waves")
    assert "2 done; 2 file(s); cost 0.85" in run.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert '<video controls preload="metadata"' in page
