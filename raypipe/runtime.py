"""Ray connection, the CPU budget, ports and local folders: all in one place.

On small machines Ray's resource accounting decides whether a job runs at all:
if Train workers reserve every CPU, Ray Data gets none and the fit hangs. The
:class:`CpuBudget` here is the single place that splits a cluster's CPUs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from raypipe.config import PipelineConfig, TrainConfig
from raypipe.raytoken import AUTH_MODE_ENV, enable_token_mode, ensure_client_token_auth, secure_token_file

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
                        **kwargs,
                    )
            finally:
                for k in extra:
                    os.environ.pop(k, None)
                _LOCAL_RAY_ENV.clear()
            started_here = True
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


# Client-side host names that mean "this machine" (a URL naming 0.0.0.0 connects locally).
_THIS_MACHINE = {"localhost", "0.0.0.0", "::1", "::", ""}


def _is_this_machine(host: str) -> bool:
    host = host.lower()
    return host in _THIS_MACHINE or host.startswith("127.")


def is_node_local(uri: str | None) -> bool:
    """True for a location only the machine that names it can see.

    Local paths, ``file://``, ``sqlite:///`` and servers on loopback
    (``http://127.0.0.1:5000``, ``postgresql://localhost/...``) are node-local.
    Object stores and other pyarrow filesystems (``s3://``, ``gs://``,
    ``abfs://``, ``hdfs://``...), remote servers and ``databricks`` are not.
    """
    if not uri or uri.split(":", 1)[0] in ("databricks", "databricks-uc"):  # MLflow's hosted stores
        return False
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if len(scheme) <= 1:  # a plain path (or a Windows drive letter)
        return True
    if scheme in ("file", "local", "sqlite") or scheme.startswith("sqlite+"):
        return True
    if scheme in ("http", "https") or "sql" in scheme:  # MLflow servers and database stores
        return _is_this_machine(parsed.hostname or "")
    return False


def local_only_paths(paths: Mapping[str, str | None]) -> dict[str, str]:
    """The entries of ``{what: location}`` that are node-local (see :func:`is_node_local`)."""
    return {what: str(uri) for what, uri in paths.items() if uri and is_node_local(str(uri))}


def check_shared_storage(session: RaySession, paths: Mapping[str, str | None], shared_storage: bool = False) -> None:
    """Fail early if a multi-host cluster would be handed node-local paths.

    Ray Data tasks, Train workers and Serve replicas run on any node; a path
    that exists only on the driver's machine breaks them mid-run (or, for
    checkpoints, silently keeps them on one node). Nodes that all run on one
    machine share its files, and ``runtime.shared_storage: true`` declares a
    mount every node sees.

    Raises:
        ConfigError: naming each node-local location and what to use instead.
    """
    if shared_storage or session.single_host:
        return
    local = local_only_paths(paths)
    if not local:
        return
    from raypipe.errors import ConfigError

    listed = "; ".join(f"{what}: {uri}" for what, uri in local.items())
    raise ConfigError(
        f"the Ray cluster spans {len(session.hosts)} machines but these locations exist only on one of them: "
        f"{listed}. Every node must see the data, the MLflow store and the checkpoints: use shared storage, "
        "either a pyarrow filesystem URI (s3://bucket/path, gs://bucket/path, abfs://..., hdfs://...) for "
        "data.path and runtime.storage_path plus a remote MLflow server (MLFLOW_TRACKING_URI=https://...), "
        "or a mount that every node has at the same path (NFS/EFS/Filestore) and runtime.shared_storage: true",
        paths=local,
    )


@dataclass(frozen=True)
class CpuBudget:
    """How a cluster's CPUs are shared between Train workers, Ray Data and Serve.

    ``num_workers * cpus_per_worker + data_cpus + serve_cpus <= total_cpus``.
    """

    total_cpus: float
    num_workers: int
    cpus_per_worker: float
    data_cpus: float
    serve_cpus: float
    num_nodes: int = 1

    @property
    def nthread(self) -> int:
        """XGBoost threads per worker: its CPU share, rounded up."""
        return max(1, math.ceil(self.cpus_per_worker - 1e-9))

    @classmethod
    def plan(cls, session: RaySession, train: TrainConfig, data_cpus: float, serve_cpus: float) -> CpuBudget:
        """Pick workers and CPUs per worker that leave room for Data and Serve.

        ``auto`` uses one worker per node: on one machine a second XGBoost
        worker only adds allreduce traffic compared with more threads.
        """
        from raypipe.errors import ConfigError

        free = session.total_cpus - data_cpus - serve_cpus
        if free <= 0:
            raise ConfigError(
                f"no CPUs left for training: cluster has {session.total_cpus:g}, "
                f"runtime.data_cpus={data_cpus:g} and serve needs {serve_cpus:g}"
            )
        workers = session.num_nodes if train.num_workers == "auto" else train.num_workers
        if train.cpus_per_worker == "auto":
            per_node = session.min_node_cpus - (data_cpus + serve_cpus) / session.num_nodes
            per = min(free / workers, max(per_node, 0.25))
            per = math.floor(per * 4) / 4 or 0.25  # quarter-CPU steps keep Ray's packing simple
        else:
            per = float(train.cpus_per_worker)
        largest = session.max_node_cpus or session.total_cpus
        if per > largest + 1e-9:
            raise ConfigError(
                f"train.cpus_per_worker={per:g} is more than the largest node has ({largest:g} CPUs); "
                "a worker must fit on one node"
            )
        if workers * per > free + 1e-9:
            raise ConfigError(
                f"train.num_workers={workers} x train.cpus_per_worker={per:g} exceeds the "
                f"{free:g} CPUs left after Ray Data ({data_cpus:g}) and Serve ({serve_cpus:g}); "
                "lower one of them"
            )
        return cls(session.total_cpus, workers, per, data_cpus, serve_cpus, session.num_nodes)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now on ``host`` (tests and ``serve.port: 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def storage_path(cfg: PipelineConfig, work: Path) -> str:
    """Where Train (and Tune) write checkpoints: ``runtime.storage_path`` or ``work/train``.

    URIs (``s3://bucket/ckpt``) pass through to Ray Train's pyarrow filesystem;
    plain folders are made absolute (Ray Train needs that).
    """
    path = cfg.runtime.storage_path
    if not path:
        return str(work / "train")
    if len(urlparse(path).scheme) <= 1:
        return str(Path(path).expanduser().resolve())
    return path


def work_dir(cfg: PipelineConfig) -> Path:
    """The local working folder (created on first use)."""
    p = Path(os.environ.get("RAYPIPE_HOME", cfg.runtime.work_dir)).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p
