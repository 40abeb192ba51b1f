"""XGBoost on Ray Train: data-parallel, checkpointed, resumable.

Each worker gets a disjoint set of the materialised splits' Ray Data blocks (object
refs, balanced by rows), reads them zero-copy from the object store as NumPy and
feeds them to a ``QuantileDMatrix`` through a ``DataIter`` (no pandas, no
concatenated copy, no streaming-split executor). Datasets that are not
materialised, or have fewer blocks than workers, go through Ray Train's
``get_dataset_shard`` instead.
Metrics and checkpoints (XGBoost's own UBJ format) are reported every
``checkpoint_every_rounds`` rounds, not every round: a ``train.report`` costs
far more than a boosting round on small data.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import xgboost

from raypipe.config import TrainConfig
from raypipe.errors import TrainingError
from raypipe.runtime import CpuBudget
from raypipe.train.common import FitResult

log = logging.getLogger(__name__)

MODEL_FILE = "model.ubj"
_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
_HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
# Ray Train's controller notices a finished (or dead) worker group only at its next poll (2 s by
# default): measured here, 0.25 s takes ~3.4 s off every fit; the poll is one small RPC per worker.
_HEALTH_CHECK_S = "0.25"
_META_FILE = "meta.json"

_DEFAULTS: dict[str, Any] = {
    "tree_method": "hist",
    "eta": 0.1,
    "max_depth": 8,
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
        params.update(objective="multi:softprob", num_class=num_classes, eval_metric=["mlogloss", "merror"])
    else:
        params.update(objective="reg:squarederror", eval_metric=["rmse"])
    params.update(cfg.params)
    params["nthread"] = nthread
    params["seed"] = cfg.seed
    return params


class _BatchIter(xgboost.DataIter):
    """Feeds held NumPy batches to ``QuantileDMatrix`` without concatenating them."""

    def __init__(
        self, batches: list[dict[str, np.ndarray]], feature_names: list[str], feature_types: list[str]
    ) -> None:
        self._batches = batches
        self._names = feature_names
        self._types = feature_types
        self._i = 0
        super().__init__(release_data=True)

    def next(self, input_data) -> bool:
        if self._i == len(self._batches):
            return False
        b = self._batches[self._i]
        input_data(data=b["X"], label=b["y"], weight=b.get("w"), feature_names=self._names, feature_types=self._types)
        self._i += 1
        return True

    def reset(self) -> None:
        self._i = 0


def _collect(shard) -> list[dict[str, np.ndarray]]:
    # Whole blocks (batch_size=None): re-batching to a fixed size would copy every row once more.
    return [b for b in shard.iter_batches(batch_size=None, batch_format="numpy") if len(b["y"])]


def block_shards(ds, num_workers: int) -> list[list[tuple[Any, tuple[int, int] | None]]] | None:
    """The dataset's blocks dealt to ``num_workers`` (largest first, to the least-loaded worker).

    Returns ``[[(block_ref, (start, end) or None), ...] per worker]``, or None when a worker would
    get no rows (then the caller lets Ray Train shard the dataset by rows).
    """
    entries = []
    for bundle in ds.iter_internal_ref_bundles():
        for entry, sl in zip(bundle.blocks, bundle.slices):
            rows = entry.metadata.num_rows if sl is None else sl.num_rows
            if rows:
                entries.append((rows, entry.ref, None if sl is None else (sl.start_offset, sl.end_offset)))
    shards: list[list[tuple[Any, tuple[int, int] | None]]] = [[] for _ in range(num_workers)]
    loads = [0] * num_workers
    for rows, ref, sl in sorted(entries, key=lambda e: -e[0]):
        i = loads.index(min(loads))
        shards[i].append((ref, sl))
        loads[i] += rows
    return shards if all(loads) else None


def _read_blocks(refs: list[tuple[Any, tuple[int, int] | None]]) -> list[dict[str, np.ndarray]]:
    """Blocks -> NumPy batches; zero-copy views of the object store where the layout allows."""
    import ray
    from ray.data.block import BlockAccessor

    out = []
    for ref, sl in refs:
        block = ray.get(ref)
        if sl is not None:
            block = block.slice(sl[0], sl[1] - sl[0])
        out.append(BlockAccessor.for_block(block).to_batch_format("numpy"))
    return out


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

    t0 = time.perf_counter()
    if config.get("blocks"):
        train_batches = _read_blocks(config["blocks"]["train"][rank])
        valid_batches = _read_blocks(config["blocks"]["valid"][rank]) if config["blocks"]["valid"] else []
    else:
        train_batches = _collect(ray.train.get_dataset_shard("train"))
        valid_batches = _collect(ray.train.get_dataset_shard("valid"))
    ftypes = config["feature_types"]
    fnames = config["feature_names"]
    dtrain = xgboost.QuantileDMatrix(
        _BatchIter(train_batches, fnames, ftypes),
        enable_categorical=True,
        max_bin=params.get("max_bin", 256),
        nthread=params["nthread"],
    )
    # Only the valid split is evaluated each round: AUC on the train split sorts every train row
    # every round (seconds per round at millions of rows) and nothing reads it.
    evals = []
    if valid_batches:
        dvalid = xgboost.QuantileDMatrix(
            _BatchIter(valid_batches, fnames, ftypes), ref=dtrain, enable_categorical=True, nthread=params["nthread"]
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


def _root_cause(e: BaseException) -> str:
    """The first worker's own error, not Ray's wrapper text."""
    failures = getattr(e, "worker_failures", None)
    if failures:
        e = next(iter(failures.values()))
    cause = e
    while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
        cause = getattr(cause, "cause", None) or cause.__cause__
    # Skip native stack traces (XGBoost's "[bt] (8) libffi.so..." lines): keep the message.
    lines = [
        ln.strip()
        for ln in str(cause).splitlines()
        if ln.strip() and not ln.lstrip().startswith(("[bt]", "Stack trace", "Traceback", "File "))
    ]
    # Ray's wrappers put the cause after a "...error:" header line: keep both.
    head = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return f"{type(cause).__name__}: {head}"


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
    from ray.train.xgboost import XGBoostTrainer

    loop_config = {
        "params": params,
        "num_boost_round": cfg.num_boost_round,
        "early_stopping_rounds": cfg.early_stopping_rounds,
        "checkpoint_every_rounds": cfg.checkpoint_every_rounds,
        "feature_names": feature_names,
        "feature_types": feature_types,
    }
    train_blocks = block_shards(train_ds, budget.num_workers)
    valid_blocks = block_shards(valid_ds, budget.num_workers) if valid_ds.count() else []
    if train_blocks is not None and valid_blocks is not None:
        # Object refs travel in the loop config; the driver's datasets keep the blocks alive.
        loop_config["blocks"] = {"train": train_blocks, "valid": valid_blocks}
    # Ray Train reads this in its controller (propagated from the driver's environment).
    os.environ[_START_TIMEOUT_ENV] = f"{cfg.worker_start_timeout_s:g}"
    os.environ.setdefault(_HEALTH_CHECK_ENV, _HEALTH_CHECK_S)
    trainer = XGBoostTrainer(
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
    t0 = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps worker errors in several types
        cause = _root_cause(e).rstrip(".")
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
    if result.checkpoint is None:
        raise TrainingError("training finished without a checkpoint; see the Ray Train logs above")
    with result.checkpoint.as_directory() as d:
        booster = xgboost.Booster()
        booster.load_model(str(Path(d, MODEL_FILE)))
        meta = json.loads(Path(d, _META_FILE).read_text())
    metric = params["eval_metric"][-1] if isinstance(params.get("eval_metric"), list) else "rmse"
    booster.set_param({"nthread": budget.nthread})
    return FitResult(
        model=booster,
        kind="xgboost",
        best_iteration=int(meta.get("best_iteration", booster.num_boosted_rounds() - 1)),
        rounds=int(meta.get("rounds", booster.num_boosted_rounds())),
        valid_metric=f"valid_{metric}",
        valid_score=meta.get(f"valid_{metric}"),
        params=params,
        wall_s=time.perf_counter() - t0,
        checkpoint_path=result.checkpoint.path,
        metrics={k: float(meta[k]) for k in ("load_s", "boost_s", "resumed_from_round") if k in meta},
    )
