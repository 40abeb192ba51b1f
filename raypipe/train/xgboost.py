"""XGBoost on Ray Train: data-parallel, checkpointed, resumable.

Each worker gets an equal, disjoint share of the rows: slices of the split files (one machine),
or the materialised splits' Ray Data blocks (object refs, balanced by rows). It maps them as
NumPy, one file or block at a time, and feeds them to a ``QuantileDMatrix`` through a
``DataIter`` (no pandas, no concatenated copy, no streaming-split executor). Datasets that are
not materialised, or have fewer blocks than workers, go through Ray Train's
``get_dataset_shard`` instead.
Metrics and checkpoints (XGBoost's own UBJ format) are reported every
``checkpoint_every_rounds`` rounds, not every round: a ``train.report`` costs
far more than a boosting round on small data.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import xgboost

from raypipe.config import TrainConfig
from raypipe.data.splitfiles import SplitFiles
from raypipe.errors import TrainingError
from raypipe.runtime import CpuBudget
from raypipe.train._ray_train import (
    live_placement_groups,
    release_placement_groups,
    root_cause,
    single_host,
    trainer_class,
)
from raypipe.train._shards import BatchIter, block_shards, collect_shard
from raypipe.train.common import FitResult

log = logging.getLogger(__name__)

MODEL_FILE = "model.ubj"
_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
_HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Ray Train's controller notices a finished (or dead) worker group only at its next poll (2 s by
# default): measured here, 0.25 s takes ~3.4 s off every fit; the poll is one small RPC per worker.
_HEALTH_CHECK_S = "0.25"
_META_FILE = "meta.json"
_PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"

_DEFAULTS: dict[str, Any] = {
    "tree_method": "hist",
    "eta": 0.1,
    # 6, by measurement (benchmarks/bench_quality.py): depth 8 trailed a plain depth-6 script by up
    # to 0.005 AUC and 7 % RMSE on the quality tables; 6 matched or beat it on all of them.
    "max_depth": 6,
    "min_child_weight": 1.0,
    "max_bin": 256,
    "max_cat_to_onehot": 1,
}


def xgb_params(
    cfg: TrainConfig, task: str, num_classes: int | None, nthread: int, pos_weight: float | None = None
) -> dict[str, Any]:
    """raypipe's defaults for the task, overlaid with ``train.params``."""
    params = dict(_DEFAULTS)
    if task == "binary":
        params.update(objective="binary:logistic", eval_metric=["logloss", "auc"])
        if cfg.class_weight == "balanced" and pos_weight:
            params["scale_pos_weight"] = pos_weight
    elif task == "multiclass":
        params.update(objective="multi:softprob", num_class=num_classes, eval_metric=["merror", "mlogloss"])
    else:
        params.update(objective="reg:squarederror", eval_metric=["rmse"])
    params.update(cfg.params)
    params["nthread"] = nthread
    params["seed"] = cfg.seed
    return params


def openmp_threads(n: int):
    """Let XGBoost use ``n`` OpenMP threads (a context manager).

    Ray sets ``OMP_NUM_THREADS`` to a worker's whole CPUs (1 for a 1.5-CPU worker) and XGBoost
    caps its ``nthread`` at it: measured here, boosting ran ~1.8x slower than ``nthread`` asked.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="openmp")


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Train worker."""
    with openmp_threads(config["params"]["nthread"]):
        _train_worker(config)


