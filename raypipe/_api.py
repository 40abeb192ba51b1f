"""The functions behind ``raypipe``'s public names. Each imports the heavy parts (Ray, MLflow) only
when called, so ``import raypipe`` stays cheap."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypipe.config import PipelineConfig
from raypipe.config import load_config as _load_config

if TYPE_CHECKING:
    from raypipe.model import Model
    from raypipe.monitor.job import MonitorResult
    from raypipe.pipeline.plan import Plan
    from raypipe.pipeline.summary import Reporter, RunResult
    from raypipe.serve.batch import ScoreResult


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | dict[str, Any] | None = None
) -> PipelineConfig:
    """A validated config from a YAML file or a mapping, with overrides applied.

    Args:
        source: a YAML path, or the config as a dict (``{"data": {"path": ..., "label": ...}}``).
        overrides: ``["train.num_boost_round=50"]`` (as ``--set``) or ``{"train.num_boost_round": 50}``.

    Raises:
        ConfigError: every problem at once, each with its key path.

    Example:
        >>> cfg = load_config({"data": {"path": "data/", "label": "y"}}, {"train.num_boost_round": 50})
        >>> cfg.train.num_boost_round
        50
    """
    if isinstance(overrides, dict):
        import json

        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    if isinstance(source, dict):
        return _load_config(raw=source, overrides=overrides)
    return _load_config(source, overrides)


def run(
    config: PipelineConfig | str | Path | dict[str, Any],
    *,
    serve: bool = False,
    use_cache: bool = True,
    rerun_from: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    work_dir: str | Path | None = None,
    report: Reporter | None = None,
) -> RunResult:
    """Run the pipeline (ingest to register; serving only with ``serve=True``), reusing cached stages.

    A local Ray started for the run is stopped before this returns, unless ``serve=True`` keeps
    the model deployed.

    Args:
        config: a config, or what :func:`load_config` reads.
        serve: deploy the champion on Ray Serve at the end (needs the Ray to stay up).
        use_cache, rerun_from: as ``--no-cache`` and ``--from STAGE``.
        address, tracking_uri, work_dir: as ``--address``, ``--tracking-uri``, ``--work-dir``.
        report: called with ``(stage, seconds, detail)`` after each stage.

    Returns:
        Metrics, the registered version, the gate's decision, and the run's paths.

    Raises:
        RaypipeError: a stage failed; its subclass says which kind of input or step.

    Example:
        >>> result = run({"data": {"path": "dataset://flights", "label": "delayed"}})  # doctest: +SKIP
        >>> result.metrics["test_auc"], result.champion  # doctest: +SKIP
        (0.79, True)
    """
    from raypipe.pipeline.run import run_pipeline

    cfg = config if isinstance(config, PipelineConfig) else load_config(config)
    ray_before = _ray_running()
    try:
        return run_pipeline(
            cfg,
            address=address,
            tracking_uri=tracking_uri,
            work_dir=str(work_dir) if work_dir else None,
            serve_model=serve,
            report=report,
            use_cache=use_cache,
            rerun_from=rerun_from,
        )
    finally:
        if not serve:
            _stop_local_ray(ray_before)


def plan(
    config: PipelineConfig | str | Path | dict[str, Any],
    *,
    tracking_uri: str | None = None,
    work_dir: str | Path | None = None,
) -> Plan:
    """Which stages :func:`run` would reuse and which it would run, and why; starts no Ray."""
    from raypipe.pipeline.plan import plan_run

    cfg = config if isinstance(config, PipelineConfig) else load_config(config)
    return plan_run(cfg, tracking_uri=tracking_uri, work_dir=str(work_dir) if work_dir else None, serve_model=False)


def load_model(model: str | Path, tracking_uri: str | None = None) -> Model:
    """A registered model (``models:/name@champion``, ``models:/name/3``) or a bundle folder, verified.

    Every file is checked against the sha256 the registry recorded. ``Model.predict`` validates
    rows against the training contract as the HTTP API does and returns the same answers.

    Example:
        >>> model = load_model("models:/flights@champion")  # doctest: +SKIP
        >>> model.predict([{"carrier": "B6", ...}])["prediction"]  # doctest: +SKIP
        [False]
    """
    from raypipe.registry.loading import load_model as _load

    return _load(str(model), tracking_uri)


def score(
    model: str | Path,
    input_path: str,
    output_dir: str | Path,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    actors: int = 2,
    cpus_per_actor: float = 0.5,
    partition_by: list[str] | None = None,
) -> ScoreResult:
    """Batch-score Parquet on Ray Data with the serving preprocessor (``raypipe predict``)."""
    from raypipe.runtime import resolve_paths
    from raypipe.serve.batch import score_parquet

    uri = resolve_paths(tracking_uri=tracking_uri, create=False).tracking_uri
    ray_before = _ray_running()
    try:
        return score_parquet(
            str(model),
            uri,
            input_path,
            str(output_dir),
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            partition_cols=partition_by,
            address=address,
        )
    finally:
        _stop_local_ray(ray_before)


def run_monitor(
    config: PipelineConfig | str | Path | dict[str, Any],
    *,
    model: str | None = None,
    reference: str | Path | None = None,
    input_path: str | None = None,
    since: str | None = None,
    until: str | None = None,
    labels: str | None = None,
    send_alerts: bool = True,
    tracking_uri: str | None = None,
    work_dir: str | Path | None = None,
) -> MonitorResult:
    """Drift, data quality and live performance of a window of logs against the model's reference
    (``raypipe monitor``). ``result.alerts`` lists each crossed threshold."""
    from raypipe.monitor.collect import parse_time
    from raypipe.monitor.job import run_monitor as _run_monitor

    cfg = config if isinstance(config, PipelineConfig) else load_config(config)
    ray_before = _ray_running()
    try:
        return _run_monitor(
            cfg,
            reference=reference,
            model_uri=model,
            input_path=input_path,
            since=parse_time(since),
            until=parse_time(until),
            labels=labels,
            send_alerts=send_alerts,
            tracking_uri=tracking_uri,
            work_dir=work_dir,
        )
    finally:
        _stop_local_ray(ray_before)


def _ray_running() -> bool:
    import ray

    return ray.is_initialized()


def _stop_local_ray(ray_before: bool) -> None:
    """Stop the Ray (and its HAProxy) this call started; a cluster it joined, or a Ray that was
    already up (an earlier ``run(serve=True)`` still serving, a notebook's own), keeps running."""
    import ray

    from raypipe.runtime import owns_ray

    if not ray_before and owns_ray():
        ray.shutdown()
        from raypipe.serve.ingress import stop_haproxy

        stop_haproxy()
