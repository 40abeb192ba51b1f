"""Where things are stored, and whether every node of the cluster can see it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from raypipe.runtime.net import _is_this_machine

if TYPE_CHECKING:
    from raypipe.config import PipelineConfig
    from raypipe.runtime.connect import RaySession


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
