"""Where and on what raypipe runs: the Ray connection, the CPU budget, storage locality, the work
folder and tracking store, Ray's token, leftovers of killed processes, and Ray Jobs submission.

    connect.py   join a cluster or start a loopback-bound local Ray (RaySession, owns_ray)
    budget.py    CpuBudget: Train workers + Data + Serve <= cluster CPUs
    storage.py   is every location visible to every node? checkpoint storage
    lock.py      work_lock: one run per work folder at a time
    paths.py     resolve_paths: the work folder and MLflow store, flag > config > env > default
    token.py     Ray token authentication
    orphans.py   temp folders and runs left by processes killed outright
    net.py       this machine's host names, free ports
    submit.py    ``raypipe submit``: the pipeline as a Ray Job
"""

from raypipe.runtime.budget import CpuBudget
from raypipe.runtime.connect import RaySession, add_local_ray_env, connect, node_hosts, owns_ray
from raypipe.runtime.net import free_port
from raypipe.runtime.paths import Paths, default_tracking_uri, resolve_paths
from raypipe.runtime.storage import check_shared_storage, is_node_local, local_only_paths, storage_path

__all__ = [
    "CpuBudget",
    "Paths",
    "RaySession",
    "add_local_ray_env",
    "check_shared_storage",
    "connect",
    "default_tracking_uri",
    "free_port",
    "is_node_local",
    "local_only_paths",
    "node_hosts",
    "owns_ray",
    "resolve_paths",
    "storage_path",
]
