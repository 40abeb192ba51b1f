"""The CPU budget: the one place that splits a cluster's CPUs between Train, Data and Serve.

On small machines Ray's resource accounting decides whether a job runs at all: if Train
workers reserve every CPU, Ray Data gets none and the fit hangs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raypipe.config import TrainConfig
    from raypipe.runtime.connect import RaySession


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
