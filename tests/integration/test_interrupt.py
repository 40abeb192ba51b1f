"""SIGTERM mid-run (``ray job stop``, a pod being deleted): the MLflow run and the audit trail say the
run was killed, Ray is stopped, and the same command resumes from the finished stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from _cli_job import LONG_FIT, cli_env, raypipe, start, synth_job, wait_mid_fit
from _mlflow_store import sqlite_store

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("signum", "code", "what"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
    ids=["sigterm", "ctrl-c"],
)
def test_a_signal_during_training_marks_the_run_killed_and_the_rerun_resumes(
    tmp_path: Path, signum: int, code: int, what: str
) -> None:
    """Ctrl-C goes to the whole foreground process group, as a terminal sends it; Ray Train's own
    SIGINT handler must not turn it into a silent exit 1."""
    from mlflow import MlflowClient

    # Long enough to still be training when the signal comes.
    config = synth_job(tmp_path, "term", train=LONG_FIT)
    uri = sqlite_store(tmp_path)
    cmd = raypipe("run", str(config), "--tracking-uri", uri)
    proc = start(cmd, tmp_path, start_new_session=True)
    lines = wait_mid_fit(proc, tmp_path / "work")
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == code, "".join(lines) + out + errs
    assert f"{what}: ingest, profile, quality, preprocess finished and cached; resume with: raypipe run" in errs

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("raypipe").experiment_id], "tags.mlflow.runName LIKE 'term-%'"
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["KILLED"]
    events = [json.loads(ln) for ln in (tmp_path / "work" / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e.get("run_id") == parents[0].info.run_id] == ["run_start", "run_failed"]

    if signum == signal.SIGINT:
        return  # the resume is the same after either signal: run it once
    # The rerun (a shorter fit: only train and later stages change) reuses everything before train.
    rerun = subprocess.run(
        [*cmd, "--set", "train.num_boost_round=20"], cwd=tmp_path, env=cli_env(), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    cached = [ln.split()[1] for ln in rerun.stdout.splitlines() if ln.startswith("↺")]
    assert cached == ["ingest", "profile", "quality", "preprocess"], rerun.stdout
