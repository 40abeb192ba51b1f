"""A small synthetic job run by the real ``raypipe`` command in a subprocess, for fault tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from raypipe.data.datasets.synth import write_synth

LONG_FIT = {"num_boost_round": 100_000, "early_stopping_rounds": None, "checkpoint_every_rounds": 50}
"""Still training whenever the test strikes."""


def cli_env() -> dict[str, str]:
    """This environment without a cluster or store to join, and a console wide enough not to wrap."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["COLUMNS"] = "200"
    return env


def synth_job(tmp_path: Path, name: str, rows: int = 4000, **sections: dict) -> Path:
    """Synthetic data and ``job.yaml`` under ``tmp_path`` (serving and the report off); ``sections``
    override whole config sections."""
    data = write_synth(tmp_path / "data", rows, rows_per_file=1000, n_numeric=5, n_categorical=2)
    raw = {
        "name": name,
        "data": {"path": str(data), "label": "label", "id_column": "id"},
        "serve": {"enabled": False},
        "report": {"enabled": False},
        "runtime": {"work_dir": str(tmp_path / "work")},
        **sections,
    }
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(raw))
    return config


def raypipe(*args: str) -> list[str]:
    return [sys.executable, "-m", "raypipe", *args]


def start(cmd: list[str], cwd: Path, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def wait_mid_fit(proc: subprocess.Popen, work: Path, timeout_s: float = 120) -> list[str]:
    """Read the run's lines up to the preprocess stage, then wait for its first training
    checkpoint (no MLflow call is in flight then). Returns the lines read."""
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "preprocess" in line:
            break
    deadline = time.monotonic() + timeout_s
    while not any((work / "train").glob("*/checkpoint_*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "".join(lines) + proc.stderr.read()
    return lines
