"""Interrupt a Tune search (SIGKILL to the driver and its local Ray), run it again: it resumes with Tuner.restore,
finishes every trial, and reruns none of the trials that had finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from raypipe.train.tune import ATTEMPTS_FILE

pytestmark = pytest.mark.reliability

JOB = Path(__file__).with_name("_tune_job.py")
ROOT = Path(__file__).resolve().parents[2]


def _attempts(exp: Path) -> dict[str, int]:
    """Executions per trial folder: one marker line per execution, kept in the trial's folder in storage
    (across driver sessions; Ray's per-session staging and working dirs are not where a rerun lands)."""
    return {p.parent.name: len(p.read_text().splitlines()) for p in exp.glob(f"trial_*/{ATTEMPTS_FILE}")}


def _start(storage: Path, out: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(JOB.parent)])}
    # Slow storage: without waiting for the upload, the state a kill leaves behind is then always stale.
    env["RAYPIPE_TEST_UPLOAD_DELAY_S"] = "0.5"
    env.pop("RAY_ADDRESS", None)
    return subprocess.Popen(
        [sys.executable, str(JOB), str(storage), name, str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_interrupted_search_resumes_without_rerunning_finished_trials(tmp_path: Path) -> None:
    name = f"search-{uuid.uuid4().hex[:8]}"
    exp = tmp_path / name
    out = tmp_path / "summary.json"
    job = _start(tmp_path, out, name)
    try:
        deadline = time.monotonic() + 240
        # One trial at a time (concurrency 1): once the third starts, the first two have finished.
        while len(_attempts(exp)) < 3 and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job.poll() is None, (
            "the search ended before it could be interrupted:\n" + job.stdout.read().decode()[-2000:]
        )
        before = set(sorted(_attempts(exp))[:-1])  # trial ids end in a zero-padded index: FIFO order
        assert len(before) >= 2
        # A hard crash of the driver and its local Ray (same process group): the worst interruption.
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        job.stdout.close()
    assert not out.exists(), "the interrupted search should not have completed"
    assert len(before) < 6

    again = _start(tmp_path, out, name)
    log = again.communicate(timeout=300)[0].decode()
    assert again.returncode == 0, log[-3000:]
    summary = json.loads(out.read_text())
    assert summary["resumed"] is True
    assert summary["n"] == 6 and summary["num_errored"] == 0
    attempts = _attempts(exp)
    assert len(attempts) == 6, attempts
    # Trials that had finished before the interrupt ran exactly once; the rest ran at least once.
    assert all(attempts[t] == 1 for t in before), attempts
