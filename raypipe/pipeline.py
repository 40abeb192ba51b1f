"""The pipeline: stages in order, each timed, from Parquet to a served model.

    ingest -> profile (split, contract) -> preprocess -> train -> evaluate -> register -> serve

Stages are plain functions of typed inputs; Ray, MLflow and Serve are touched
only here and in their own modules.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raypipe import runtime
from raypipe.config import PipelineConfig, config_hash
from raypipe.data import ingest, quality
from raypipe.data.profile import SPLIT_NAMES, combine, compute_profile
from raypipe.data.schema import Contract, infer_contract
from raypipe.data.split import SPLIT_COLUMN, add_split_column
from raypipe.evaluate import EvalReport, evaluate
from raypipe.features import Preprocessor

log = logging.getLogger(__name__)

Reporter = Callable[[str, float, str], None]
"""Called after each stage with (stage, seconds, one-line detail)."""


@dataclass
class RunSummary:
    name: str
    config_hash: str
    data_fingerprint: str
    task: str
    rows: dict[str, int]
    metrics: dict[str, float]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    champion: bool | None = None
    gate_reason: str | None = None
    endpoint: str | None = None
    example: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    tune: dict[str, Any] | None = None
    """The Ray Tune search (best model, params and score, trial count) when ``tune.enabled``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Timer:
    def __init__(self, report: Reporter | None) -> None:
        self.seconds: dict[str, float] = {}
        self._report = report

    @contextmanager
    def stage(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        t0 = time.perf_counter()
        yield detail
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        if self._report:
            self._report(name, self.seconds[name], " ".join(detail))


def run_pipeline(
    cfg: PipelineConfig,
    *,
    config_text: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    serve_model: bool | None = None,
    report: Reporter | None = None,
    verbose: bool = False,
) -> RunSummary:
    """Run every stage and return the summary.

    Args:
        cfg: the validated config.
        config_text: the YAML as written, logged to MLflow verbatim.
        address: Ray cluster address; default ``RAY_ADDRESS`` or a local Ray.
        tracking_uri: MLflow store; default ``MLFLOW_TRACKING_URI`` or SQLite in the work dir.
        serve_model: deploy to Serve; default ``cfg.serve.enabled``.
        report: progress callback.
        verbose: forward Ray worker logs to this process.

    Raises:
        RaypipeError: any stage's failure, as its subclass.
    """
    import os

    timer = _Timer(report)
    work = runtime.work_dir(cfg)
    tracking_uri = tracking_uri or cfg.runtime.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    tracking_uri = tracking_uri or _default_tracking(work)
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

    with timer.stage("ray") as d:
        session = runtime.connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=verbose)
        d.append(f"{session.total_cpus:g} CPUs, {session.num_nodes} node(s)")
        storage = runtime.storage_path(cfg, work)
        runtime.check_shared_storage(
            session,
            {
                "data.path": path,
                "MLflow tracking store": tracking_uri if cfg.register.enabled else None,
                "checkpoints (runtime.storage_path)": storage,
            },
            cfg.runtime.shared_storage,
        )

    with timer.stage("ingest") as d:
        if cfg.data.validate_files:
            ingest.validate_files(source)
        fp = ingest.fingerprint(source, cfg.data.columns)
        ds = ingest.read(source, cfg.data.columns)
        d.append(f"{len(source.files)} files, fingerprint {fp}")

    with timer.stage("profile") as d:
        key = cfg.data.split.key or ([cfg.data.id_column] if cfg.data.id_column else list(names))
        split_ds = ds.map_batches(
            add_split_column,
            batch_format="pyarrow",
            fn_kwargs={"key": key, "cfg": cfg.data.split},
            zero_copy_batch=True,
        )
        profile = compute_profile(split_ds, SPLIT_COLUMN, cfg.features.categorical)
        stats = combine(profile)
        if not stats:
            from raypipe.errors import DataError

            raise DataError(f"the dataset under '{cfg.data.path}' is empty (0 rows); check data.path and data.filter")
        schema = pa.schema([source.schema.field(n) for n in names])
        declared = Contract.load(cfg.data.schema_file) if cfg.data.schema_file else None
        contract = infer_contract(schema, stats, profile.get("train", stats), cfg.data, cfg.features, declared)
        rows = {s: profile[s][cfg.data.label].count if s in profile else 0 for s in SPLIT_NAMES}
        _check_splits(rows)
        d.append(f"task={contract.label.task} rows={rows} features={len(contract.features)}")

    with timer.stage("quality") as d:
        dups = quality.count_duplicate_ids(ds, cfg.data.id_column) if cfg.data.id_column else None
        qreport = quality.check(stats, contract, declared, cfg.data.quality, dups)
        qreport.save(work / "runs" / cfg.name)
        quality.enforce(qreport, source, declared)
        for f in qreport.findings:
            log.info("data quality [%s] %s '%s': %s", f.action, f.rule, f.column, f.message)
        d.append(f"{len(qreport.findings)} finding(s)")
        d.extend(f"[{f.action}] {f.rule}:{f.column}" for f in qreport.findings[:5])

    with timer.stage("preprocess") as d:
        prep = fit_preprocessor(cfg, contract, profile.get("train", stats))
        prepared = split_ds.map_batches(
            prep.transform_block, batch_format="pyarrow", fn_kwargs={"passthrough": (SPLIT_COLUMN,)}
        ).materialize()
        from ray.data.expressions import col

        # Materialise each split now: during the fit Train workers hold most CPUs, and
        # a lazy filter would need a CPU of its own to run (the classic 2-CPU hang).
        parts = {name: prepared.filter(expr=col(SPLIT_COLUMN) == i).materialize() for i, name in enumerate(SPLIT_NAMES)}
        del prepared
        example_rows = ds.take_batch(3, batch_format="pyarrow")
        d.append(f"{len(prep.feature_names)} model inputs")

    from raypipe.train import fit_model

    with timer.stage("train") as d:
        serve_cpus = cfg.serve.num_replicas * cfg.serve.cpus_per_replica if _serving(cfg, serve_model) else 0.0
        budget = runtime.CpuBudget.plan(session, cfg.train, cfg.runtime.data_cpus, serve_cpus)
        pos_weight = _pos_weight(profile, contract) if contract.label.task == "binary" else None
        run_name = f"{cfg.name}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        fit = fit_model(parts, prep, contract, cfg, budget, storage, run_name, pos_weight=pos_weight)
        d.append(
            f"{fit.kind}: {budget.num_workers} worker(s) x {budget.cpus_per_worker:g} CPU, nthread={budget.nthread}, "
            f"best round {fit.best_iteration + 1}/{fit.rounds}"
        )
        if fit.tune:
            d.append(f"tune: {fit.tune['num_trials']} trials, best {fit.tune['metric']}={fit.tune['best_score']:.4f}")

    with timer.stage("evaluate") as d:
        report_ = _evaluate(fit.booster, parts["test"], contract, cfg.evaluate.primary_metric)
        d.append(" ".join(f"test_{k}={v:.4f}" for k, v in report_.metrics.items()))

    summary = RunSummary(
        name=cfg.name,
        config_hash=config_hash(cfg),
        data_fingerprint=fp,
        task=contract.label.task,
        rows=rows,
        metrics=report_.prefixed(),
        tracking_uri=tracking_uri,
    )
    summary.example = _json_row(example_rows, contract)
    summary.notes = list(contract.notes) + [
        f"data quality [{f.action}] {f.rule} '{f.column}': {f.message}" for f in qreport.findings
    ]
    if fit.sampling:
        summary.notes.append(fit.sampling)
    if fit.tune:
        summary.tune = {k: v for k, v in fit.tune.items() if k != "trials"}

    if cfg.register.enabled:
        with timer.stage("register") as d:
            _register(cfg, summary, fit, prep, contract, report_, work, tracking_uri, config_text, budget, path)
            d.append(f"{summary.model_name} v{summary.model_version} ({summary.gate_reason})")

    if _serving(cfg, serve_model) and cfg.register.enabled:
        from raypipe.serve.deploy import deploy, post_json

        with timer.stage("serve") as d:
            uri = f"models:/{summary.model_name}@{cfg.register.alias}"
            summary.endpoint = deploy(uri, tracking_uri, cfg.serve)
            status, body = post_json(summary.endpoint + "/predict", summary.example)
            if status != 200:
                from raypipe.errors import ServingError

                raise ServingError(f"smoke request to {summary.endpoint}/predict returned {status}: {body}")
            summary.prediction = body
            d.append(f"{summary.endpoint}/predict -> {body.get('prediction')}")
    summary.stage_seconds = timer.seconds
    return summary