def _train_worker(config: dict[str, Any]) -> None:
    import ray.train

    params = config["params"]
    every = config["checkpoint_every_rounds"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()

    started_at = time.time()
    t0 = time.perf_counter()
    if config.get("blocks"):
        # Block refs, read one at a time while the DMatrix is built (see _BatchIter).
        train_batches = config["blocks"]["train"][rank]
        valid_batches = config["blocks"]["valid"][rank] if config["blocks"]["valid"] else []
    else:
        train_batches = collect_shard(ray.train.get_dataset_shard("train"))
        valid_batches = collect_shard(ray.train.get_dataset_shard("valid"))
    ftypes = config["feature_types"]
    fnames = config["feature_names"]
    dtrain = xgboost.QuantileDMatrix(
        BatchIter(train_batches, fnames, ftypes),
        enable_categorical=True,
        max_bin=params.get("max_bin", 256),
        nthread=params["nthread"],
    )
    # Only the valid split is evaluated each round: AUC on the train split sorts every train row
    # every round (seconds per round at millions of rows) and nothing reads it.
    evals = []
    if valid_batches:
        dvalid = xgboost.QuantileDMatrix(
            BatchIter(valid_batches, fnames, ftypes), ref=dtrain, enable_categorical=True, nthread=params["nthread"]
        )
        evals.append((dvalid, "valid"))
    del train_batches, valid_batches
    load_s = time.perf_counter() - t0

    start_model = None
    done_rounds = 0
    ckpt = ray.train.get_checkpoint()
    if ckpt:
        with ckpt.as_directory() as d:
            start_model = xgboost.Booster()
            start_model.load_model(str(Path(d, MODEL_FILE)))
            done_rounds = start_model.num_boosted_rounds()
    remaining = max(config["num_boost_round"] - done_rounds, 0)

    def report(model, metrics: dict[str, Any]) -> None:
        if rank == 0:
            with tempfile.TemporaryDirectory() as d:
                model.save_model(str(Path(d, MODEL_FILE)))
                Path(d, _META_FILE).write_text(json.dumps(metrics))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics, checkpoint=None)

    class Periodic(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log) -> bool:
            if (epoch + 1) % every == 0 and epoch + 1 < config["num_boost_round"]:
                report(model, {"rounds": epoch + 1, **_last(evals_log)})
            return False

    history: dict[str, Any] = {}
    callbacks: list[Any] = [Periodic()]
    early = config["early_stopping_rounds"]
    if early and evals:
        callbacks.append(xgboost.callback.EarlyStopping(rounds=early, save_best=False, data_name="valid"))
    t1 = time.perf_counter()
    bst = xgboost.train(
        params,
        dtrain,
        num_boost_round=remaining,
        evals=evals,
        evals_result=history,
        callbacks=callbacks,
        xgb_model=start_model,
        verbose_eval=False,
    )
    best = int(bst.best_iteration) if early and evals and remaining else bst.num_boosted_rounds() - 1
    final = bst[: best + 1] if best + 1 < bst.num_boosted_rounds() else bst
    metrics = {
        "rounds": bst.num_boosted_rounds(),
        "best_iteration": best,
        "load_s": load_s,
        "boost_s": time.perf_counter() - t1,
        "resumed_from_round": done_rounds,
        "done": True,
        # Wall clock, for the driver to tell Ray Train's start-up and wind-down from the work.
        "worker_started_at": started_at,
        "worker_finished_at": time.time(),
        **_last(history, best - done_rounds),
    }
    report(final, metrics)


def _last(evals_log: dict[str, dict[str, list[float]]], index: int = -1) -> dict[str, float]:
    out = {}
    for data_name, metrics in evals_log.items():
        for name, values in metrics.items():
            if values:
                i = index if -len(values) <= index < len(values) else -1
                out[f"{data_name}_{name}"] = float(values[i])
    return out


