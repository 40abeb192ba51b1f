"""Typed pipeline configuration: the one source of truth for every default.

A config needs only ``data.path`` and ``data.label``; everything else has a
default here. Unknown keys are errors that name the key's path and the nearest
valid name.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from raypipe._strict import _Strict
from raypipe.config_ops import (  # noqa: F401 - re-exported: raypipe.config is where configs live
    MonitorConfig,
    MonitorThresholds,
    ReportConfig,
    RetrainConfig,
    ServeAutoscalingConfig,
    ServeConfig,
)
from raypipe.errors import ConfigError

Task = Literal["auto", "binary", "multiclass", "regression"]


class SplitConfig(_Strict):
    """Deterministic split: by a content hash (default) or by time.

    ``hash``: the same row always lands in the same split, whatever the file
    order, block layout or cluster size. ``time``: rows before ``valid_after``
    train, rows from ``test_after`` on test, the rest validate.
    """

    method: Literal["hash", "time"] = "hash"
    train: float = Field(0.8, gt=0, lt=1)
    valid: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    key: list[str] | None = None
    """Columns hashed to assign the split; default: ``data.id_column`` or all columns."""
    seed: int = 0
    time_column: str | None = None
    valid_after: str | None = None
    """ISO timestamp, e.g. ``2013-11-01``; default: no valid split before ``test_after``."""
    test_after: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.method == "time":
            if not self.time_column or not self.test_after:
                raise ValueError("method 'time' needs time_column and test_after (and optionally valid_after)")
            if self.valid_after and self.valid_after >= self.test_after:
                raise ValueError(f"valid_after ({self.valid_after}) must be before test_after ({self.test_after})")
            return self
        total = self.train + self.valid + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + valid + test must be 1.0, got {total:g}")
        return self


Action = Literal["fail", "warn", "off"]


class QualityConfig(_Strict):
    """Data-quality rules; each is ``fail`` (stop before training), ``warn`` or ``off``."""

    max_null_rate: float = Field(0.5, ge=0, le=1)
    null_rate: Action = "warn"
    out_of_range: Action = "fail"
    """Numeric values outside a declared contract's [min, max]."""
    unseen_categories: Action = "warn"
    """Levels not in a declared contract's categories."""
    constant: Action = "warn"
    duplicate_ids: Action = "fail"
    """Rows sharing a ``data.id_column`` value."""


class DataConfig(_Strict):
    path: str
    """Parquet folder, file or URI (s3://, gs://, file://), or ``dataset://flights``."""
    label: str
    task: Task = "auto"
    columns: list[str] | None = None
    """Columns to read (projection); default: all."""
    filter: str | None = None
    """Row predicate pushed down to the Parquet scan, e.g. ``"month <= 6"``."""
    id_column: str | None = None
    weight_column: str | None = None
    max_classes: int = Field(20, ge=2)
    """A numeric label with at most this many distinct integer values is a class label."""
    validate_files: bool = True
    """Open and decode every file before the run, to name a corrupt one."""
    schema_file: str | None = None
    """A declared contract (``raypipe schema infer`` writes one): kinds, ranges, categories."""
    split: SplitConfig = SplitConfig()
    quality: QualityConfig = QualityConfig()


class FeaturesConfig(_Strict):
    include: list[str] | None = None
    """Feature columns; default: every column except label, id and weight."""
    exclude: list[str] = []
    categorical: list[str] = []
    """Force these columns to be categorical (e.g. integer codes)."""
    numeric: list[str] = []
    max_categories: int = Field(512, ge=2)
    """Keep the most frequent levels; rarer ones are treated as unseen (missing)."""
    derived: dict[str, str] = {}
    """New numeric columns from arithmetic on others, e.g. ``{spread: "temp - dewp"}``."""
    encoding: Literal["native", "onehot", "ordinal"] = "native"
    """Categoricals: ``native`` codes XGBoost splits on as categories; ``onehot`` or
    ``ordinal`` for models without categorical support (scikit-learn)."""
    scale: bool = False
    """Standardise numeric columns with train-split mean and std (linear models need it)."""
    impute: Literal["none", "mean", "zero"] = "none"
    """Numeric missing values: XGBoost learns a default branch for them, so ``none`` is best for it."""


ModelName = Literal["xgboost", "hist_gradient_boosting", "random_forest", "logistic_regression"]
SKLEARN_MODELS = ("hist_gradient_boosting", "random_forest", "logistic_regression")


class TrainConfig(_Strict):
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


class EvaluateConfig(_Strict):
    primary_metric: str | None = None
    """Default: ``auc`` (binary), ``logloss`` (multiclass), ``rmse`` (regression)."""