def fit_preprocessor(cfg: PipelineConfig, contract: Contract, train_stats) -> Preprocessor:
    """The preprocessor the ``features`` section asks for, fitted on train-split statistics."""
    from raypipe.train import preprocessing_for

    # Encoding, scaling and imputation default to what the model needs (one-hot + scaled for linear).
    return Preprocessor.fit(contract, train_stats, derived=cfg.features.derived, **preprocessing_for(cfg))


def infer_schema(cfg: PipelineConfig, address: str | None = None) -> Contract:
    """Profile the data (all rows) and return the inferred contract: ``raypipe schema infer``."""
    work = runtime.work_dir(cfg)
    source = ingest.discover(ingest.resolve_path(cfg.data.path, work / "datasets"), cfg.data.filter)
    runtime.connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=False)
    ds = ingest.read(source, cfg.data.columns)
    stats = combine(compute_profile(ds, None, cfg.features.categorical))
    if not stats:
        from raypipe.errors import DataError

        raise DataError(f"the dataset under '{cfg.data.path}' is empty (0 rows)")
    names = cfg.data.columns or source.schema.names
    schema = pa.schema([source.schema.field(n) for n in names])
    return infer_contract(schema, stats, stats, cfg.data, cfg.features)


def _default_tracking(work: Path) -> str:
    from raypipe.registry import default_tracking_uri

    return default_tracking_uri(work)


