"""Interrupt a Tune search (SIGINT, as Ctrl-C would), run it again: it resumes with Tuner.restore,
finishes every trial, and reruns none of the trials that had finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raypipe.train.tune import ATTEMPTS_FILE

pytestmark = pytest.mark.reliability

JOB = Path(__file__).with_name("_tune_job.py")
ROOT = Path(__file__).resolve().parents[2]


def _finished(exp: Path) -> set[str]:
    """Trial folders whose last result says done."""
    done = set()
    for result in exp.glob("trial_*/result.json"):
        lines = result.read_text().strip().splitlines()
        if lines and json.loads(lines[-1]).get("done"):
            done.add(result.parent.name)
    return done


def _attempts(exp: Path) -> dict[str, int]:
    return {p.parent.name: len(p.read_text().splitlines()) for p in exp.glob(f"trial_*/{ATTEMPTS_FILE}")}


def _start(storage: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(JOB.parent)])}
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, str(JOB), str(storage), "search", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_interrupted_search_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    exp = tmp_path / "search"
    out = tmp_path / "summary.json"
    job = _start(tmp_path, out)
    try:
        deadline = time.monotonic() + 240
        while len(_finished(exp)) < 2 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert job.poll() is None, (
            "the search ended before it could be interrupted:\n" + job.stdout.read().decode()[-2000:]
        )
        before = _finished(exp)
        assert len(before) >= 2
        job.send_signal(signal.SIGINT)  # Tune stops gracefully and saves the experiment state
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    assert not out.exists(), "the interrupted search should not have completed"
    assert len(before) < 6

    again = _start(tmp_path, out)
    log = again.communicate(timeout=300)[0].decode()
    assert again.returncode == 0, log[-3000:]
    summary = json.loads(out.read_text())
    assert summary["resumed"] is True
    assert summary["n"] == 6 and summary["num_errored"] == 0
    assert len(_finished(exp)) == 6
    attempts = _attempts(exp)
    # Trials that had finished before the interrupt ran exactly once.
    assert all(attempts[t] == 1 for t in before), attempts
    assert set(attempts) == _finished(exp)
