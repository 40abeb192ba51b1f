"""The pipeline: stages in order, each timed, cached and tracked, from Parquet to a served model.

    ingest -> profile (split, contract) -> quality -> preprocess -> train -> evaluate -> register -> serve

Each stage's output is stored under a key of its code, config and inputs
(raypipe.cache), so a rerun reuses what did not change and a killed run resumes
from the last finished stage. One parent MLflow run per pipeline run, one nested
run per stage; a manifest and audit events are written at the end.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from raypipe import audit, manifest, runtime, steps
from raypipe.cache import StageCache, stage_key
from raypipe.config import PipelineConfig, config_hash
from raypipe.data import ingest, quality
from raypipe.data.profile import SPLIT_NAMES, combine
from raypipe.data.schema import Contract
from raypipe.data.split import SPLIT_COLUMN, add_split_column
from raypipe.manifest import MANIFEST_FILE
from raypipe.registry import default_tracking_uri
from raypipe.stages import (
    STAGE_CODE,
    STAGES,
    Evaluated,
    Ingested,
    Prepared,
    Profiled,
    QualityResult,
    Registered,
    Reported,
    Trained,
)
from raypipe.steps import fit_preprocessor, infer_schema  # noqa: F401 - public re-exports
from raypipe.summary import Reporter, RunSummary, StageTimer
from raypipe.tracking import log_results

log = logging.getLogger(__name__)


def run_pipeline(
    cfg: PipelineConfig,
    *,
    config_text: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    serve_model: bool | None = None,
    report: Reporter | None = None,
    verbose: bool = False,
    use_cache: bool = True,
    rerun_from: str | None = None,
) -> RunSummary:
    """Run every stage, reusing cached stage outputs, and return the summary.

    Args:
        cfg: the validated config.
        config_text: the YAML as written, logged to MLflow verbatim.
        address: Ray cluster address; default ``RAY_ADDRESS`` or a local Ray.
        tracking_uri: MLflow store; default ``MLFLOW_TRACKING_URI`` or SQLite in the work dir.
        serve_model: deploy to Serve; default ``cfg.serve.enabled``.
        report: progress callback.
        verbose: forward Ray worker logs to this process.
        use_cache: ``False`` recomputes every stage (outputs are still stored for the next run).
        rerun_from: recompute this stage and every later one.

    Raises:
        RaypipeError: any stage's failure, as its subclass.
    """
    import os

    from raypipe.tracking import Tracker, flatten, log_code_and_env

    work = runtime.work_dir(cfg)
    tracking_uri = tracking_uri or cfg.runtime.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    tracking_uri = tracking_uri or default_tracking_uri(work)
    cache = StageCache(work / "cache", enabled=use_cache, rerun_from=rerun_from, order=STAGES)
    # Metadata checks first: a wrong path or label fails before Ray starts.
    path = ingest.resolve_path(cfg.data.path, work / "datasets")
    source = ingest.discover(path, cfg.data.filter)
    names = cfg.data.columns or source.schema.names
    if cfg.data.label not in names:
        from raypipe.errors import SchemaError

        raise SchemaError(
            f"label column '{cfg.data.label}' is not in the data under '{cfg.data.path}'; "
            f"available columns: {', '.join(names)}",
            column=cfg.data.label,
        )
    fp = ingest.fingerprint(source, cfg.data.columns)
    chash = config_hash(cfg)
    code, packages = manifest.code_info(), manifest.package_versions()
    run_name = f"{cfg.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
    tracker = Tracker(tracking_uri, cfg.register.experiment, work / "mlartifacts", run_name, cfg.register.enabled)
    for orphan in tracker.closed_orphans:  # a run killed outright (kill -9) never wrote its own end
        audit.record(work, "run_failed", name=cfg.name, run_id=orphan, error="process gone; marked KILLED")
    audit.record(work, "run_start", name=cfg.name, run_id=tracker.run_id, config_hash=chash, data_fingerprint=fp)
    tracker.log_params(flatten(cfg.model_dump(mode="json")))
    tracker.set_tags({"raypipe.config_hash": chash, "raypipe.data_fingerprint": fp})
    tracker.log_text(config_text or json.dumps(cfg.model_dump(mode="json"), indent=2), "config.yaml")
    tracker.log_text(json.dumps(cfg.model_dump(mode="json"), indent=2), "config.resolved.json")
    log_code_and_env(tracker, code, packages, manifest.all_packages() if tracker.enabled else "")
    ctx = _Run(cfg, work, source, path, names, fp, chash, cache, StageTimer(report, tracker), tracker, tracking_uri)
    ctx.code, ctx.packages = code, packages
    try:
        summary = _run_stages(ctx, address, serve_model, verbose)
    except BaseException as e:
        # Read by the CLI to print the command that resumes the run.
        e.raypipe_finished_stages = [s for s in ctx.timer.seconds if s != "ray"]
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        audit.record(
            work,
            "run_failed",
            name=cfg.name,
            run_id=tracker.run_id,
            error=(str(e).splitlines() or [type(e).__name__])[0][:300],
        )
        tracker.end(status)
        raise
    m = manifest.build(cfg, summary, data_path=path, files=len(source.files), code=code, packages=packages)
    summary.manifest_path = str(
        manifest.write(work / "runs" / cfg.name / (tracker.run_id or run_name) / MANIFEST_FILE, m)
    )
    tracker.log_artifact(summary.manifest_path)
    audit.record(
        work,
        "run_end",
        name=cfg.name,
        run_id=tracker.run_id,
        model=summary.model_name,
        version=summary.model_version,
        cached=ctx.timer.cached,
        metrics=summary.metrics,
    )
    entries = audit.read(work, run_id=tracker.run_id) if tracker.run_id else []
    tracker.log_text("".join(json.dumps(e, default=str) + "\n" for e in entries), "audit.jsonl")
    tracker.end()
    return summary


@dataclass
class _Run:
    cfg: PipelineConfig
    work: Path
    source: Any
    path: str
    names: list[str]
    fingerprint: str
    config_hash: str
    cache: StageCache
    timer: StageTimer
    tracker: Any
    tracking_uri: str
    keys: dict[str, str] = field(default_factory=dict)
    code: Any = None
    packages: dict[str, str] = field(default_factory=dict)


def _key(ctx: _Run, stage: str, config: Any, *upstream: str) -> str:
    inputs = [ctx.keys[u] for u in upstream] if upstream else [ctx.fingerprint]
    ctx.keys[stage] = stage_key(stage, code=STAGE_CODE[stage], config=config, inputs=inputs)
    return ctx.keys[stage]


def _run_stages(ctx: _Run, address: str | None, serve_model: bool | None, verbose: bool) -> RunSummary:
    cfg, work, timer, cache = ctx.cfg, ctx.work, ctx.timer, ctx.cache
    data_cfg = cfg.data.model_dump(mode="json")
    with timer.stage("ray") as d:
        if _serving(cfg, serve_model) and cfg.register.enabled:
            from raypipe.serve.ingress import use_ingress

            use_ingress(cfg.serve, address or cfg.runtime.address)
        session = runtime.connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=verbose)
        d.append(f"{session.total_cpus:g} CPUs, {session.num_nodes} node(s)")
        storage = runtime.storage_path(cfg, work)
        runtime.check_shared_storage(
            session,
            {
                "data.path": ctx.path,
                "MLflow tracking store": ctx.tracking_uri if cfg.register.enabled else None,
                "checkpoints (runtime.storage_path)": storage,
            },
            cfg.runtime.shared_storage,
        )
    with timer.stage("ingest") as d:
        key = _key(ctx, "ingest", {k: data_cfg[k] for k in ("path", "filter", "columns", "validate_files")})
        ing = cache.reuse_or_run("ingest", key, Ingested, lambda: _ingest(ctx), d)
        d.append(f"{ing.files} files, fingerprint {ing.fingerprint}")

    # Built after the ingest stage: reading the schema of a corrupt file must fail there, by name.
    ds = ingest.read(ctx.source, cfg.data.columns)
    split_key = cfg.data.split.key or ([cfg.data.id_column] if cfg.data.id_column else list(ctx.names))
    split_ds = ds.map_batches(
        add_split_column,
        batch_format="pyarrow",
        fn_kwargs={"key": split_key, "cfg": cfg.data.split},
        zero_copy_batch=True,
    )

    declared = Contract.load(cfg.data.schema_file) if cfg.data.schema_file else None
    schema = pa.schema([ctx.source.schema.field(n) for n in ctx.names])
    with timer.stage("profile") as d:
        conf = {
            "data": data_cfg,
            "features": cfg.features.model_dump(mode="json"),
            "declared": declared.to_dict() if declared else None,
        }
        key = _key(ctx, "profile", conf, "ingest")
        prof = cache.reuse_or_run(
            "profile", key, Profiled, lambda: steps.profile_data(cfg, schema, ds, split_ds, declared), d
        )
        steps.check_splits(prof.rows)
        d.append(f"task={prof.contract.label.task} rows={prof.rows} features={len(prof.contract.features)}")
    stats = combine(prof.profile)
    train_stats = prof.profile.get("train", stats)

    with timer.stage("quality") as d:
        key = _key(ctx, "quality", data_cfg["quality"], "profile")

        def _check() -> QualityResult:
            dups = quality.count_duplicate_ids(ds, cfg.data.id_column) if cfg.data.id_column else None
            rep = quality.check(stats, prof.contract, declared, cfg.data.quality, dups)
            quality.enforce(rep, ctx.source, declared)
            return QualityResult(rep)

        qreport = cache.reuse_or_run("quality", key, QualityResult, _check, d).report
        qreport.save(work / "runs" / cfg.name)
        for f in qreport.findings:
            log.info("data quality [%s] %s '%s': %s", f.action, f.rule, f.column, f.message)
        d.append(f"{len(qreport.findings)} finding(s)")
        d.extend(f"[{f.action}] {f.rule}:{f.column}" for f in qreport.findings[:5])

    with timer.stage("preprocess") as d:
        # Split files where every node sees the cache's disk; materialised Datasets elsewhere.
        files_root = cache.root / "preprocess" if session.single_host else None
        key = _key(ctx, "preprocess", cfg.features.model_dump(mode="json"), "profile")
        prep_out = cache.reuse_or_run(
            "preprocess",
            key,
            Prepared,
            lambda: steps.preprocess(cfg, prof.contract, train_stats, split_ds, files_root),
            d,
        )
        prep = prep_out.preprocessor
        d.append(f"{len(prep.feature_names)} model inputs")

    serving = _serving(cfg, serve_model) and cfg.register.enabled
    serve_cpus = cfg.serve.num_replicas * cfg.serve.cpus_per_replica if serving else 0.0
    budget = runtime.CpuBudget.plan(session, cfg.train, cfg.runtime.data_cpus, serve_cpus)
    ctx.tracker.set_tags({"raypipe.cpu_budget": json.dumps(asdict(budget))})
    with timer.stage("train") as d:
        conf = {"train": cfg.train.model_dump(mode="json"), "tune": cfg.tune.model_dump(mode="json")}
        key = _key(ctx, "train", conf, "preprocess")
        fit = cache.reuse_or_run(
            "train",
            key,
            Trained,
            lambda: steps.train_model(cfg, prof, prep, prep_out.parts, budget, storage, ctx.tracker),
            d,
        )
        d.append(
            f"{fit.kind}: {budget.num_workers} worker(s) x {budget.cpus_per_worker:g} CPU, nthread={budget.nthread}, "
            f"best round {fit.best_iteration + 1}/{fit.rounds}"
        )

    with timer.stage("evaluate") as d:
        key = _key(ctx, "evaluate", cfg.evaluate.model_dump(mode="json"), "train")
        ev = cache.reuse_or_run(
            "evaluate",
            key,
            Evaluated,
            lambda: _evaluate(fit, prep_out, prof, split_ds, cfg),
            d,
        )
        d.append(" ".join(f"test_{k}={v:.4f}" for k, v in ev.report.metrics.items()))

    summary = RunSummary(
        name=cfg.name,
        config_hash=ctx.config_hash,
        data_fingerprint=ctx.fingerprint,
        task=prof.contract.label.task,
        rows=prof.rows,
        metrics=ev.report.prefixed(),
        tracking_uri=ctx.tracking_uri,
        run_id=ctx.tracker.run_id,
        experiment_id=ctx.tracker.experiment_id,
        example=prof.example,
        stage_seconds=timer.seconds,
        stage_keys=ctx.keys,
        cached_stages=timer.cached,
    )
    summary.notes = list(prof.contract.notes) + [
        f"data quality [{f.action}] {f.rule} '{f.column}': {f.message}" for f in qreport.findings
    ]
    if fit.sampling:
        summary.notes.append(fit.sampling)
    if fit.tune:
        summary.tune = {k: v for k, v in fit.tune.items() if k != "trials"}
    log_results(ctx.tracker, summary, fit, qreport, ctx.path, ctx.cfg.name, ctx.timer.cached)

    if cfg.register.enabled:
        with timer.stage("register") as d:
            conf = {"register": cfg.register.model_dump(mode="json"), "store": ctx.tracking_uri}
            key = _key(ctx, "register", conf, "evaluate")
            reg = cache.reuse_or_run(
                "register",
                key,
                Registered,
                lambda: _register(ctx, fit, prep, prof, ev, split_ds),
                d,
            )
            summary.model_name, summary.model_version = reg.model_name, reg.model_version
            summary.champion, summary.gate_reason, summary.artifact_hashes = reg.champion, reg.gate_reason, reg.hashes
            ctx.tracker.set_tags(
                {"raypipe.model": f"{reg.model_name}/{reg.model_version}", "raypipe.gate": reg.gate_reason}
            )
            d.append(f"{summary.model_name} v{summary.model_version} ({summary.gate_reason})")

    if cfg.report.enabled:
        with timer.stage("report") as d:
            gate = {"model": summary.model_name, "version": summary.model_version, "champion": summary.champion}
            gate["reason"] = summary.gate_reason or "not registered (register.enabled: false)"
            man = manifest.build(
                cfg, summary, data_path=ctx.path, files=len(ctx.source.files), code=ctx.code, packages=ctx.packages
            )
            conf = {"report": cfg.report.model_dump(mode="json"), "gate": gate}
            key = _key(ctx, "report", conf, "register" if "register" in ctx.keys else "evaluate")
            rep = cache.reuse_or_run(
                "report",
                key,
                Reported,
                lambda: steps.run_report(
                    cfg,
                    prof=prof,
                    fit=fit,
                    ev=ev,
                    qreport=qreport,
                    split_ds=split_ds,
                    prep=prep,
                    gate=gate,
                    manifest=man,
                ),
                d,
            )
            summary.report_path = str(rep.folder / "report.html")
            ctx.tracker.log_artifacts(rep.folder, "report")
            d.append(summary.report_path)

    if serving:
        from raypipe.serve.deploy import deploy, post_json, serve_settings

        with timer.stage("serve") as d:
            uri = f"models:/{summary.model_name}@{cfg.register.alias}"
            summary.endpoint = deploy(uri, ctx.tracking_uri, serve_settings(cfg))
            status, body = post_json(summary.endpoint + "/predict", summary.example)
            if status != 200:
                from raypipe.errors import ServingError

                raise ServingError(f"smoke request to {summary.endpoint}/predict returned {status}: {body}")
            summary.prediction = body
            d.append(f"{summary.endpoint}/predict -> {body.get('prediction')}")
    summary.stage_seconds = timer.seconds
    summary.cluster = {"cpus": session.total_cpus, "nodes": session.num_nodes, "budget": asdict(budget)}
    return summary


def _ingest(ctx: _Run) -> Ingested:
    if ctx.cfg.data.validate_files:
        ingest.validate_files(ctx.source)
    return Ingested(ctx.fingerprint, len(ctx.source.files), ctx.cfg.data.validate_files)


def _evaluate(fit: Trained, prep_out: Prepared, prof: Profiled, split_ds, cfg: PipelineConfig) -> Evaluated:
    ev = steps.evaluate_model(fit.booster, prep_out.parts["test"], prof.contract, cfg)
    ev.reference = steps.reference_profile(split_ds, prof.contract, ev)
    return ev


def _register(ctx: _Run, fit: Trained, prep, prof: Profiled, ev: Evaluated, split_ds) -> Registered:
    from ray.data.expressions import col

    from raypipe.publish import register_version

    if not ctx.tracker.run_id:
        from raypipe.errors import RegistryError

        raise RegistryError("registering needs an MLflow run; is register.enabled set?")
    raw_test = split_ds.filter(expr=col(SPLIT_COLUMN) == SPLIT_NAMES.index("test"))
    reg, decision, _ = register_version(
        cfg=ctx.cfg,
        work=ctx.work,
        booster=fit.model,
        prep=prep,
        contract=prof.contract,
        evaluated=ev,
        example=prof.example,
        raw_test_ds=raw_test,
        extra={"reference.json": ev.reference} if ev.reference else None,
        run_id=ctx.tracker.run_id,
        fingerprint=ctx.fingerprint,
        config_hash=ctx.config_hash,
    )
    ctx.tracker.log_text(json.dumps(decision.to_dict(), indent=2), "gate.json")
    return reg


def _serving(cfg: PipelineConfig, serve_model: bool | None) -> bool:
    return cfg.serve.enabled if serve_model is None else serve_model
