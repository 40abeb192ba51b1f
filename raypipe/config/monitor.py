"""The ``monitor`` section: drift thresholds, alerts and the closed retraining loop."""

from __future__ import annotations

from pydantic import Field, model_validator

from raypipe.config._base import _Strict


class MonitorThresholds(_Strict):
    """Alert when a drift or performance metric crosses its threshold; ``null`` turns a check off.

    Drift thresholds are effect sizes, not p-values: with millions of logged rows
    every tiny shift is "significant", so a p-value would alert on noise.
    """

    psi: float | None = Field(0.2, gt=0)
    """Population stability index per feature (0.1 slight, 0.2 significant shift)."""
    ks: float | None = Field(0.1, gt=0, le=1)
    """Kolmogorov-Smirnov statistic (largest CDF gap) for numeric features."""
    category_shift: float | None = Field(0.1, gt=0, le=1)
    """Total variation distance between category frequencies (share of rows that moved)."""
    null_rate_change: float | None = Field(0.05, gt=0, le=1)
    """Absolute change of a feature's null rate."""
    out_of_schema_rate: float | None = Field(0.05, gt=0, le=1)
    """Increase, over the train split's, of the share of values outside the contract's range or
    kept categories (high-cardinality categoricals have a baseline share)."""
    prediction_psi: float | None = Field(0.2, gt=0)
    """PSI of the model's score distribution against the test split's."""
    performance_drop: float | None = Field(0.05, gt=0)
    """Live vs test primary metric (needs --labels): absolute drop for AUC/accuracy,
    relative increase for RMSE (0.05 = 5% worse)."""
    latency_p95_ms: float | None = Field(None, gt=0)
    """Request latency p95 ceiling; off by default."""


class RetrainConfig(_Strict):
    """The closed loop: an alert retrains on a new data window, gates it, and hot-reloads Serve."""

    enabled: bool = False
    data_path: str | None = None
    """The new window's data; default ``data.path``."""
    data_filter: str | None = None
    """Its ``data.filter`` (e.g. ``month >= 10``); default ``data.filter``."""


class MonitorConfig(_Strict):
    """``raypipe monitor``: drift, data-quality and live-performance checks over prediction logs."""

    log_dir: str | None = None
    """Prediction logs (or any Parquet of features); default ``<work_dir>/predictions``."""
    out_dir: str | None = None
    """Where the JSON and HTML reports go; default ``<work_dir>/monitor``."""
    thresholds: MonitorThresholds = MonitorThresholds()
    min_rows: int = Field(1000, ge=1)
    """Fewer rows in the window than this: no drift verdict (too noisy), only a warning."""
    webhook_url: str | None = None
    """Slack-compatible incoming webhook; alerts are POSTed here as JSON (``${ENV:NAME}`` for secrets)."""
    webhook_timeout_s: float = Field(5.0, gt=0)
    webhook_attempts: int = Field(4, ge=1)
    webhook_backoff_s: float = Field(0.5, ge=0)
    """First retry delay; doubles on each further attempt."""
    alert_exit_code: int = Field(8, ge=1, le=125)
    """Exit code of ``raypipe monitor`` when an alert fired (errors use 1-6)."""
    retrain: RetrainConfig = RetrainConfig()

    @model_validator(mode="after")
    def _check_webhook(self) -> MonitorConfig:
        if self.webhook_url is not None and not self.webhook_url.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL (a Slack incoming webhook)")
        return self
