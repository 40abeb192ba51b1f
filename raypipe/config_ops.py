"""Config sections for running a model: ``serve``, ``monitor`` and ``report`` (see ``raypipe.config``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raypipe._strict import _Strict


class ServeAutoscalingConfig(_Strict):
    """Ray Serve replica autoscaling; replaces ``serve.num_replicas`` when set."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8.0, gt=0)
    """Requests in flight per replica the autoscaler aims for."""
    upscale_delay_s: float = Field(3.0, ge=0)
    """Lower than Serve's 30 s so a burst gets a second replica quickly."""
    downscale_delay_s: float = Field(60.0, ge=0)
    look_back_period_s: float = Field(15.0, gt=0)
    """Window the in-flight request count is averaged over: Serve's default 30 s reacts slowly, and
    Serve wants it above the 10 s its replicas take to push their load."""

    @model_validator(mode="after")
    def _check(self) -> ServeAutoscalingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError(f"max_replicas ({self.max_replicas}) must be >= min_replicas ({self.min_replicas})")
        return self


class ServeConfig(_Strict):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    """0 picks a free port."""
    app_name: str = "raypipe"
    num_replicas: int = Field(1, ge=1)
    autoscaling: ServeAutoscalingConfig | None = None
    """Autoscale between min and max replicas instead of a fixed ``num_replicas``."""
    ingress: Literal["auto", "haproxy", "proxy", "direct"] = "auto"
    """How HTTP reaches the replicas, fixed when this process starts its local Ray
    (``raypipe.serve.ingress``): ``haproxy`` (Serve's HAProxy mode, throughput-optimised: about
    6x the proxy's req/s; needs a haproxy binary, which ray[serve] installs on Linux), ``proxy``
    (Serve's Python proxy actor) or ``direct`` (the replica listens itself; one replica only, and
    a reload moves its port). ``auto``: ``haproxy`` when a binary is found, else ``proxy``."""
    cpus_per_replica: float = Field(0.25, gt=0)
    max_ongoing_requests: int = Field(32, ge=1)
    max_queued_requests: int = Field(256, ge=1)
    """Requests waiting for a replica; past this bound the proxy answers 503 at once."""
    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_records: int = Field(10_000, ge=1)
    """Records in one request; more is a 413."""
    request_timeout_s: float = Field(10.0, gt=0)
    """End-to-end HTTP timeout: the Serve proxy ends a request that takes longer."""
    max_batch_size: int = Field(32, ge=1)
    """Requests ``@serve.batch`` scores in one vectorised ``inplace_predict``."""
    batch_wait_timeout_s: float = Field(0.0, ge=0)
    """How long a batch waits to fill; 0 takes whatever is queued (best p50 at low load)."""
    unknown_fields: Literal["reject", "ignore"] = "reject"
    """A field not in the contract: 422 naming it, or dropped silently."""
    unseen_categories: Literal["reject", "missing"] = "missing"
    """A category not seen in training: 422 naming the field, or scored as missing (as in training)."""
    log_predictions: bool = True
    """Append inputs, outputs, version and latency to Parquet for monitoring (off the request path)."""
    log_dir: str | None = None
    """Prediction log root; default ``<runtime.work_dir>/predictions``."""
    log_flush_rows: int = Field(1000, ge=1)
    log_flush_s: float = Field(5.0, gt=0)
    log_queue_rows: int = Field(100_000, ge=1)
    """Rows buffered for the log writer; past this, log lines are dropped (and counted), never blocking."""

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.max_batch_size > self.max_ongoing_requests:
            raise ValueError(
                f"max_batch_size ({self.max_batch_size}) cannot exceed max_ongoing_requests "
                f"({self.max_ongoing_requests}): a batch could never fill"
            )
        return self


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
