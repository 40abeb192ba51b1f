"""scikit-learn models trained in one Ray task on data that fits one worker.

The task reads the materialised train split itself (the driver never holds it),
samples it above ``train.max_rows_in_memory`` and fits. Estimators that
parallelise with joblib (random forest) run on Ray's joblib backend on
multi-node clusters, spreading trees over every node's CPUs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from raypipe.config import TrainConfig
from raypipe.errors import ConfigError, TrainingError
from raypipe.runtime import CpuBudget
from raypipe.train.common import FitResult, collect

log = logging.getLogger(__name__)

# HistGradientBoosting bins a categorical code per bin: codes must stay below max_bins (255).
_HGB_MAX_CATEGORIES = 254


def build_estimator(
    model: str,
    task: str,
    params: dict[str, Any],
    *,
    seed: int,
    n_jobs: int,
    class_weight: str = "none",
    categorical_mask: list[bool] | None = None,
):
    """The unfitted estimator for ``train.model``, with ``params`` over raypipe's defaults.

    Raises:
        ConfigError: the model does not fit the task, or a param is not the estimator's.
    """
    from sklearn import ensemble, linear_model
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    classify = task in ("binary", "multiclass")
    balanced = "balanced" if classify and class_weight == "balanced" else None
    params = dict(params)
    if model == "hist_gradient_boosting":
        cls = ensemble.HistGradientBoostingClassifier if classify else ensemble.HistGradientBoostingRegressor
        kw: dict[str, Any] = {"random_state": seed, "categorical_features": categorical_mask or None}
        if balanced:
            kw["class_weight"] = balanced
    elif model == "random_forest":
        cls = ensemble.RandomForestClassifier if classify else ensemble.RandomForestRegressor
        kw = {"random_state": seed, "n_jobs": n_jobs, "n_estimators": 200, "min_samples_leaf": 2}
        if balanced:
            kw["class_weight"] = balanced
    elif model == "logistic_regression":
        if not classify:
            raise ConfigError(
                f"train.model 'logistic_regression' is a classifier but the task is {task}; "
                "use hist_gradient_boosting, random_forest or xgboost for regression"
            )
        cls = linear_model.LogisticRegression
        kw = {"max_iter": 1000, "random_state": seed}
        if balanced:
            kw["class_weight"] = balanced
    else:
        raise ConfigError(f"train.model '{model}' is not a scikit-learn model")
    kw.update(params)
    try:
        est = cls(**kw)
        est._validate_params()
    except (TypeError, ValueError) as e:
        raise ConfigError(f"train.params {params} do not suit {cls.__name__}: {e}") from None
    if model == "logistic_regression":
        # Linear models cannot take NaN: impute whatever the preprocessor left missing.
        return make_pipeline(SimpleImputer(strategy="mean", keep_empty_features=True), est)
    return est


def categorical_mask(prep) -> list[bool] | None:
    """Native categorical codes HistGradientBoosting can split on as categories."""
    if prep.encoding != "native":
        return None
    sizes: list[int | None] = []
    for c in prep.columns:
        if c.kind == "timestamp":
            sizes.extend([None] * 5)
        else:
            sizes.append(len(c.categories or []) if c.kind == "categorical" else None)
    sizes += [None] * len(prep.derived)
    mask = [t == "c" and n is not None and n <= _HGB_MAX_CATEGORIES for t, n in zip(prep.feature_types, sizes)]
    return mask if any(mask) else None


def _use_ray_joblib(cfg: TrainConfig, budget: CpuBudget) -> bool:
    return cfg.joblib_backend == "ray" or (cfg.joblib_backend == "auto" and budget.num_nodes > 1)


def _fit_in_task(train_ds, spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a Ray task: collect (sampled) train rows, fit, return the estimator."""
    import joblib
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    arrays, note = collect(train_ds, spec["max_rows"], spec["seed"])
    if not arrays.rows:
        raise TrainingError("the train split is empty; nothing to fit")
    y = arrays.y.astype(int) if spec["task"] != "regression" else arrays.y
    load_s = time.perf_counter() - t0
    est = spec["estimator"]
    fit_kw = {}
    if arrays.w is not None:
        step = est.steps[-1][0] + "__" if hasattr(est, "steps") else ""
        fit_kw[step + "sample_weight"] = arrays.w
    t1 = time.perf_counter()
    with threadpool_limits(spec["nthread"]):
        if spec["ray_joblib"]:
            from ray.util.joblib import register_ray

            register_ray()
            backend = joblib.parallel_backend(
                "ray", n_jobs=spec["n_jobs"], ray_remote_args={"num_cpus": spec["cpus_per_job"]}
            )
        else:
            backend = joblib.parallel_backend("threading", n_jobs=spec["n_jobs"])
        with backend:
            est.fit(arrays.X, y, **fit_kw)
    return {
        "estimator": est,
        "sampling": note,
        "rows": arrays.rows,
        "load_s": load_s,
        "fit_s": time.perf_counter() - t1,
    }


