"""What each cacheable stage computes: plain functions of typed inputs.

The pipeline (raypipe.pipeline) decides whether to call them or reuse a cached
output; nothing here knows about the cache or MLflow.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raypipe import runtime
from raypipe.config import PipelineConfig
from raypipe.data import ingest, splitfiles
from raypipe.data.profile import SPLIT_NAMES, combine, compute_profile
from raypipe.data.schema import Contract, infer_contract
from raypipe.data.split import SPLIT_COLUMN
from raypipe.evaluate import evaluate
from raypipe.features import Preprocessor
from raypipe.stages import Evaluated, Prepared, Profiled, Trained


def profile_data(cfg: PipelineConfig, schema: pa.Schema, ds, split_ds, declared: Contract | None) -> Profiled:
    """Per-split column statistics, the inferred contract, split sizes and an example row."""
    profile = compute_profile(split_ds, SPLIT_COLUMN, cfg.features.categorical)
    stats = combine(profile)
    if not stats:
        from raypipe.errors import DataError

        raise DataError(f"the dataset under '{cfg.data.path}' is empty (0 rows); check data.path and data.filter")
    contract = infer_contract(schema, stats, profile.get("train", stats), cfg.data, cfg.features, declared)
    rows = {s: profile[s][cfg.data.label].count if s in profile else 0 for s in SPLIT_NAMES}
    example = json_row(ds.take_batch(3, batch_format="pyarrow"), contract)
    return Profiled(profile, contract, rows, example)


def preprocess(cfg: PipelineConfig, contract: Contract, train_stats, split_ds, files_root: Path | None) -> Prepared:
    """The fitted preprocessor and the model-input splits: files written under ``files_root`` when
    given (every node sees that disk), else materialised Ray Datasets."""
    prep = fit_preprocessor(cfg, contract, train_stats)
    if files_root is None:
        return Prepared(prep, materialize_splits(split_ds, prep))
    folder = splitfiles.staging_folder(files_root)
    try:
        parts = splitfiles.write_splits(split_ds, prep, SPLIT_COLUMN, SPLIT_NAMES, folder)
    except BaseException:
        splitfiles.remove(folder)
        raise
    return Prepared(prep, parts).staged_in(folder)


def materialize_splits(split_ds, prep: Preprocessor) -> dict[str, Any]:
    """``{"train", "valid", "test"}``: the model inputs of ``split_ds`` (raw rows with the split
    column), one materialised Dataset per split, every row in the object store once. For clusters
    whose nodes do not share a disk (elsewhere :func:`raypipe.data.splitfiles.write_splits`).

    Materialised now: during the fit Train workers hold most CPUs, and a lazy filter would need a
    CPU of its own to run (the classic 2-CPU hang). One pass per split, each reading the source,
    keeping its own rows and transforming only those: the object store never hands pages back to
    the OS (freed space is only reused), so its footprint is the most it ever held at once, and
    materialising every row before filtering it into the three splits held each row twice
    (measured: 2.0x the model inputs at 4M rows; one pass per split: 1.0x, for two more reads).
    """
    from ray.data.expressions import col

    return {
        name: split_ds.filter(expr=col(SPLIT_COLUMN) == i)
        .map_batches(prep.transform_block, batch_format="pyarrow")
        .materialize()
        for i, name in enumerate(SPLIT_NAMES)
    }


def train_model(
    cfg: PipelineConfig, prof: Profiled, prep: Preprocessor, parts, budget, storage: str, tracker
) -> Trained:
    """XGBoost on Ray Train, a scikit-learn model, or a Ray Tune search (trials nested under the run)."""
    from raypipe.train import fit_model

    contract = prof.contract
    pos_weight = _pos_weight(prof.profile, contract) if contract.label.task == "binary" else None
    fit = fit_model(
        parts,
        prep,
        contract,
        cfg,
        budget,
        storage,
        f"{cfg.name}-{dt.datetime.now():%Y%m%d-%H%M%S}",
        pos_weight=pos_weight,
        tracking_uri=tracker.tracking_uri if tracker.enabled else None,
        parent_run_id=tracker.run_id,
    )
    return Trained(fit)


def evaluate_model(booster, test_ds, contract: Contract, cfg: PipelineConfig) -> Evaluated:
    from raypipe.train import predict_matrix

    ys, ps = [], []
    for b in test_ds.iter_batches(batch_size=65_536, batch_format="numpy"):
        if len(b["y"]):
            ys.append(b["y"])
            ps.append(predict_matrix(booster, b["X"]))
    y = np.concatenate(ys)
    p = np.concatenate(ps)
    return Evaluated(evaluate(contract.label.task, y, p, cfg.evaluate.primary_metric), y, p)


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


def check_splits(rows: dict[str, int]) -> None:
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


def json_row(batch: pa.Table, contract: Contract) -> dict[str, Any]:
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


def reference_profile(split_ds, contract: Contract, ev: Evaluated) -> str:
    """The monitoring reference (raw train split + test scores) as JSON, to ship in the bundle."""
    import json

    from ray.data.expressions import col

    from raypipe.monitor.reference import build_reference

    train_raw = split_ds.filter(expr=col(SPLIT_COLUMN) == SPLIT_NAMES.index("train"))
    ref = build_reference(
        train_raw, contract, ev.scores, test_metrics=ev.report.metrics, primary_metric=ev.report.primary
    )
    return json.dumps(ref.to_dict(), indent=1)


def test_slices(split_ds, prep: Preprocessor, booster, columns: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Labels, scores and raw ``columns`` of the test rows, aligned (one pass over the raw test split)."""
    from ray.data.expressions import col

    from raypipe.train import predict_matrix

    test_raw = split_ds.filter(expr=col(SPLIT_COLUMN) == SPLIT_NAMES.index("test"))
    ys, ps, vals = [], [], {c: [] for c in columns}
    for batch in test_raw.iter_batches(batch_size=65_536, batch_format="pyarrow"):
        y = prep.encode_label(batch)
        keep = ~np.isnan(y)
        batch = batch.filter(pa.array(keep))
        if not batch.num_rows:
            continue
        ys.append(y[keep])
        ps.append(predict_matrix(booster, prep.transform_features(batch)))
        for c in columns:
            vals[c].append(np.asarray(batch.column(c).to_pylist(), dtype=object))
    return np.concatenate(ys), np.concatenate(ps), {c: np.concatenate(v) for c, v in vals.items()}


