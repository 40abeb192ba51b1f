"""Ray Tune search: seeded, ASHA-pruned, resumable, concurrency from the CPU budget.

Search data is small by design (it fits one worker), so each trial calls
``xgboost.train`` (or fits a scikit-learn estimator) directly on NumPy arrays
shared through the object store: a nested Ray Train worker group would cost
seconds per trial. The experiment lives under ``runtime.storage_path``; running
the same search again restores it (``Tuner.restore``): finished trials are kept,
unfinished ones start over.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.config import ParamSpec, TrainConfig, TuneConfig
from raypipe.errors import TrainingError
from raypipe.evaluate import HIGHER_IS_BETTER, PRIMARY, evaluate
from raypipe.model import predict_matrix
from raypipe.runtime import CpuBudget
from raypipe.train.common import Arrays, FitResult

log = logging.getLogger(__name__)

ATTEMPTS_FILE = "raypipe_attempts.txt"
"""One line per execution of a trial, in its trial folder (a restored trial that reran has two)."""


@dataclass(frozen=True)
class TrialPlan:
    """What every trial needs besides its sampled config (small; sent with each trial)."""

    task: str
    num_classes: int
    metric: str
    mode: str
    train: TrainConfig
    report_every_rounds: int
    max_t_rounds: int
    nthread: int
    pos_weight: float | None
    categorical_mask: list[bool] | None


def metric_and_mode(tune: TuneConfig, task: str) -> tuple[str, str]:
    """The valid-split metric (``valid_auc``...) and ``max``/``min`` to optimise."""
    metric = tune.metric or f"valid_{PRIMARY[task]}"
    if not metric.startswith("valid_"):
        metric = "valid_" + metric
    mode = tune.mode if tune.mode != "auto" else ("max" if HIGHER_IS_BETTER.get(metric[6:], False) else "min")
    return metric, mode


def _dimension(spec: ParamSpec):
    from ray import tune

    if spec.choice is not None:
        return tune.choice(spec.choice)
    if spec.randint is not None:
        return tune.randint(*spec.randint)
    if spec.loguniform is not None:
        return tune.loguniform(*spec.loguniform)
    return tune.uniform(*spec.uniform)


def param_space(train: TrainConfig, tune_cfg: TuneConfig) -> dict[str, Any]:
    """``{"model": ..., "params": {model: {param: domain}}}``: one sub-space per model type."""
    from ray import tune

    if tune_cfg.models:
        spaces = {m: {k: _dimension(s) for k, s in space.items()} for m, space in tune_cfg.models.items()}
        return {"model": tune.choice(list(spaces)), "params": spaces}
    return {"model": train.model, "params": {train.model: {k: _dimension(s) for k, s in tune_cfg.search_space.items()}}}


def trial_params(plan: TrialPlan, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The model and its params for a sampled config: ``train.params`` (same model only) + the sample."""
    model = config["model"]
    base = dict(plan.train.params) if model == plan.train.model else {}
    base.update(config["params"].get(model, {}))
    return model, base


def _record_attempt(experiment_path: str) -> None:
    """Append a line to the trial's ``ATTEMPTS_FILE`` in its folder under the experiment path.

    Not in ``get_trial_dir()``: Ray gives a fresh actor's first trial its driver staging folder and a reused
    actor's next ones their working dir, both per Ray session (function_trainable.py ``setup`` vs
    ``reset_config``), so a rerun after a restore would land in another session's folder.
    """
    import pyarrow.fs
    from ray import tune

    fs, root = pyarrow.fs.FileSystem.from_uri(experiment_path)
    trial_dir = f"{root}/{Path(tune.get_context().get_trial_dir()).name}"
    fs.create_dir(trial_dir)
    path = f"{trial_dir}/{ATTEMPTS_FILE}"
    try:  # read + rewrite, not append: object stores have no append (one trial writes it at a time)
        with fs.open_input_stream(path) as f:
            old = f.read()
    except FileNotFoundError:
        old = b""
    with fs.open_output_stream(path) as f:
        f.write(old + f"{os.getpid()} {time.time():.3f}\n".encode())


