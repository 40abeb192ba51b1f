"""Two runs on one work folder: the second fails at once (exit 7) or, with --wait-lock, waits and
then reuses the first's stages; one model version is registered, and a retried registration under
the same key returns it instead of making another."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from _cli_job import cli_env, raypipe, start, synth_job
from _mlflow_store import sqlite_store

pytestmark = pytest.mark.integration


def test_one_run_per_work_folder_and_one_version(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from raypipe.registry.versions import RUN_KEY_TAG, register_bundle

    config = synth_job(tmp_path, "locked", train={"num_boost_round": 200})
    uri = sqlite_store(tmp_path)
    cmd = raypipe("run", str(config), "--tracking-uri", uri)
    first = start(cmd, tmp_path)
    waiting = None
    try:
        for line in first.stdout:  # the lock is held from before the first stage
            if "ingest" in line:
                break
        t0 = time.monotonic()
        refused = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=120)
        refused_s = time.monotonic() - t0
        waiting = start([*cmd, "--wait-lock"], tmp_path)
        out, errs = first.communicate(timeout=300)
        assert first.returncode == 0, out + errs
        w_out, w_errs = waiting.communicate(timeout=300)
    finally:
        for p in (first, waiting):
            if p is not None and p.poll() is None:
                p.kill()
    assert refused.returncode == 7, refused.stdout + refused.stderr
    assert "is in use by a raypipe run (pid " in refused.stderr and "--wait-lock" in refused.stderr
    assert refused_s < 30, f"refusal took {refused_s:.0f}s"
    assert waiting.returncode == 0, w_out + w_errs
    cached = [ln.split()[1] for ln in w_out.splitlines() if ln.startswith("↺")]
    assert cached == ["ingest", "profile", "quality", "preprocess", "train", "evaluate", "register"], w_out

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [version] = client.search_model_versions("name='locked'")
    key = version.tags[RUN_KEY_TAG]
    # A retry of the same registration (the stage failed after registering) finds the version.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.ubj").write_bytes(b"x")
    again = register_bundle(
        uri, bundle, model_name="locked", run_id=version.run_id, input_example=None, hashes={}, run_key=key
    )
    assert again == str(version.version)
    assert len(client.search_model_versions("name='locked'")) == 1
