"""How HTTP reaches the replicas: Serve's proxy (default), HAProxy mode or direct ingress.

Serve reads the mode from environment variables once, when Ray starts, so it is chosen
before this process starts its local Ray (``use_ingress``); on a cluster it belongs in
the head node's environment.

Measured on 2 cores (``benchmarks/bench_serve.py``): HAProxy mode + throughput-optimised
gave 1.3x a plain FastAPI app's req/s at concurrency 16 and p50 +0.5 ms at concurrency 1;
Serve's proxy 0.2x and +5.9 ms. The proxy stays the default because Ray 2.60's HAProxy
config binds its stats page (8404) and Prometheus exporter (9101) on every interface,
at fixed ports and under a fixed ``/tmp/haproxy-serve`` folder; Serve's proxy listens on
127.0.0.1 only. raypipe gives each HAProxy-mode Ray private paths and free ports (two
sessions on one host would otherwise collide) and stops the haproxy it leaves behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

from raypipe.config import ServeConfig
from raypipe.errors import ServingError
from raypipe.runtime import free_port

# Short, under /tmp: HAProxy caps socket paths at 97 bytes and Ray nests a 56-character folder in this one.
_PRIVATE_PREFIX = "rp-hap-"


def ingress_env(cfg: ServeConfig) -> dict[str, str]:
    """Environment variables selecting ``cfg.ingress``; variables already set win.

    Raises:
        ServingError: ``haproxy`` mode without the ``haproxy`` binary.

    Example:
        >>> os.environ.update(ingress_env(cfg.serve)); ray.init()  # doctest: +SKIP
    """
    mode = cfg.ingress
    env: dict[str, str] = {}
    if mode == "haproxy":
        haproxy = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH") or shutil.which("haproxy")
        if not haproxy:
            raise ServingError("serve.ingress 'haproxy' needs the haproxy binary (apt-get install haproxy) on PATH")
        private = tempfile.mkdtemp(prefix=_PRIVATE_PREFIX, dir="/tmp" if os.path.isdir("/tmp") else None)
        env = {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(haproxy),
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{private}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{private}/admin.sock",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{private}/metrics.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": private,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{private}/server-state",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
        }
    elif mode == "direct":
        env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    return {k: v for k, v in env.items() if k not in os.environ}


def use_ingress(cfg: ServeConfig, address: str | None = None) -> None:
    """Select ``cfg.ingress`` for the local Ray this process is about to start.

    A no-op when joining a cluster (``address`` or ``RAY_ADDRESS``) or when Ray already runs here:
    the mode is then whatever that Ray started with.
    """
    import ray

    if address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return
    os.environ.update(ingress_env(cfg))
    if cfg.ingress == "haproxy":
        atexit.register(stop_haproxy)  # registered before ray.init: runs after Ray's own shutdown hook


def stop_haproxy() -> int:
    """Stop the haproxy processes Serve started for this process's Ray; returns how many.

    Ray's shutdown leaves them running. Only processes whose command line names a file in this
    process's private folder (set by ``ingress_env``; Serve nests its config one folder down) are signalled.
    """
    config = os.environ.get("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "")
    private = Path(config).parent
    if not private.name.startswith(_PRIVATE_PREFIX):
        return 0
    mine, stopped = f"{private}/".encode(), 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if any(a.startswith(mine) for a in args):
            try:
                os.kill(int(cmdline.parent.name), signal.SIGTERM)
                stopped += 1
            except ProcessLookupError:
                pass
    shutil.rmtree(private, ignore_errors=True)
    return stopped
