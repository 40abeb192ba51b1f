"""The ``serve`` section: replicas, ingress, request limits, batching and the prediction log."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raypipe.config._base import _Strict


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
    out_of_range: Literal["reject", "flag"] = "flag"
    """A number outside the training range, or a fraction in a field that was integer in training
    (``day`` 300, ``month`` 1.5): ``flag`` scores it and answers a ``warnings`` list naming the
    field (logged with the prediction, counted in the monitor's out-of-schema rate); ``reject``
    answers 422. Default ``flag``: training min/max are a sample's extremes, not a contract, so
    real traffic drifts past them (a longer route, a new peak), and a tree scores such a value
    as its edge bin; rejecting would turn drift into failed calls, flagging keeps answers
    flowing and makes the drift visible. Values of the wrong kind are always 422."""
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
        if self.autoscaling is not None and self.autoscaling.min_replicas == 0 and self.request_timeout_s < 30:
            # Measured: the flights model's first request after idle took 11.5-11.9 s on 2 cores;
            # with the default 10 s, HAProxy ended it (504, answered as 500) every time.
            raise ValueError(
                f"autoscaling.min_replicas 0 needs request_timeout_s >= 30 (it is {self.request_timeout_s:g}): "
                "the first request after idle waits for a replica to start, which takes longer than "
                "that, and would fail with a 500"
            )
        return self
