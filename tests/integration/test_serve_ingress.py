"""The default ingress, HAProxy mode: `raypipe serve` answers through haproxy with every port it adds on
loopback, private paths and ports, and leaves no haproxy behind when it stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _serving import RECORD, request, write_tiny_bundle

from raypipe.config import ServeConfig
from raypipe.runtime import free_port
from raypipe.serve.ingress import resolve_mode

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(resolve_mode(ServeConfig()) != "haproxy", reason="no haproxy binary: the default is the proxy"),
]


def _our_haproxy(since: float) -> dict[int, list[str]]:
    """haproxy processes started since ``since`` with a raypipe private config (pid -> argv)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
            started = proc.stat().st_mtime
        except OSError:
            continue
        if argv and argv[0].endswith("haproxy") and any("/rp-hap-" in a for a in argv) and started >= since:
            found[int(proc.name)] = argv
    return found


def test_default_haproxy_ingress_serves_on_loopback_and_stops_its_haproxy(tmp_path: Path) -> None:
    write_tiny_bundle(tmp_path / "bundle")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_SERVE_")}
    since = time.time() - 1
    cmd = [sys.executable, "-m", "raypipe", "serve", str(tmp_path / "bundle"), "--port", str(port)]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        for line in proc.stdout:  # "Serving ..." is printed once the app answers and Ctrl-C is handled
            lines.append(line)
            if line.startswith("Serving"):
                break
        assert proc.poll() is None, "".join(lines)[-3000:]
        status, body = request(f"http://127.0.0.1:{port}/predict", json.dumps(RECORD).encode())
        assert status == 200 and body["prediction"] in ([True], [False]), body
        status, body = request(f"http://127.0.0.1:{port}/predict", b'{"distance": "far"}')
        assert status == 422 and "distance" in json.dumps(body), body
        ours = _our_haproxy(since)
        assert ours, "no haproxy with a raypipe private config is running"
        config = next(a for argv in ours.values() for a in argv if a.endswith("haproxy.cfg"))
        binds = [line.split()[1] for line in Path(config).read_text().splitlines() if line.strip().startswith("bind")]
        assert f"127.0.0.1:{port}" in binds and len(binds) >= 3, binds  # HTTP, stats, Prometheus
        assert all(b.startswith(("127.0.0.1:", "/")) for b in binds), binds  # loopback (or a unix socket)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in ours if Path(f"/proc/{pid}").exists()], "haproxy outlived `raypipe serve`"
    assert not Path(config).parent.parent.exists(), "the private haproxy folder was left behind"
