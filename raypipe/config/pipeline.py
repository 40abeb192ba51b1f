"""The whole pipeline config, and the small sections that sit beside the big ones:
``evaluate``, ``register``, ``report`` and ``runtime``."""

from __future__ import annotations

import warnings

from pydantic import Field, model_validator

from raypipe.config._base import _Strict
from raypipe.config.data import DataConfig, FeaturesConfig
from raypipe.config.monitor import MonitorConfig
from raypipe.config.serve import ServeConfig
from raypipe.config.train import TrainConfig, TuneConfig, apply_preset


class EvaluateConfig(_Strict):
    primary_metric: str | None = None
    """Default: ``auc`` (binary), ``logloss`` (multiclass), ``rmse`` (regression)."""


class RegisterConfig(_Strict):
    enabled: bool = True
    model_name: str | None = None
    """Default: the config file's stem (e.g. ``flights``)."""
    experiment: str = "raypipe"
    alias: str = "champion"
    promote: bool = True
    """Move the alias when the gate passes. ``false`` (``raypipe ci --dry-run``): judge only, and
    tag the version ``raypipe.candidate`` with the verdict."""
    max_regression: float = Field(0.001, ge=0)
    """The new version takes the alias unless it is worse than the champion by more. Both are
    scored on this run's test split."""
    floors: dict[str, float] = {}
    """Absolute bounds on test metrics, e.g. ``{auc: 0.7, rmse: 12}``: at least this for metrics
    where higher is better, at most this otherwise. A version that fails one never takes the alias."""


class RuntimeConfig(_Strict):
    address: str | None = None
    """Ray cluster to join; default: ``RAY_ADDRESS`` or a new local Ray."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs for a local Ray; default: all cores."""
    work_dir: str | None = None
    """Local store for MLflow, checkpoints, caches and logs; default ``RAYPIPE_HOME`` or ``.raypipe``."""
    tracking_uri: str | None = None
    """Default: ``MLFLOW_TRACKING_URI`` or SQLite under ``work_dir``."""
    data_cpus: float = Field(0.5, gt=0)
    """CPUs kept free for Ray Data while training runs."""
    storage_path: str | None = None
    """Train (and Tune) checkpoints: a folder or a pyarrow filesystem URI (``s3://``, ``gs://``,
    ``abfs://``); default ``work_dir/train``. On a multi-host cluster it must be shared storage."""
    shared_storage: bool = False
    """Declare that local paths (data, MLflow store, checkpoints) are on a mount every node
    sees (NFS, EFS, Filestore...); skips the multi-node local-path check."""


class ReportConfig(_Strict):
    """Run report (HTML) and model card (Markdown) written after evaluation."""

    enabled: bool = True
    intended_use: str = "Not documented: set report.intended_use in the config."
    limitations: str = "Not documented: set report.limitations in the config."
    owners: list[str] = []
    slice_columns: list[str] = []
    """Raw columns whose values the test metrics are broken down by (top levels by count)."""
    max_slices: int = Field(20, ge=1)
    bootstrap_samples: int = Field(100, ge=10)
    """Resamples of the test split for the metrics' 95% confidence intervals."""
    seed: int = 0


# `register` is also an ABCMeta method name; pydantic warns, but the field works.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class PipelineConfig(_Strict):
    data: DataConfig
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()
    serve: ServeConfig = ServeConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    monitor: MonitorConfig = MonitorConfig()
    report: ReportConfig = ReportConfig()
    name: str = "pipeline"
    """Defaults to the config file's stem."""

    @model_validator(mode="after")
    def _preset(self) -> PipelineConfig:
        # One source of truth: the resolved config (logged, hashed, cached) shows the search itself.
        self.tune = apply_preset(self.train, self.tune)
        return self