def fit(
    train_ds,
    valid_ds,
    *,
    feature_names: list[str],
    feature_types: list[str],
    params: dict[str, Any],
    cfg: TrainConfig,
    budget: CpuBudget,
    storage_path: str,
    run_name: str,
) -> FitResult:
    """Fit on Ray Train and return the best booster.

    Raises:
        TrainingError: the fit failed after ``train.max_failures`` retries.
    """
    import ray.train

    loop_config = {
        "params": params,
        "num_boost_round": cfg.num_boost_round,
        "early_stopping_rounds": cfg.early_stopping_rounds,
        "checkpoint_every_rounds": cfg.checkpoint_every_rounds,
        "feature_names": feature_names,
        "feature_types": feature_types,
    }
    if isinstance(train_ds, SplitFiles):
        # File slices travel in the loop config; a restarted worker reads them again.
        train_blocks = train_ds.shards(budget.num_workers)
        valid_blocks = valid_ds.shards(budget.num_workers) if valid_ds.count() else []
    else:
        # Object refs; the driver's datasets keep the blocks alive.
        train_blocks = block_shards(train_ds, budget.num_workers)
        valid_blocks = block_shards(valid_ds, budget.num_workers) if valid_ds.count() else []
    if train_blocks is not None and valid_blocks is not None:
        loop_config["blocks"] = {"train": train_blocks, "valid": valid_blocks}
    # Ray Train reads this in its controller (propagated from the driver's environment).
    os.environ[_START_TIMEOUT_ENV] = f"{cfg.worker_start_timeout_s:g}"
    os.environ.setdefault(_HEALTH_CHECK_ENV, _HEALTH_CHECK_S)
    trainer = trainer_class()(
        _train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=budget.num_workers,
            resources_per_worker={"CPU": budget.cpus_per_worker},
            # One worker per node: PACK would stack small workers on one node and idle the others.
            placement_strategy="SPREAD" if budget.num_nodes > 1 and budget.num_workers > 1 else "PACK",
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=storage_path,
            failure_config=ray.train.FailureConfig(
                max_failures=cfg.max_failures,
                # Ray's default (-1) retries a worker group that cannot start forever: after a
                # node is lost for good the run would wait for its CPUs indefinitely.
                controller_failure_limit=cfg.max_failures,
            ),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
        datasets=None if "blocks" in loop_config else {"train": train_ds, "valid": valid_ds},
    )
    t0, wall0 = time.perf_counter(), time.time()
    # Ray Train watches for node drains (spot preemption) with an actor of its own (a Python process,
    # ~115 MB, polling): pointless when the whole cluster is this one machine, which a drain would
    # take down with the driver. The variable reaches the controller at its start.
    watcher_off = _PREEMPTION_WATCHER_ENV not in os.environ and single_host()
    if watcher_off:
        os.environ[_PREEMPTION_WATCHER_ENV] = "0"
    main = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main else None
    groups_before = live_placement_groups()
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps worker errors in several types
        cause = root_cause(e).rstrip(".")
        hint = ""
        if "startup timed out" in cause or "Insufficient cluster resources" in cause:
            hint = (
                f" The fit needs {budget.num_workers} worker(s) x {budget.cpus_per_worker:g} CPU and each restart "
                f"waited {cfg.worker_start_timeout_s:g}s (train.worker_start_timeout_s) for them: was a node lost?"
            )
        raise TrainingError(
            f"XGBoost training failed after {cfg.max_failures} retries: {cause}.{hint} No model was produced "
            f"(nothing is registered); checkpoints of this attempt are under {storage_path}/{run_name}"
        ) from e
    finally:
        release_placement_groups(groups_before)
        if main:  # the trainer's handler holds this fit's controller: put the caller's back
            signal.signal(signal.SIGINT, sigint)
        if watcher_off:
            os.environ.pop(_PREEMPTION_WATCHER_ENV, None)
    if result.checkpoint is None:
        raise TrainingError("training finished without a checkpoint; see the Ray Train logs above")
    with result.checkpoint.as_directory() as d:
        booster = xgboost.Booster()
        booster.load_model(str(Path(d, MODEL_FILE)))
        meta = json.loads(Path(d, _META_FILE).read_text())
    metric = params["eval_metric"][-1] if isinstance(params.get("eval_metric"), list) else "rmse"
    booster.set_param({"nthread": budget.nthread})
    wall = time.perf_counter() - t0
    metrics = {k: float(meta[k]) for k in ("load_s", "boost_s", "resumed_from_round") if k in meta}
    if "worker_started_at" in meta:
        # Start-up: from fit() to the finishing attempt's worker entering the loop (earlier attempts
        # included); wind-down: from its last report to the checkpoint loaded here.
        metrics["startup_s"] = meta["worker_started_at"] - wall0
        metrics["winddown_s"] = wall0 + wall - meta["worker_finished_at"]
    return FitResult(
        model=booster,
        kind="xgboost",
        best_iteration=int(meta.get("best_iteration", booster.num_boosted_rounds() - 1)),
        rounds=int(meta.get("rounds", booster.num_boosted_rounds())),
        valid_metric=f"valid_{metric}",
        valid_score=meta.get(f"valid_{metric}"),
        params=params,
        wall_s=wall,
        checkpoint_path=result.checkpoint.path,
        metrics=metrics,
    )