def _xgb_metric_name(metric: str, task: str) -> str:
    name = metric.removeprefix("valid_")
    return {"logloss": "mlogloss" if task == "multiclass" else "logloss", "accuracy": ""}.get(name, name)


def train_model(
    plan: TrialPlan,
    model: str,
    params: dict[str, Any],
    train: Arrays,
    valid: Arrays | None,
    *,
    num_boost_round: int | None = None,
    report=None,
) -> tuple[Any, dict[str, Any]]:
    """Fit one model on in-memory arrays (a trial, or the winner's refit).

    Returns:
        The model and ``{"best_iteration", "rounds", <metric>}`` (metric on ``valid`` if given).
    """
    if model == "xgboost":
        return _train_xgb(plan, params, train, valid, num_boost_round, report)
    from raypipe.train.sklearn import build_estimator

    est = build_estimator(
        model,
        plan.task,
        params,
        seed=plan.train.seed,
        n_jobs=plan.nthread,
        class_weight=plan.train.class_weight,
        categorical_mask=plan.categorical_mask if model == "hist_gradient_boosting" else None,
    )
    # Arrays from the object store are read-only; scikit-learn's forest needs writable input.
    X = np.require(train.X, requirements="W")
    y = train.y.astype(int) if plan.task != "regression" else np.require(train.y, requirements="W")
    kw = {}
    if train.w is not None:
        kw[(est.steps[-1][0] + "__" if hasattr(est, "steps") else "") + "sample_weight"] = train.w
    from threadpoolctl import threadpool_limits

    with threadpool_limits(plan.nthread):
        est.fit(X, y, **kw)
    out: dict[str, Any] = {"best_iteration": 0, "rounds": plan.max_t_rounds}
    if valid is not None and valid.rows:
        scores = predict_matrix(est, np.require(valid.X, requirements="W"))
        out[plan.metric] = evaluate(plan.task, valid.y, scores).metrics[plan.metric[6:]]
    return est, out


def _train_xgb(plan, params, train, valid, num_boost_round, report):
    from raypipe.train.xgboost import openmp_threads

    with openmp_threads(plan.nthread):
        return _train_xgb_threads(plan, params, train, valid, num_boost_round, report)


