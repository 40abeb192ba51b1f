"""Ray connection, the CPU budget, ports and local folders: all in one place.

On small machines Ray's resource accounting decides whether a job runs at all:
if Train workers reserve every CPU, Ray Data gets none and the fit hangs. The
:class:`CpuBudget` here is the single place that splits a cluster's CPUs.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from raypipe.config import PipelineConfig, TrainConfig

log = logging.getLogger(__name__)

_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


@dataclass(frozen=True)
class RaySession:
    """The Ray this process is using; ``started_here`` says whether we own it."""

    address: str | None
    started_here: bool
    total_cpus: float
    num_nodes: int
    min_node_cpus: float

    def shutdown(self) -> None:
        import ray

        if self.started_here and ray.is_initialized():
            ray.shutdown()


def connect(address: str | None = None, num_cpus: int | None = None, log_to_driver: bool = True) -> RaySession:
    """Join ``address`` (or ``RAY_ADDRESS``) or start a local Ray.

    Token authentication stays on (Ray's default for a local ``ray.init``); the
    token file Ray writes world-readable is tightened to 0600. Ray's internal
    RPC ports listen on all interfaces whatever the node address, so the token
    is their protection; the dashboard and Serve bind 127.0.0.1.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    started_here = False
    if not log_to_driver:
        # Ray Data logs every execution plan at INFO on the driver; keep the CLI readable.
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    if not ray.is_initialized():
        kwargs: dict = {"log_to_driver": log_to_driver, "configure_logging": False}
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(
                # "local" always starts a new Ray: a bare ray.init() would silently
                # join any `ray start` cluster on this host.
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                **kwargs,
            )
            started_here = True
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
    )


def secure_token_file(path: Path = _TOKEN_FILE) -> None:
    """Ray 2.60 writes its auth token 0644; nobody else should read it."""
    try:
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
    except OSError as e:  # a shared read-only home is not our problem to fix
        log.warning("could not tighten %s: %s", path, e)


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
        if workers * per > free + 1e-9:
            raise ConfigError(
                f"train.num_workers={workers} x train.cpus_per_worker={per:g} exceeds the "
                f"{free:g} CPUs left after Ray Data ({data_cpus:g}) and Serve ({serve_cpus:g}); "
                "lower one of them"
            )
        return cls(session.total_cpus, workers, per, data_cpus, serve_cpus)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now on ``host`` (tests and ``serve.port: 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def work_dir(cfg: PipelineConfig) -> Path:
    """The local working folder (created on first use)."""
    p = Path(os.environ.get("RAYPIPE_HOME", cfg.runtime.work_dir)).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p