def _serving(cfg: PipelineConfig, serve_model: bool | None) -> bool:
    return cfg.serve.enabled if serve_model is None else serve_model


def _check_splits(rows: dict[str, int]) -> None:
    from raypipe.errors import DataError

    if rows["train"] == 0 or rows["test"] == 0:
        raise DataError(f"too few labelled rows to split ({rows}); add data or change data.split")


def _pos_weight(profile, contract: Contract) -> float | None:
    levels = profile.get("train", {}).get(contract.label.name)
    classes = contract.label.classes or []
    if not levels or len(classes) != 2:
        return None
    neg, pos = levels.levels.get(classes[0], 0), levels.levels.get(classes[1], 0)
    return neg / pos if pos else None


def _evaluate(booster, test_ds, contract: Contract, primary: str | None) -> EvalReport:
    from raypipe.train import predict_matrix

    ys, ps = [], []
    for b in test_ds.iter_batches(batch_size=65_536, batch_format="numpy"):
        if len(b["y"]):
            ys.append(b["y"])
            ps.append(predict_matrix(booster, b["X"]))
    y = np.concatenate(ys)
    p = np.concatenate(ps)
    return evaluate(contract.label.task, y, p, primary)


def _json_row(batch: pa.Table, contract: Contract) -> dict[str, Any]:
    """The first row's features, JSON-ready (for the smoke request and the curl example)."""
    row = batch.select(contract.feature_names).slice(0, 1).to_pylist()[0]
    out = {}
    for k, v in row.items():
        if isinstance(v, float):
            v = float(f"{v:.6g}") if math.isfinite(v) else None  # float32 noise out of the example
        elif isinstance(v, (dt.datetime, dt.date)):
            v = v.isoformat()
        out[k] = v
    return out


def _register(cfg, summary, fit, prep, contract, report_, work, tracking_uri, config_text, budget, data_uri) -> None:
    import platform

    import mlflow

    from raypipe import registry
    from raypipe.bundle import write_bundle

    summary.experiment_id = registry.setup_tracking(tracking_uri, cfg.register.experiment, work / "mlartifacts")
    model_name = cfg.register.model_name or cfg.name
    with mlflow.start_run(experiment_id=summary.experiment_id, run_name=cfg.name) as run:
        summary.run_id = run.info.run_id
        mlflow.log_params(_flatten(cfg.model_dump(mode="json")))
        mlflow.log_params({f"{fit.kind}." + k: v for k, v in fit.params.items() if k not in ("eval_metric",)})
        mlflow.log_metrics(fit.metrics)
        if fit.sampling:
            mlflow.set_tag("raypipe.sampling", fit.sampling)
        if fit.tune:
            from raypipe.train.tune import log_trials

            log_trials(fit.tune, tracking_uri, run.info.run_id)
        mlflow.log_metrics(summary.metrics)
        mlflow.log_metrics({f"rows_{k}": v for k, v in summary.rows.items()})
        mlflow.log_metrics({"best_iteration": fit.best_iteration, "train_wall_s": fit.wall_s})
        mlflow.set_tags(
            {
                "raypipe.config_hash": summary.config_hash,
                "raypipe.data_fingerprint": summary.data_fingerprint,
                "raypipe.task": summary.task,
                "raypipe.cpu_budget": json.dumps(asdict(budget)),
                "raypipe.python": platform.python_version(),
            }
        )
        mlflow.log_text(config_text or json.dumps(cfg.model_dump(mode="json"), indent=2), "config.yaml")
        quality_dir = work / "runs" / cfg.name
        for name in ("quality.json", "quality.txt"):
            if (quality_dir / name).exists():
                mlflow.log_artifact(str(quality_dir / name), "quality")
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        mlflow.log_input(
            MetaDataset(resolve_dataset_source(data_uri), name=cfg.name, digest=summary.data_fingerprint),
            context="training",
            tags={f"rows_{k}": str(v) for k, v in summary.rows.items()},
        )
        with tempfile.TemporaryDirectory() as tmp:
            bundle_dir = Path(tmp) / "bundle"
            hashes = write_bundle(bundle_dir, fit.booster, prep, contract)
            mlflow.log_dict(contract.to_dict(), "contract.json")
            import pandas as pd

            example = pd.DataFrame([summary.example])
            summary.model_name, summary.model_version = registry.log_bundle(
                bundle_dir, model_name=model_name, input_example=example, hashes=hashes
            )
        summary.champion, summary.gate_reason = registry.apply_gate(
            model_name,
            summary.model_version,
            alias=cfg.register.alias,
            metric=report_.primary,
            score=report_.score,
            higher_is_better=report_.higher_is_better,
            max_regression=cfg.register.max_regression,
        )
        mlflow.set_tag("raypipe.gate", summary.gate_reason)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else v
    return out