def fit(
    train_ds,
    *,
    task: str,
    prep,
    cfg: TrainConfig,
    budget: CpuBudget,
    params: dict[str, Any] | None = None,
    model: str | None = None,
) -> FitResult:
    """Fit ``train.model`` (a scikit-learn model) in one Ray task.

    Raises:
        ConfigError: the model or its params do not suit the task.
        TrainingError: the fit failed in its task.
    """
    import ray

    model = model or cfg.model
    params = dict(cfg.params if params is None else params)
    train_cpus = budget.num_workers * budget.cpus_per_worker
    ray_joblib = _use_ray_joblib(cfg, budget)
    # joblib runs n_jobs=1 in-process whatever the backend: give Ray's pool at least two actors.
    n_jobs = max(2, int(train_cpus)) if ray_joblib else budget.nthread * budget.num_workers
    est = build_estimator(
        model,
        task,
        params,
        seed=cfg.seed,
        n_jobs=n_jobs,
        class_weight=cfg.class_weight,
        categorical_mask=categorical_mask(prep) if model == "hist_gradient_boosting" else None,
    )
    spec = {
        "estimator": est,
        "task": task,
        "max_rows": cfg.max_rows_in_memory,
        "seed": cfg.seed,
        "nthread": max(1, int(np.ceil(train_cpus - 1e-9))),
        "n_jobs": n_jobs,
        "ray_joblib": ray_joblib,
        "cpus_per_job": train_cpus / n_jobs,
    }
    # With Ray's joblib backend the pool's actors hold the training CPUs; the task only drives them.
    task_cpus = 0 if ray_joblib else train_cpus
    t0 = time.perf_counter()
    try:
        out = ray.get(
            ray.remote(_fit_in_task).options(num_cpus=task_cpus, max_retries=cfg.max_failures).remote(train_ds, spec)
        )
    except (ConfigError, TrainingError):
        raise
    except Exception as e:  # Ray wraps the task's error
        cause = getattr(e, "cause", None) or e
        if isinstance(cause, TrainingError):
            raise cause from None
        raise TrainingError(
            f"training {model} failed: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        ) from e
    est = out["estimator"]
    # Boosting iterations (HGB), trees (forest) or solver iterations (logistic).
    n_iter = getattr(_final(est), "n_iter_", getattr(_final(est), "n_estimators", 1))
    rounds = max(1, int(np.max(n_iter)))
    metrics = {"train_rows_used": float(out["rows"]), "load_s": out["load_s"], "fit_s": out["fit_s"]}
    return FitResult(
        model=est,
        kind=model,
        params={k: v for k, v in _final(est).get_params().items() if _loggable(v)},
        best_iteration=rounds - 1,
        rounds=rounds,
        wall_s=time.perf_counter() - t0,
        sampling=out["sampling"],
        metrics=metrics,
    )


def _final(est):
    return est.steps[-1][1] if hasattr(est, "steps") else est


def _loggable(v: Any) -> bool:
    return v is None or isinstance(v, (int, float, str, bool))
