"""SIGTERM mid-run (``ray job stop``, a pod being deleted): the MLflow run and the audit trail say the
run was killed, Ray is stopped, and the same command resumes from the finished stages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raypipe.data.synth import write_synth

pytestmark = pytest.mark.integration


def _cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["COLUMNS"] = "100"
    return env


def test_sigterm_marks_the_run_killed_and_the_rerun_resumes(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    data = write_synth(tmp_path / "data", 4000, rows_per_file=1000, n_numeric=5, n_categorical=2)
    config = tmp_path / "job.yaml"
    raw = {
        "name": "term",
        "data": {"path": str(data), "label": "label", "id_column": "id"},
        # Long enough to still be training when the signal comes.
        "train": {"num_boost_round": 100_000, "early_stopping_rounds": None, "checkpoint_every_rounds": 50},
        "serve": {"enabled": False},
        "report": {"enabled": False},
        "runtime": {"work_dir": str(tmp_path / "work")},
    }
    config.write_text(yaml.safe_dump(raw))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "raypipe", "run", str(config), "--tracking-uri", uri]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "preprocess" in line:
            break
    assert proc.poll() is None, "".join(lines) + proc.stderr.read()
    deadline = time.monotonic() + 120  # mid-fit: once its first checkpoint is written
    while not any((tmp_path / "work" / "train").glob("*/checkpoint_*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the fit ended before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    out, errs = proc.communicate(timeout=120)
    assert proc.returncode == 143, "".join(lines) + out + errs
    assert "terminated: ingest, profile, quality, preprocess finished and cached; resume with: raypipe run" in errs

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("raypipe").experiment_id], "tags.mlflow.runName LIKE 'term-%'"
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["KILLED"]
    events = [json.loads(ln) for ln in (tmp_path / "work" / "audit.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e.get("run_id") == parents[0].info.run_id] == ["run_start", "run_failed"]

    # The rerun (a shorter fit: only train and later stages change) reuses everything before train.
    rerun = subprocess.run(
        [*cmd, "--set", "train.num_boost_round=20"], cwd=tmp_path, env=_cli_env(), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    cached = [ln.split()[1] for ln in rerun.stdout.splitlines() if ln.startswith("↺")]
    assert cached == ["ingest", "profile", "quality", "preprocess"], rerun.stdout
