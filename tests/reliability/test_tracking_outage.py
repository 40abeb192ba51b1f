"""The MLflow tracking server dies mid-run: the run ends within about a minute with one line naming
the server (not minutes of silence), the finished stages stay cached, and once the server is back
the next run marks the dead run KILLED and resumes from the cache."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import _mlflow_server
import pytest
from _cli_job import cli_env, raypipe, start, synth_job, wait_mid_fit

from raypipe.runtime import free_port

pytestmark = pytest.mark.integration


def test_a_tracking_outage_ends_the_run_promptly_and_the_rerun_resumes(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    fit = {"num_boost_round": 3000, "early_stopping_rounds": None, "checkpoint_every_rounds": 100}
    config = synth_job(tmp_path, "outage", train=fit)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _mlflow_server.start(tmp_path / "mlflow", port)
    cmd = raypipe("run", str(config), "--tracking-uri", uri)
    proc = start(cmd, tmp_path)
    try:
        lines = wait_mid_fit(proc, tmp_path / "work")
        _mlflow_server.kill(server)  # the outage: nothing answers on the port any more
        out, errs = proc.communicate(timeout=180)
        exited_at = time.time()
    finally:
        if proc.poll() is None:
            proc.kill()
        _mlflow_server.kill(server)
    # The fit does not need MLflow; the train stage's record after it is the first call to fail.
    trained_at = max(p.stat().st_mtime for p in (tmp_path / "work" / "train").glob("*/checkpoint_*"))
    waited = exited_at - trained_at
    assert proc.returncode == 5, "".join(lines) + out + errs
    assert waited < 60, f"{waited:.0f}s from the end of training to exit"
    assert f"error: MLflow tracking store {uri} failed" in errs, errs
    assert "Connection refused" in errs
    assert "ingest, profile, quality, preprocess, train cached; resume with: raypipe run" in errs, errs

    # The server is back: the next run marks the dead one KILLED and reuses every finished stage.
    server = _mlflow_server.start(tmp_path / "mlflow", port)
    try:
        rerun = subprocess.run(cmd, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs(
            [client.get_experiment_by_name("raypipe").experiment_id], "tags.mlflow.runName LIKE 'outage-%'"
        )
    finally:
        _mlflow_server.stop(server)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    cached = [ln.split()[1] for ln in rerun.stdout.splitlines() if ln.startswith("↺")]
    assert cached == ["ingest", "profile", "quality", "preprocess", "train"], rerun.stdout
    parents = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags), key=lambda r: r.info.start_time)
    assert [r.info.status for r in parents] == ["KILLED", "FINISHED"]
