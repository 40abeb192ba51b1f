"""Connecting to Ray: join a cluster or start a local Ray bound to loopback, token auth on."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass

from raypipe.runtime.net import _is_this_machine
from raypipe.runtime.orphans import mark_session, sweep_sessions
from raypipe.runtime.token import AUTH_MODE_ENV, enable_token_mode, ensure_client_token_auth, secure_token_file

log = logging.getLogger(__name__)

_state = {"started_here": False}


@dataclass(frozen=True)
class RaySession:
    """The Ray this process is using; ``started_here`` says whether we own it."""

    address: str | None
    started_here: bool
    total_cpus: float
    num_nodes: int
    min_node_cpus: float
    hosts: tuple[str, ...] = ()
    """Distinct ``ip/hostname`` of the alive nodes (CPU-less ones included)."""
    max_node_cpus: float | None = None
    """CPUs of the largest node (None: assume one node holds them all)."""

    @property
    def single_host(self) -> bool:
        """Every node runs on one machine (``cluster/local.sh``): local paths are shared."""
        return len(self.hosts) <= 1

    def shutdown(self) -> None:
        import ray

        if self.started_here and ray.is_initialized():
            ray.shutdown()


_LOCAL_RAY_ENV: dict[str, str] = {}


def add_local_ray_env(env: dict[str, str]) -> None:
    """Environment for the Ray processes of the next local Ray ``connect`` starts.

    Set in this process only while ``ray.init`` starts them, so child processes (another
    ``raypipe``, a ``ray start``) do not inherit settings that name this Ray's own files and ports.
    """
    _LOCAL_RAY_ENV.update(env)


@contextlib.contextmanager
def _loopback_node():
    """Start a local Ray on node address 127.0.0.1, as Ray does on macOS.

    Ray otherwise takes the host's routable address, and its agents and unauthenticated
    Prometheus exporters (autoscaler, dashboard, agent) bind that or every interface. Its
    ``_node_ip_address`` argument cannot ask for loopback (Ray swaps it for the routable one),
    so this flips the single-machine switch Ray reads while it starts.
    """
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def _loopback_only_gcs(address: str) -> bool:
    """Whether ``address`` is a GCS on loopback only: a local Ray started by ``connect``.

    Joining one needs the same single-machine switch (``_loopback_node``), or Ray rewrites
    127.0.0.1 to the routable address and waits for a GCS that is not there. A ``ray start``
    head's GCS also answers on the routable address; it is joined as Ray would.
    """
    host, _, port = address.rpartition(":")
    if "://" in address or not port.isdigit() or not host or not _is_this_machine(host.strip("[]")):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # sends nothing: picks the routable source address
            routable = s.getsockname()[0]
    except OSError:
        return False
    if routable.startswith("127."):
        return False
    try:
        with socket.create_connection((routable, int(port)), timeout=1):
            return False
    except OSError:
        return True


def _caller_sigterm_handler():
    """The SIGTERM handler the caller installed (a Python function), or None; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = signal.getsignal(signal.SIGTERM)
    return handler if callable(handler) else None


def connect(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True) -> RaySession:
    """Join ``address`` (or ``RAY_ADDRESS``) or start a local Ray.

    Token authentication stays on (Ray's default for a local ``ray.init``); the
    token file Ray writes world-readable is tightened to 0600. A local Ray runs on
    node address 127.0.0.1, so its RPC ports, agents and metrics exporters bind
    loopback (``_loopback_node``); Serve binds ``serve.host`` (127.0.0.1).
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    started_here = False
    if address:
        ensure_client_token_auth()
    if not log_to_driver:
        # Ray Data logs every execution plan at INFO on the driver; keep the CLI readable.
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    if not ray.is_initialized():
        kwargs: dict = {"log_to_driver": log_to_driver, "configure_logging": False}
        on_sigterm = _caller_sigterm_handler()
        if address:
            with _loopback_node() if _loopback_only_gcs(address) else contextlib.nullcontext():
                ray.init(address=address, **kwargs)
        else:
            if AUTH_MODE_ENV not in os.environ:
                enable_token_mode()
            sweep_sessions()  # a killed run's agents still hold ports: stop them first
            extra = {k: v for k, v in _LOCAL_RAY_ENV.items() if k not in os.environ}
            os.environ.update(extra)  # Ray's processes inherit the environment when they start
            try:
                with _loopback_node():
                    ray.init(
                        # "local" always starts a new Ray: a bare ray.init() would silently
                        # join any `ray start` cluster on this host.
                        address="local",
                        num_cpus=num_cpus,
                        include_dashboard=False,
                        _system_config={"num_workers_soft_limit": idle_worker_limit(num_cpus)},
                        **kwargs,
                    )
            finally:
                for k in extra:
                    os.environ.pop(k, None)
                _LOCAL_RAY_ENV.clear()
            started_here = True
            mark_session(ray._private.worker._global_node.get_session_dir_path())
        _state["started_here"] = started_here
        if on_sigterm is not None:
            # ray.init swaps in its own handler (and its core worker a native one that aborts).
            signal.signal(signal.SIGTERM, on_sigterm)
    secure_token_file()
    import ray.data

    # Ray Data's per-operator progress bars flood non-TTY logs (CI, Ray Jobs).
    ray.data.DataContext.get_current().enable_progress_bars = False
    from ray.util.debug import log_once

    log_once("ray_data_progress_manager_disabled")  # ...and Ray's warning that we did so
    if not log_to_driver:
        # Ray Data logs every execution plan at INFO on the driver; keep the CLI readable.
        for name in ("ray.data", "ray.train", "ray.tune", "ray.serve"):
            logging.getLogger(name).setLevel(logging.WARNING)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = [n["Resources"].get("CPU", 0.0) for n in nodes]
    return RaySession(
        address=address,
        started_here=started_here,
        total_cpus=float(sum(cpus)),
        num_nodes=max(1, sum(1 for c in cpus if c > 0)),
        min_node_cpus=float(min((c for c in cpus if c > 0), default=1.0)),
        hosts=node_hosts(nodes),
        max_node_cpus=float(max(cpus, default=1.0)),
    )


def idle_worker_limit(num_cpus: int | None) -> int:
    """Worker processes a local Ray keeps alive when idle: its CPUs plus 4.

    Ray's default is its CPU count, and Train's actors (controller, workers, helpers) count against
    it: after a fit the idle task workers are gone, and the next Ray Data pass waits for new
    processes to start and import pyarrow (about 3 s on 2 CPUs, measured per stage). Four more
    idle processes cost about 0.5 GB.
    """
    return int(num_cpus or os.cpu_count() or 1) + 4


def owns_ray() -> bool:
    """Whether this process started the Ray it is connected to (then it also owns Serve)."""
    import ray

    return ray.is_initialized() and _state["started_here"]


def node_hosts(nodes: list[dict]) -> tuple[str, ...]:
    """Distinct machines behind ``ray.nodes()`` entries (alive ones), as ``ip/hostname``."""
    hosts = {
        f"{n.get('NodeManagerAddress', '')}/{n.get('NodeManagerHostname', '')}"
        for n in nodes
        if n.get("Alive", n.get("alive", True))
    }
    return tuple(sorted(hosts))
