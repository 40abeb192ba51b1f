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
from _sockets import is_loopback, listeners

from raypipe.config import ServeConfig
from raypipe.runtime import free_port
from raypipe.serve.ingress import resolve_mode

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(resolve_mode(ServeConfig()) != "haproxy", reason="no haproxy binary: the default is the proxy"),
]


def _our_haproxy(port: int) -> dict[int, list[str]]:
    """haproxy processes with a raypipe private config whose HTTP frontend is ``port`` (pid -> argv)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().decode().split("\0")
            config = next((a for a in argv if "/rp-hap-" in a and a.endswith("haproxy.cfg")), None)
            if argv[0].endswith("haproxy") and config and f"127.0.0.1:{port}" in Path(config).read_text():
                found[int(proc.name)] = argv
        except OSError:
            continue
    return found


def _listening(pids) -> list[str]:
    """``ip:port`` of the TCP sockets these processes listen on (from /proc, as ss reads it)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                addr, port = cols[1].split(":")
                ip = ".".join(str(b) for b in reversed(bytes.fromhex(addr))) if len(addr) == 8 else addr
                found.append(f"{ip}:{int(port, 16)}")
    return found


def test_default_haproxy_ingress_serves_on_loopback_and_stops_its_haproxy(tmp_path: Path) -> None:
    write_tiny_bundle(tmp_path / "bundle")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS" and not k.startswith("RAY_SERVE_")}
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
        ours = _our_haproxy(port)  # not another Ray's haproxy
        assert ours, "no haproxy with a raypipe private config is running"
        config = next(a for argv in ours.values() for a in argv if a.endswith("haproxy.cfg"))
        listening = _listening(ours)
        assert f"127.0.0.1:{port}" in listening and len(listening) >= 3, listening  # HTTP, stats, Prometheus
        assert all(a.startswith("127.0.0.1:") for a in listening), listening
        # The whole local Ray too: GCS, raylet, workers, agents, Prometheus exporters. The one
        # exception is each Serve replica's inter-deployment gRPC port (Ray binds it to [::]:0).
        found = listeners([proc.pid])
        wide = [x for x in found if not is_loopback(x[0])]
        assert len(found) > 10, "Ray's processes were not found under `raypipe serve`"
        assert wide and all(name.startswith("ray::ServeRepli") for *_, name in wide), wide
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:  # a failed assertion: leave no haproxy behind either
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for pid in _our_haproxy(port):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any(Path(f"/proc/{pid}").exists() for pid in ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in ours if Path(f"/proc/{pid}").exists()], "haproxy outlived `raypipe serve`"
    assert not Path(config).parent.parent.exists(), "the private haproxy folder was left behind"
