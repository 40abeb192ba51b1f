"""The orchestrator: a loop over the stage table, with timing, the cache, MLflow and resume in one place.

Metadata checks come first (a wrong path or label fails before Ray starts); then Ray, then each
enabled stage of :data:`raypipe.pipeline.table.STAGES`, in order: its key from its code, config and
upstream keys; its cached result or a fresh one; its ``record`` step; one progress line and one
nested MLflow run. One parent MLflow run per pipeline run; a manifest and audit events at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from raypipe.config import PipelineConfig, config_hash
from raypipe.data import sources
from raypipe.errors import RegistryError, SchemaError
from raypipe.pipeline import manifest
from raypipe.pipeline.cache import StageCache, stage_key
from raypipe.pipeline.context import RunContext
from raypipe.pipeline.summary import Reporter, RunResult, StageTimer
from raypipe.pipeline.table import NAMES, STAGES
from raypipe.registry import audit
from raypipe.registry.tracking import Tracker, flatten, log_code_and_env
from raypipe.runtime import CpuBudget, check_shared_storage, connect, resolve_paths, storage_path
from raypipe.runtime.lock import work_lock

log = logging.getLogger(__name__)


def run_pipeline(
    cfg: PipelineConfig,
    *,
    config_text: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    work_dir: str | None = None,
    serve_model: bool | None = None,
    report: Reporter | None = None,
    verbose: bool = False,
    use_cache: bool = True,
    rerun_from: str | None = None,
    wait_lock: bool = False,
) -> RunResult:
    """Run every stage, reusing cached stage outputs, and return the result.

    Args:
        cfg: the validated config.
        config_text: the YAML as written, logged to MLflow verbatim.
        address: Ray cluster address; default ``runtime.address``, ``RAY_ADDRESS`` or a local Ray.
        tracking_uri, work_dir: override the config and environment (see :func:`raypipe.runtime.resolve_paths`).
        serve_model: deploy to Serve; default ``serve.enabled``.
        report: progress callback, called after each stage.
        verbose: forward Ray worker logs to this process.
        use_cache: ``False`` recomputes every stage (outputs are still stored for the next run).
        rerun_from: recompute this stage and every later one.
        wait_lock: when another run holds the work folder, wait for it instead of failing.

    Raises:
        BusyError: another run holds the work folder (and ``wait_lock`` is false).
        RaypipeError: any stage's failure, as its subclass.
    """
    ctx = prepare(cfg, tracking_uri=tracking_uri, work_dir=work_dir, serve_model=serve_model)
    with work_lock(ctx.paths.work_dir, wait=wait_lock):
        return _run(ctx, config_text, address, report, verbose, use_cache, rerun_from)


def _run(ctx: RunContext, config_text, address, report, verbose, use_cache, rerun_from) -> RunResult:
    cfg = ctx.cfg
    cache = StageCache(ctx.paths.cache, enabled=use_cache, rerun_from=rerun_from, order=NAMES)
    code, packages = manifest.code_info(), manifest.package_versions()
    run_name = f"{cfg.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    t = Tracker(ctx.paths.tracking_uri, cfg.register.experiment, ctx.paths.artifacts, run_name, cfg.register.enabled)
    timer = StageTimer(report, t, ctx.stage_seconds, ctx.cached)
    ctx.tracker, ctx.code, ctx.packages = t, code, packages
    work = ctx.paths.work_dir
    for orphan in t.closed_orphans:  # a run killed outright (kill -9) never wrote its own end
        audit.record(work, "run_failed", name=cfg.name, run_id=orphan, error="process gone; marked KILLED")
    audit.record(
        work, "run_start", name=cfg.name, run_id=t.run_id, config_hash=ctx.config_hash, data_fingerprint=ctx.fingerprint
    )
    resolved = json.dumps(cfg.model_dump(mode="json"), indent=2)
    t.log_params(flatten(cfg.model_dump(mode="json")))
    t.set_tags({"raypipe.config_hash": ctx.config_hash, "raypipe.data_fingerprint": ctx.fingerprint})
    t.log_text(config_text or resolved, "config.yaml")
    t.log_text(resolved, "config.resolved.json")
    log_code_and_env(t, code, packages, manifest.all_packages() if t.enabled else "")
    try:
        _connect(ctx, timer, address, verbose)
        for stage in STAGES:
            if stage.enabled(ctx):
                _run_stage(ctx, timer, cache, stage)
    except BaseException as e:
        # Read by the CLI to print the command that resumes the run.
        # A stage's result is stored before its MLflow record: it counts as finished even when the
        # record is what failed (a tracking outage), since the rerun reuses it.
        e.raypipe_finished_stages = [s.name for s in STAGES if s.cached and s.name in ctx.results]
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        error = (str(e).splitlines() or [type(e).__name__])[0][:300]
        audit.record(work, "run_failed", name=cfg.name, run_id=t.run_id, error=error)
        _close_failed(t, status)
        raise
    t.set_tags({"raypipe.cached_stages": ",".join(ctx.cached) or "none"})
    result = RunResult.of(ctx)
    path = ctx.paths.runs(cfg.name) / (t.run_id or run_name) / manifest.MANIFEST_FILE
    result.manifest_path = str(manifest.write(path, manifest.build(ctx)))
    t.log_artifact(result.manifest_path)
    audit.record(
        work,
        "run_end",
        name=cfg.name,
        run_id=t.run_id,
        model=result.model_name,
        version=result.model_version,
        cached=ctx.cached,
        metrics=result.metrics,
    )
    entries = audit.read(work, run_id=t.run_id) if t.run_id else []
    t.log_text("".join(json.dumps(e, default=str) + "\n" for e in entries), "audit.jsonl")
    t.end()
    return result


def _close_failed(t: Tracker, status: str) -> None:
    """Mark the parent run KILLED or FAILED; with the store down, say so and keep the run's own error
    (the next run on this host marks it, as it does after ``kill -9``)."""
    try:
        t.end(status)
    except RegistryError as e:
        log.warning("could not mark MLflow run %s %s: %s", t.run_id, status, e)


def prepare(
    cfg: PipelineConfig,
    *,
    tracking_uri: str | None = None,
    work_dir: str | None = None,
    serve_model: bool | None = None,
    create: bool = True,
    build_datasets: bool = True,
) -> RunContext:
    """The run's context from metadata alone: paths, the source's files and schema, the fingerprint.

    Starts no Ray and reads no rows. With ``build_datasets=False`` a built-in dataset
    (``dataset://flights``) that is not built yet raises instead of being built.

    Raises:
        DataError, SchemaError: no data at ``data.path``, or the label is not a column.
    """
    paths = resolve_paths(cfg, work_dir=work_dir, tracking_uri=tracking_uri, create=create)
    data_path, source = sources.open_source(cfg.data, paths.datasets, build=build_datasets)
    columns = cfg.data.columns or source.schema.names
    if cfg.data.label not in columns:
        raise SchemaError(
            f"label column '{cfg.data.label}' is not in the data under '{cfg.data.source_name}'; "
            f"available columns: {', '.join(columns)}",
            column=cfg.data.label,
        )
    return RunContext(
        cfg=cfg,
        paths=paths,
        source=source,
        data_path=data_path,
        columns=list(columns),
        fingerprint=sources.fingerprint(source, cfg.data.columns),
        config_hash=config_hash(cfg),
        tracker=Tracker.disabled(paths.tracking_uri),
        serving=serving(cfg, serve_model),
    )


def serving(cfg: PipelineConfig, serve_model: bool | None) -> bool:
    """Whether the run ends on Ray Serve: ``--serve``/``--no-serve``, else ``serve.enabled``; only
    a registered model can be served."""
    return (cfg.serve.enabled if serve_model is None else serve_model) and cfg.register.enabled


def _connect(ctx: RunContext, timer: StageTimer, address: str | None, verbose: bool) -> None:
    """Start or join Ray, check every node can see what the run needs, and split the CPUs."""
    cfg = ctx.cfg
    with timer.stage("ray") as detail:
        if ctx.serving:
            from raypipe.serve.ingress import use_ingress

            use_ingress(cfg.serve, address or cfg.runtime.address)
        session = connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=verbose)
        detail.append(f"{session.total_cpus:g} CPUs, {session.num_nodes} node(s)")
        shared = {
            "data.path": ctx.data_path,
            "MLflow tracking store": ctx.paths.tracking_uri if cfg.register.enabled else None,
            "checkpoints (runtime.storage_path)": storage_path(cfg, ctx.paths.work_dir),
        }
        check_shared_storage(session, shared, cfg.runtime.shared_storage)
        serve_cpus = cfg.serve.num_replicas * cfg.serve.cpus_per_replica if ctx.serving else 0.0
        ctx.session = session
        ctx.budget = CpuBudget.plan(session, cfg.train, cfg.runtime.data_cpus, serve_cpus)


def _run_stage(ctx: RunContext, timer: StageTimer, cache: StageCache, stage) -> Any:
    inputs = {u: ctx.results.get(u) for u in stage.upstream}
    with timer.stage(stage.name) as detail:
        if stage.cached:
            parts = stage.key_parts(ctx, ctx.keys)
            key = ctx.keys[stage.name] = stage_key(parts)
            result = cache.reuse_or_run(
                stage.name, key, stage.result, lambda: stage.run(ctx, **inputs), detail, parts=parts
            )
            cache.remember(ctx.cfg.name, ctx.keys)
        else:
            result = stage.run(ctx, **inputs)
        ctx.results[stage.name] = result
        if stage.record is not None:
            stage.record(ctx, result)
        detail.append(stage.describe(ctx, result))
    return result
