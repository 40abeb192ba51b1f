"""Training: XGBoost on Ray Train, scikit-learn in a Ray task, Ray Tune search.

:func:`fit_model` is the one entry point the pipeline calls; it dispatches on
``train.model`` and ``tune.enabled``. :func:`raypipe.model.predict_matrix` scores any result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any

import numpy as np

from raypipe.train.common import FitResult

__all__ = ["FitResult", "fit_model", "preprocessing_for"]

log = logging.getLogger(__name__)


def preprocessing_for(cfg) -> dict[str, Any]:
    """Preprocessor options (``encoding``, ``scale``, ``impute``) that suit the model(s) to train.

    XGBoost and the tree models read native categorical codes and missing values; a linear
    model needs one-hot categoricals, standardised numbers and no NaN. Values set explicitly
    in ``features`` always win; defaults follow the models, including every model a search may pick.
    """
    f = cfg.features
    models = set(cfg.tune.models) if cfg.tune.enabled and cfg.tune.models else {cfg.train.model}
    linear = "logistic_regression" in models
    explicit = f.model_fields_set
    return {
        "encoding": f.encoding if "encoding" in explicit or not linear else "onehot",
        "scale": f.scale if "scale" in explicit or not linear else True,
        "impute": f.impute if "impute" in explicit or not linear else "mean",
    }


def fit_model(
    parts: dict[str, Any],
    prep,
    contract,
    cfg,
    budget,
    storage_path: str,
    run_name: str,
    *,
    pos_weight: float | None = None,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
) -> FitResult:
    """Train what the config asks for: a Ray Tune search, XGBoost on Ray Train, or a scikit-learn model.

    Args:
        parts: ``{"train", "valid", "test"}`` of ``X``/``y``(/``w``) rows: split files
            (:class:`~raypipe.data.splitfiles.SplitFiles`) or materialised Ray Datasets.
        prep: the fitted :class:`~raypipe.features.Preprocessor` (feature names and types).
        contract: the data contract (task and classes).
        cfg: the :class:`~raypipe.config.PipelineConfig`.
        budget: the :class:`~raypipe.runtime.CpuBudget` for training.
        storage_path: checkpoints and Tune experiments (``runtime.storage_path``).
        run_name: names the Ray Train run.
        pos_weight: negatives/positives in train (binary), for ``train.class_weight: balanced``.
        tracking_uri, parent_run_id: log each Tune trial as a nested MLflow run under this run.

    Raises:
        TrainingError: training failed; ConfigError: the model does not suit the task.
    """
    task = contract.label.task
    if cfg.tune.enabled:
        result = _tune(parts, prep, contract, cfg, budget, storage_path, pos_weight)
        if tracking_uri and parent_run_id:
            from raypipe.registry.tracking import log_trials

            log_trials(result.tune, tracking_uri, parent_run_id)
        return result
    if cfg.train.model == "xgboost":
        from raypipe.train import xgboost as xgb_train

        params = xgb_train.xgb_params(cfg.train, task, len(contract.label.classes or []), budget.nthread, pos_weight)
        return xgb_train.fit(
            parts["train"],
            parts["valid"],
            feature_names=prep.feature_names,
            feature_types=prep.feature_types,
            params=params,
            cfg=cfg.train,
            budget=budget,
            storage_path=storage_path,
            run_name=run_name,
        )
    from raypipe.train import sklearn as sk_train

    return sk_train.fit(parts["train"], task=task, prep=prep, cfg=cfg.train, budget=budget)


def _tune(parts, prep, contract, cfg, budget, storage_path: str, pos_weight: float | None) -> FitResult:
    from raypipe.train import tune as tune_mod
    from raypipe.train.common import collect
    from raypipe.train.sklearn import categorical_mask

    task = contract.label.task
    train, t_note = collect(parts["train"], cfg.train.max_rows_in_memory, cfg.train.seed, "train")
    valid, v_note = collect(parts["valid"], cfg.train.max_rows_in_memory, cfg.train.seed, "valid")
    metric, mode = tune_mod.metric_and_mode(cfg.tune, task)
    plan = tune_mod.TrialPlan(
        task=task,
        num_classes=len(contract.label.classes or []),
        metric=metric,
        mode=mode,
        train=cfg.train,
        report_every_rounds=cfg.tune.report_every_rounds,
        max_t_rounds=cfg.tune.max_t_rounds or cfg.train.num_boost_round,
        nthread=max(1, math.ceil(tune_mod.plan_concurrency(cfg.tune, budget)[0] - 1e-9)),
        pos_weight=pos_weight,
        categorical_mask=categorical_mask(prep),
    )
    data = {"train": train, "valid": valid}
    name = f"tune-{cfg.name}-{_search_key(cfg, train, valid)}"
    summary = tune_mod.search(plan, cfg.tune, data, budget=budget, storage_path=storage_path, experiment_name=name)
    result = tune_mod.refit(plan, summary, data, cfg.tune, budget.num_workers * budget.cpus_per_worker)
    result.sampling = "; ".join(n for n in (t_note, v_note) if n) or None
    result.metrics.update(
        {
            "tune_trials": float(summary["num_trials"]),
            "tune_best_valid": float(summary["best_score"]),
            "tune_wall_s": summary["wall_s"],
            "train_rows_used": float(train.rows),
        }
    )
    return result


def _search_key(cfg, train, valid) -> str:
    """Same config sections and same data -> same experiment folder, so a rerun resumes it."""
    h = hashlib.sha256()
    sections = {k: cfg.model_dump(mode="json")[k] for k in ("data", "features", "train", "tune")}
    h.update(json.dumps(sections, sort_keys=True).encode())
    # Order-insensitive (Ray Data does not promise block order): shapes and column sums.
    for a in (train.X, train.y, valid.X, valid.y):
        sums = np.nansum(a.reshape(len(a), -1), axis=0, dtype=np.float64) if len(a) else []
        h.update(f"{a.shape} {' '.join(f'{v:.9g}' for v in sums)}".encode())
    return h.hexdigest()[:12]
