"""The one resolver for where raypipe keeps its things: the work folder and the MLflow store.

Precedence, for both: a CLI flag (or a Python argument) > the config (``runtime.work_dir``,
``runtime.tracking_uri``) > the environment (``RAYPIPE_HOME``, ``MLFLOW_TRACKING_URI``) > the
default (``.raypipe`` in the current folder; SQLite in the work folder). Every command and the
Python API go through :func:`resolve_paths`, so they all find the same store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raypipe.config import PipelineConfig

WORK_DIR_ENV = "RAYPIPE_HOME"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
DEFAULT_WORK_DIR = ".raypipe"


def default_tracking_uri(work_dir: Path) -> str:
    """The embedded default store: SQLite in the work folder."""
    return f"sqlite:///{work_dir / 'mlflow.db'}"


@dataclass(frozen=True)
class Paths:
    """Resolved locations of one run or command (absolute)."""

    work_dir: Path
    tracking_uri: str

    @property
    def datasets(self) -> Path:
        """Datasets raypipe builds (``dataset://flights``)."""
        return self.work_dir / "datasets"

    @property
    def cache(self) -> Path:
        return self.work_dir / "cache"

    @property
    def predictions(self) -> Path:
        """The prediction log root that Serve writes and the monitor reads."""
        return self.work_dir / "predictions"

    @property
    def artifacts(self) -> Path:
        """MLflow artifacts of a SQLite store (a server keeps its own)."""
        return self.work_dir / "mlartifacts"

    def runs(self, name: str) -> Path:
        """Per-pipeline folder of manifests and quality reports."""
        return self.work_dir / "runs" / name


def resolve_paths(
    cfg: PipelineConfig | None = None,
    *,
    work_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    create: bool = True,
) -> Paths:
    """The work folder and tracking URI: flag > config > environment > default.

    Args:
        cfg: the pipeline config, if the command has one.
        work_dir: ``--work-dir`` (or a Python argument).
        tracking_uri: ``--tracking-uri`` (or a Python argument).
        create: make the work folder if it does not exist (``raypipe plan`` reads only).

    Example:
        >>> resolve_paths(work_dir="/tmp/rp").tracking_uri
        'sqlite:////tmp/rp/mlflow.db'
    """
    rt = cfg.runtime if cfg is not None else None
    folder = work_dir or (rt and rt.work_dir) or os.environ.get(WORK_DIR_ENV) or DEFAULT_WORK_DIR
    work = Path(folder).expanduser().resolve()
    if create:
        work.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri or (rt and rt.tracking_uri) or os.environ.get(TRACKING_URI_ENV) or default_tracking_uri(work)
    return Paths(work, uri)