def _train_xgb_threads(plan, params, train, valid, num_boost_round, report):
    import xgboost

    from raypipe.train.xgboost import xgb_params

    cfg = plan.train.model_copy(update={"params": params})
    p = xgb_params(cfg, plan.task, plan.num_classes, plan.nthread, plan.pos_weight)
    xname = _xgb_metric_name(plan.metric, plan.task)
    metrics = list(p.get("eval_metric") or [])
    if xname and xname not in metrics:
        metrics.append(xname)
    p["eval_metric"] = metrics
    dtrain = xgboost.QuantileDMatrix(
        train.X, train.y, weight=train.w, max_bin=p.get("max_bin", 256), nthread=p["nthread"]
    )
    evals = []  # valid only: a train-split metric every round costs time and nothing reads it
    if valid is not None and valid.rows:
        evals.append(
            (xgboost.QuantileDMatrix(valid.X, valid.y, weight=valid.w, ref=dtrain, nthread=p["nthread"]), "valid")
        )
    rounds = num_boost_round or plan.train.num_boost_round
    every = plan.report_every_rounds

    class Report(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            values = evals_log.get("valid", {}).get(xname)
            if report and values and (epoch + 1) % every == 0 and epoch + 1 < rounds:
                report({plan.metric: float(values[-1]), "rounds": epoch + 1})
            return False

    callbacks: list[Any] = [Report()]
    early = plan.train.early_stopping_rounds if evals else None
    if early:
        callbacks.append(
            xgboost.callback.EarlyStopping(rounds=early, save_best=False, data_name="valid", metric_name=xname)
        )
    history: dict[str, Any] = {}
    bst = xgboost.train(p, dtrain, rounds, evals=evals, evals_result=history, callbacks=callbacks, verbose_eval=False)
    best = int(bst.best_iteration) if early else bst.num_boosted_rounds() - 1
    out: dict[str, Any] = {"best_iteration": best, "rounds": bst.num_boosted_rounds()}
    values = history.get("valid", {}).get(xname)
    if values:
        out[plan.metric] = float(values[min(best, len(values) - 1)])
    return (bst[: best + 1] if best + 1 < bst.num_boosted_rounds() else bst), out


def _trial(config: dict[str, Any], plan: TrialPlan, data: dict[str, Arrays], experiment_path: str) -> None:
    """One Tune trial: reports the valid metric every ``report_every_rounds`` rounds, then the final one."""
    from ray import tune

    _record_attempt(experiment_path)
    t0 = time.perf_counter()
    model, params = trial_params(plan, config)
    _, out = train_model(plan, model, params, data["train"], data["valid"], report=tune.report)
    tune.report({**out, "model": model, "trial_s": time.perf_counter() - t0})


def plan_concurrency(tune_cfg: TuneConfig, budget: CpuBudget) -> tuple[float, int]:
    """CPUs per trial and how many trials run at once, within the training share of the budget."""
    train_cpus = budget.num_workers * budget.cpus_per_worker
    per = float(tune_cfg.cpus_per_trial) if tune_cfg.cpus_per_trial != "auto" else min(1.0, train_cpus)
    fits = max(1, math.floor(train_cpus / per + 1e-9))
    conc = fits if tune_cfg.max_concurrent == "auto" else min(int(tune_cfg.max_concurrent), fits)
    return per, conc


def search(
    plan: TrialPlan,
    tune_cfg: TuneConfig,
    data: dict[str, Arrays],
    *,
    budget: CpuBudget,
    storage_path: str,
    experiment_name: str,
) -> dict[str, Any]:
    """Run (or resume) the search and return its summary: best config, score and every trial.

    Raises:
        TrainingError: every trial failed.
    """
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from raypipe.train._tune_state import PersistFinishedTrials

    # Tune's newer console output ignores verbose=0 and prints a status table per trial; raypipe
    # reports the search itself (its stage line and the MLflow trial runs).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune's own Ctrl-C handler ends the search early and returns the partial grid as if it had
    # finished; without it Ctrl-C raises KeyboardInterrupt, the CLI's path (resume line, exit 130).
    # The experiment state saved after every step (below) is what a rerun resumes from.
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")

    per, conc = plan_concurrency(tune_cfg, budget)
    if "://" not in storage_path:
        storage_path = os.path.abspath(storage_path)  # trials resolve it in their own working dir
    path = f"{storage_path.rstrip('/')}/{experiment_name}"
    trainable = tune.with_parameters(_trial, plan=plan, data=data, experiment_path=path)
    trainable = tune.with_resources(trainable, {"cpu": per})
    t0 = time.perf_counter()
    # Save the experiment state to the driver's staging folder after every controller step (read by
    # TuneController.__init__ in fit(), so set before it), not every >= 10 s; PersistFinishedTrials
    # then makes the save that marks a trial finished durable before the next trial starts.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    resumed = tune.Tuner.can_restore(path)
    if resumed:
        log.warning("resuming the interrupted search in %s (finished trials are kept)", path)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        scheduler = (
            ASHAScheduler(
                time_attr="rounds",
                max_t=plan.max_t_rounds,
                grace_period=min(tune_cfg.grace_period_rounds, plan.max_t_rounds),
                reduction_factor=tune_cfg.reduction_factor,
            )
            if tune_cfg.scheduler == "asha"
            else FIFOScheduler()
        )
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(plan.train, tune_cfg),
            tune_config=tune.TuneConfig(
                metric=plan.metric,
                mode=plan.mode,
                num_samples=tune_cfg.num_samples,
                scheduler=scheduler,
                # The generator enforces the limit itself (Tune ignores max_concurrent_trials for it).
                search_alg=BasicVariantGenerator(random_state=tune_cfg.seed, max_concurrent=conc),
                time_budget_s=tune_cfg.time_budget_s,
                # The default name lists every sampled value, those of models the trial did not pick too.
                trial_dirname_creator=_trial_dirname,
                # One process serves trial after trial: no interpreter start or imports per trial.
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=experiment_name, storage_path=storage_path, verbose=0, callbacks=[PersistFinishedTrials()]
            ),
        )
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    unfinished = len(grid) - grid.num_terminated - grid.num_errors
    if unfinished:  # Ctrl-C / SIGINT: Tune saved the experiment and returned early
        raise TrainingError(
            f"the search was interrupted with {unfinished} of {len(grid)} trials unfinished; its state is in "
            f"{path}: run the same config again to resume it (finished trials are kept)"
        )
    trials = []
    for r in grid:
        m = r.metrics or {}
        trials.append(
            {
                "trial_id": m.get("trial_id") or Path(r.path).name,
                "model": (r.config or {}).get("model"),
                "params": trial_params(plan, r.config)[1] if r.config else {},
                plan.metric: m.get(plan.metric),
                "rounds": m.get("rounds"),
                "best_iteration": m.get("best_iteration"),
                "trial_s": m.get("trial_s") or m.get("time_total_s"),
                "error": str(r.error).splitlines()[0] if r.error else None,
                "path": r.path,
            }
        )
    scored = [t for t in trials if t[plan.metric] is not None and not t["error"]]
    if not scored:
        first = next((t["error"] for t in trials if t["error"]), "no trial reported a metric")
        raise TrainingError(f"every Tune trial failed ({len(trials)} trials); first error: {first}. Trials: {path}")
    sign = 1 if plan.mode == "max" else -1
    best = max(scored, key=lambda t: sign * t[plan.metric])
    return {
        "metric": plan.metric,
        "mode": plan.mode,
        "best_model": best["model"],
        "best_params": best["params"],
        "best_score": best[plan.metric],
        "best_rounds": (best["best_iteration"] or 0) + 1 if best["model"] == "xgboost" else None,
        "num_trials": len(trials),
        "num_errored": sum(1 for t in trials if t["error"]),
        "trials": trials,
        "concurrency": conc,
        "cpus_per_trial": per,
        "experiment_path": path,
        "resumed": resumed,
        "wall_s": wall,
    }


