"""The ``train`` and ``tune`` sections: which model, its params, and the hyperparameter search."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from raypipe.config._base import _Strict

ModelName = Literal["xgboost", "hist_gradient_boosting", "random_forest", "logistic_regression"]
SKLEARN_MODELS = ("hist_gradient_boosting", "random_forest", "logistic_regression")


class TrainConfig(_Strict):
    preset: Literal["default", "best"] = "default"
    """``best``: a seeded, time-budgeted Ray Tune search (ASHA) over XGBoost's learning rate, depth,
    min child weight, row and column subsampling and L2 regularisation (``BEST_SEARCH_SPACE``),
    then a refit of the winner; ``tune.time_budget_s`` bounds it (default ``BEST_TIME_BUDGET_S``)."""
    model: ModelName = "xgboost"
    """``xgboost`` trains on Ray Train (data-parallel); the scikit-learn models train in one Ray
    task on data that fits one worker (see ``max_rows_in_memory``)."""
    num_boost_round: int = Field(1000, ge=1)
    early_stopping_rounds: int | None = Field(50, ge=1)
    params: dict[str, Any] = {}
    """Model params: XGBoost params merged over raypipe's defaults (see raypipe.train.xgboost), or
    the scikit-learn estimator's constructor arguments (e.g. ``{max_iter: 300}``)."""
    max_rows_in_memory: int = Field(2_000_000, ge=1)
    """scikit-learn models and Tune trials hold the train split in one process: above this many
    rows it is sampled uniformly (seeded by ``seed``), and the run's log and metrics say so."""
    joblib_backend: Literal["auto", "ray", "threads"] = "auto"
    """Where scikit-learn's joblib parallelism (``n_jobs``) runs: ``ray`` spreads it over the
    cluster with Ray's joblib backend; ``auto`` uses it on multi-node clusters only (on one node
    threads inside the training task are cheaper)."""
    num_workers: int | Literal["auto"] = "auto"
    cpus_per_worker: float | Literal["auto"] = "auto"
    checkpoint_every_rounds: int = Field(100, ge=1)
    max_failures: int = Field(2, ge=0)
    """Worker-group restarts (from the last checkpoint) after a worker or node dies."""
    worker_start_timeout_s: float = Field(60.0, gt=0)
    """How long a (re)start waits for the workers' CPUs, e.g. for a lost node's replacement;
    after ``max_failures + 1`` such waits the fit fails instead of waiting forever."""
    class_weight: Literal["none", "balanced"] = "none"
    seed: int = 42


class ParamSpec(_Strict):
    """One search dimension, written ``{loguniform: [0.01, 0.3]}``, ``{uniform: [0.5, 1]}``,
    ``{randint: [3, 10]}`` (upper bound exclusive) or ``{choice: [a, b]}``."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> ParamSpec:
        set_ = [k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError(
                f"a search dimension needs exactly one of uniform, loguniform, randint, choice; got {set_ or 'none'}"
            )
        kind = set_[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice needs at least one value")
            return self
        low, high = getattr(self, kind)
        if not low < high:
            raise ValueError(f"{kind}: low ({low}) must be below high ({high})")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low must be > 0, got {low}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None)


class TuneConfig(_Strict):
    """Ray Tune search over ``train.params`` (and optionally the model type)."""

    enabled: bool = False
    num_samples: int = Field(8, ge=1)
    metric: str | None = None
    """Valid-split metric to optimise: ``valid_auc`` (binary), ``valid_logloss`` (multiclass),
    ``valid_rmse`` (regression) by default."""
    mode: Literal["auto", "max", "min"] = "auto"
    search_space: dict[str, ParamSpec] = {}
    """Params of ``train.model`` to search, merged over ``train.params``."""
    models: dict[ModelName, dict[str, ParamSpec]] = {}
    """Search over model type too: ``{xgboost: {eta: ...}, random_forest: {max_depth: ...}}``;
    each trial picks one model and samples its own space. Replaces ``search_space``."""
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period_rounds: int = Field(20, ge=1)
    """ASHA stops no trial before this many boosting rounds."""
    max_t_rounds: int | None = Field(None, ge=1)
    """ASHA's horizon; default ``train.num_boost_round``."""
    reduction_factor: float = Field(3.0, gt=1)
    report_every_rounds: int = Field(10, ge=1)
    """XGBoost trials report the valid metric to the scheduler this often."""
    cpus_per_trial: float | Literal["auto"] = "auto"
    """Default: 1 CPU (one XGBoost thread); concurrency is the training CPU budget divided by it."""
    max_concurrent: int | Literal["auto"] = "auto"
    seed: int = 0
    time_budget_s: float | None = Field(None, gt=0)
    refit_on_train_valid: bool = True
    """Refit the winner on train+valid for its best number of rounds (else on train, early-stopped on valid)."""

    @model_validator(mode="after")
    def _space(self) -> TuneConfig:
        if self.models and self.search_space:
            raise ValueError("use either search_space (one model) or models (model-type search), not both")
        if self.enabled and not (self.search_space or self.models):
            raise ValueError("enabled needs something to search: set tune.search_space or tune.models")
        return self


BEST_SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "eta": {"loguniform": [0.02, 0.3]},
    "max_depth": {"randint": [3, 11]},
    "min_child_weight": {"loguniform": [0.5, 32.0]},
    "subsample": {"uniform": [0.5, 1.0]},
    "colsample_bytree": {"uniform": [0.5, 1.0]},
    "lambda": {"loguniform": [0.1, 20.0]},
}
"""What ``train.preset: best`` searches (``tune.search_space`` replaces it when given)."""
BEST_TIME_BUDGET_S = 240.0
BEST_NUM_SAMPLES = 200
"""Trials ``best`` may start; the time budget ends the search first on most tables."""


def apply_preset(train: TrainConfig, tune: TuneConfig) -> TuneConfig:
    """The search ``train.preset`` asks for, filled into the ``tune`` section (what the user set wins)."""
    if train.preset != "best":
        return tune
    if train.model != "xgboost" and not (tune.search_space or tune.models):
        raise ValueError(
            f"train.preset best searches XGBoost's params; train.model is {train.model}: set tune.search_space"
        )
    raw = tune.model_dump(exclude_unset=True)
    raw["enabled"] = True
    if not (tune.search_space or tune.models):
        raw["search_space"] = BEST_SEARCH_SPACE
    raw.setdefault("time_budget_s", BEST_TIME_BUDGET_S)
    raw.setdefault("num_samples", BEST_NUM_SAMPLES)
    return TuneConfig.model_validate(raw)
