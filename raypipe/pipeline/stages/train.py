"""train: XGBoost on Ray Train, a scikit-learn model in a Ray task, or a Ray Tune search."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

from raypipe.model import load_model_file, save_model, sha256
from raypipe.pipeline.stages._io import read_json, write_json
from raypipe.runtime import storage_path
from raypipe.train import FitResult, fit_model

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext
    from raypipe.pipeline.stages.preprocess import Prepared
    from raypipe.pipeline.stages.profile import Profiled


class Trained:
    """A trained model (XGBoost booster or scikit-learn estimator) and how it was trained.

    Wraps :class:`raypipe.train.FitResult`; stored in the model's own format (XGBoost UBJ, or
    skops for scikit-learn), whose sha256 is checked on load.
    """

    REQUIRED = ("fit.json",)

    def __init__(self, fit: FitResult) -> None:
        self.fit = fit

    def __getattr__(self, name: str):
        return getattr(self.__dict__["fit"], name)

    def save(self, d: Path) -> None:
        # Not asdict: it would deep-copy the model.
        meta = {f.name: getattr(self.fit, f.name) for f in fields(self.fit) if f.name != "model"}
        meta["model_file"] = save_model(self.fit.model, d)
        meta["model_sha256"] = sha256(d / meta["model_file"])
        write_json(d / "fit.json", meta)

    @classmethod
    def load(cls, d: Path) -> Trained:
        meta = read_json(d / "fit.json")
        path = d / meta.pop("model_file")
        if sha256(path) != meta.pop("model_sha256"):
            raise ValueError(f"cached model '{path}' does not match its recorded sha256")
        kind = "xgboost" if meta["kind"] == "xgboost" else "sklearn"
        return cls(FitResult(model=load_model_file(path, kind), **meta))


def train(ctx: RunContext, profile: Profiled, preprocess: Prepared) -> Trained:
    """Fit what ``train`` and ``tune`` ask for on the prepared splits (trials nested under the run)."""
    cfg, contract = ctx.cfg, profile.contract
    pos_weight = _pos_weight(profile, contract) if contract.label.task == "binary" else None
    fit = fit_model(
        preprocess.parts,
        preprocess.preprocessor,
        contract,
        cfg,
        ctx.budget,
        storage_path(cfg, ctx.paths.work_dir),
        f"{cfg.name}-{dt.datetime.now():%Y%m%d-%H%M%S}",
        pos_weight=pos_weight,
        tracking_uri=ctx.tracker.tracking_uri if ctx.tracker.enabled else None,
        parent_run_id=ctx.tracker.run_id,
    )
    return Trained(fit)


def record(ctx: RunContext, result: Trained) -> None:
    """Cached or not: the fit's params and metrics on the run."""
    fit, t = result.fit, ctx.tracker
    prefix = "xgb" if fit.kind == "xgboost" else fit.kind
    t.log_params({f"{prefix}.{k}": v for k, v in fit.params.items() if k != "eval_metric"})
    t.log_metrics({**fit.metrics, "best_iteration": fit.best_iteration, "train_wall_s": fit.wall_s})
    t.set_tags({"raypipe.cpu_budget": json.dumps(asdict(ctx.budget))})
    if fit.sampling:
        t.set_tags({"raypipe.sampling": fit.sampling})


def describe(ctx: RunContext, result: Trained) -> str:
    b = ctx.budget
    return (
        f"{result.kind}: {b.num_workers} worker(s) x {b.cpus_per_worker:g} CPU, nthread={b.nthread}, "
        f"best round {result.best_iteration + 1}/{result.rounds}"
    )


def _pos_weight(profile: Profiled, contract) -> float | None:
    """Negatives / positives in the train split (binary), for ``train.class_weight: balanced``."""
    levels = profile.profile.get("train", {}).get(contract.label.name)
    classes = contract.label.classes or []
    if not levels or len(classes) != 2:
        return None
    neg, pos = levels.levels.get(classes[0], 0), levels.levels.get(classes[1], 0)
    return neg / pos if pos else None
