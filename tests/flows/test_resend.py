"""A batch job whose reference changed is not resent with its key until the file is
back, against a sandbox that holds idempotency keys strictly (409 while in flight, 422
for another body). What a kill or a pipeline shows is in `tests/e2e/test_resend.py`."""

from __future__ import annotations

import json
from pathlib import Path

from apimart_cli.sandbox import Fault, Sandbox, SandboxConfig, encode_png
from tests.helpers.commands import run as apimart
from tests.helpers.records import SUBMIT


def test_a_batch_job_whose_reference_changed_keeps_its_key_until_the_file_is_back(
    env: dict[str, str], tmp_path: Path
) -> None:
    photo = tmp_path / "fox.png"
    photo.write_bytes(encode_png(4, 4, (b"\x00" + bytes([200, 90, 20]) * 4) * 4))
    original = photo.read_bytes()
    (tmp_path / "jobs.txt").write_text(json.dumps({"prompt": "ink it", "images": ["fox.png"]}))
    argv = ["batch", "jobs.txt", "-o", "out", "--interval", "0.1"]
    with Sandbox(SandboxConfig(duration=0.3, strict_idempotency=True)) as sandbox:
        user = {**env, "APIMART_BASE_URL": sandbox.base_url}
        sandbox.inject(Fault("after_create", method="POST", path=SUBMIT, status=500))
        lost = apimart(*argv, env=user, cwd=tmp_path)
        assert lost.returncode == 5, lost.stderr
        # The file is edited before the rerun.
        photo.write_bytes(encode_png(4, 4, (b"\x00" + bytes([20, 90, 200]) * 4) * 4))

        refused = apimart(*argv, env=user, cwd=tmp_path)

        assert refused.returncode == 2, refused.stderr
        assert "changed since idempotency key" in refused.stderr
        photo.write_bytes(original)
        again = apimart(*argv, env=user, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(again.lines) == 1
    [made] = sandbox.submissions()
    keys = [r.headers["idempotency-key"] for r in sandbox.requests if r.path == SUBMIT]
    assert len(keys) == 2 and len(set(keys)) == 1  # nothing sent while the file differed
    assert Path(tmp_path / again.lines[0]).name.startswith(str(made.task_id))