def refit(
    plan: TrialPlan, summary: dict[str, Any], data: dict[str, Arrays], tune_cfg: TuneConfig, cpus: float
) -> FitResult:
    """Refit the winner in a Ray task: on train+valid for its best rounds, or on train early-stopped on valid."""
    import ray

    model, params = summary["best_model"], summary["best_params"]
    t0 = time.perf_counter()
    if tune_cfg.refit_on_train_valid and data["valid"].rows:
        tr, va = data["train"], data["valid"]
        joined = Arrays(
            np.concatenate([tr.X, va.X]),
            np.concatenate([tr.y, va.y]),
            None if tr.w is None else np.concatenate([tr.w, va.w]),
        )
        args = (joined, None, summary["best_rounds"])
    else:
        args = (data["train"], data["valid"], None)
    refit_plan = replace(plan, nthread=max(1, math.ceil(cpus - 1e-9)))
    task = ray.remote(_refit_task).options(num_cpus=cpus)
    est, out = ray.get(task.remote(refit_plan, model, params, *args))
    return FitResult(
        model=est,
        kind=model,
        params=params,
        best_iteration=int(out["best_iteration"]) if model == "xgboost" else 0,
        rounds=int(out["rounds"]),
        wall_s=time.perf_counter() - t0,
        valid_metric=plan.metric,
        valid_score=summary["best_score"],
        tune=summary,
    )


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}_{trial.config.get('model', '')}"


def _refit_task(plan, model, params, train, valid, rounds):
    return train_model(plan, model, params, train, valid, num_boost_round=rounds)