class RegisterConfig(_Strict):
    enabled: bool = True
    model_name: str | None = None
    """Default: the config file's stem (e.g. ``flights``)."""
    experiment: str = "raypipe"
    alias: str = "champion"
    max_regression: float = Field(0.001, ge=0)
    """The new version takes the alias unless it is worse than the champion by more. Both are
    scored on this run's test split."""
    floors: dict[str, float] = {}
    """Absolute bounds on test metrics, e.g. ``{auc: 0.7, rmse: 12}``: at least this for metrics
    where higher is better, at most this otherwise. A version that fails one never takes the alias."""


class RuntimeConfig(_Strict):
    address: str | None = None
    """Ray cluster to join; default: ``RAY_ADDRESS`` or a new local Ray."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs for a local Ray; default: all cores."""
    work_dir: str = ".raypipe"
    """Local store for MLflow, checkpoints and dataset caches."""
    tracking_uri: str | None = None
    """Default: ``MLFLOW_TRACKING_URI`` or SQLite under ``work_dir``."""
    data_cpus: float = Field(0.5, gt=0)
    """CPUs kept free for Ray Data while training runs."""
    storage_path: str | None = None
    """Train (and Tune) checkpoints: a folder or a pyarrow filesystem URI (``s3://``, ``gs://``,
    ``abfs://``); default ``work_dir/train``. On a multi-host cluster it must be shared storage."""
    shared_storage: bool = False
    """Declare that local paths (data, MLflow store, checkpoints) are on a mount every node
    sees (NFS, EFS, Filestore...); skips the multi-node local-path check."""


# `register` is also an ABCMeta method name; pydantic warns, but the field works.
warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)


class PipelineConfig(_Strict):
    data: DataConfig
    features: FeaturesConfig = FeaturesConfig()
    train: TrainConfig = TrainConfig()
    tune: TuneConfig = TuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    register: RegisterConfig = RegisterConfig()
    serve: ServeConfig = ServeConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    monitor: MonitorConfig = MonitorConfig()
    report: ReportConfig = ReportConfig()
    name: str = "pipeline"
    """Defaults to the config file's stem."""


_ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    raw: dict[str, Any] | None = None,
) -> PipelineConfig:
    """Read a YAML config, apply ``--set`` overrides and validate it.

    Args:
        path: YAML file. Either this or ``raw``.
        overrides: ``"section.key=value"`` strings; values are parsed as YAML.
        raw: An already-parsed mapping (used by tests and the Python API).

    Returns:
        The validated config.

    Raises:
        ConfigError: listing every problem at once, each with its key path.

    Example:
        >>> cfg = load_config(raw={"data": {"path": "d/", "label": "y"}})
        >>> cfg.train.num_boost_round
        1000
    """
    source = "config"
    if raw is None:
        if path is None:
            raise ConfigError("no config given: pass a YAML path")
        p = Path(path)
        source = str(p)
        raw = read_yaml_mapping(p, "config file")
        raw.setdefault("name", p.stem)
    raw = _interpolate_env(raw, source)
    for item in overrides or []:
        _apply_override(raw, item)
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"invalid {source}: " + "; ".join(_describe(err) for err in e.errors())) from None


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping.

    Raises:
        ConfigError: naming ``what`` and the path when it is missing, not YAML or not a mapping.
    """
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{path}' is not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}' must be a mapping, got {type(data).__name__}")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"bad --set '{item}': expected section.key=value, e.g. train.num_boost_round=50")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"bad --set '{item}': value is not valid YAML") from None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"bad --set '{item}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parsed


def _interpolate_env(value: Any, source: str) -> Any:
    """Replace ``${ENV:NAME}`` so secrets live in the environment, not the file."""
    if isinstance(value, dict):
        return {k: _interpolate_env(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_env(v, source) for v in value]
    if isinstance(value, str) and "${ENV:" in value:

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in os.environ:
                raise ConfigError(f"{source} references ${{ENV:{name}}} but {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(sub, value)
    return value


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model that owns the key at ``loc`` (for suggestions)."""
    model: type[BaseModel] = PipelineConfig
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in loc)
    if err["type"] == "extra_forbidden":
        model = _model_at(loc)
        hint = ""
        if model is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.5)
            if close:
                hint = f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?)"
        return f"unknown key '{dotted}'{hint}"
    if err["type"] == "missing":
        return f"missing required field '{dotted}'"
    msg = err["msg"].removeprefix("Value error, ")
    return f"'{dotted}': {msg}" if dotted else msg


def config_hash(cfg: PipelineConfig) -> str:
    """A stable hash of the resolved config."""
    import hashlib
    import json

    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