def run_report(
    cfg: PipelineConfig,
    *,
    prof: Profiled,
    fit: Trained,
    ev: Evaluated,
    qreport,
    split_ds,
    prep,
    gate: dict[str, Any],
    manifest: dict[str, Any],
):
    """Write the run report and model card to a temp folder; returns ``Reported``."""
    import tempfile
    from pathlib import Path

    from raypipe.report.run_report import write_run_report
    from raypipe.stages import Reported

    y, p, slices = ev.y_true, ev.scores, {}
    columns = [c for c in cfg.report.slice_columns if c in prof.contract.feature_names or c in split_ds.schema().names]
    if columns:
        y, p, slices = test_slices(split_ds, prep, fit.model, columns)
    out = Path(tempfile.mkdtemp(prefix="raypipe-report-"))
    # The report reads the model's name and version at the manifest's top level.
    manifest = {**manifest, "model_name": gate.get("model") or cfg.name, "model_version": gate.get("version") or "-"}
    findings = [f"[{f.action}] {f.rule} '{f.column}': {f.message}" for f in qreport.findings]
    write_run_report(
        out,
        task=prof.contract.label.task,
        y_true=y,
        scores=p,
        class_names=prof.contract.label.classes,
        feature_importance=_importance(fit.model, prep.feature_names),
        slices=slices,
        quality={"rows": qreport.rows, "findings": findings or ["none"], "report": "quality/quality.txt"},
        data_summary={"rows": prof.rows, "features": len(prof.contract.features), "task": prof.contract.label.task},
        manifest=manifest,
        gate=gate,
        card=cfg.report,
    )
    return Reported(out)


def _importance(model, names: list[str]) -> dict[str, float]:
    """Gain per feature (XGBoost), or the estimator's impurity importances (scikit-learn trees)."""
    if hasattr(model, "get_score"):
        return {k: float(v) for k, v in model.get_score(importance_type="gain").items()}
    values = getattr(model, "feature_importances_", None)
    if values is not None and len(values) == len(names):
        return dict(zip(names, map(float, values)))
    return {}
