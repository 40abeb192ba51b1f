"""A raypipe run SIGKILLed mid-fit leaves Ray's agents running for minutes, holding ports; the next
raypipe command that starts a local Ray stops them, found by the dead run's session folder."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest
from _cli_job import LONG_FIT, raypipe, start, synth_job

from raypipe.runtime.orphans import sweep_sessions

pytestmark = pytest.mark.integration


def _session_processes(session_dir: str) -> list[psutil.Process]:
    prefix = session_dir + "/"
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if prefix in " ".join(p.info["cmdline"] or []) or any(f.path.startswith(prefix) for f in p.open_files()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_the_next_command_stops_what_a_killed_run_left(tmp_path: Path) -> None:
    config = synth_job(tmp_path, "orphans", 2000, train=LONG_FIT, register={"enabled": False})
    proc = start(raypipe("run", str(config)), tmp_path)
    for line in proc.stdout:
        if "preprocess" in line:
            break
    children = psutil.Process(proc.pid).children(recursive=True)
    session = next(a.split("=", 1)[1] for c in children for a in c.cmdline() if a.startswith("--session-dir="))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # raylet and GCS go with the driver; the agents do not
    left = _session_processes(session)
    assert left, "nothing outlived the killed driver: the sweep has nothing to prove"

    stopped = sweep_sessions()  # what the next command's Ray start runs first
    assert {p.pid for p in left} <= set(stopped)
    psutil.wait_procs(left, timeout=10)
    assert _session_processes(session) == []
    assert sweep_sessions() == []  # the mark is gone with them
