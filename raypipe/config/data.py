"""The ``data`` and ``features`` sections: where the rows come from, how they split, which
columns become features."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raypipe.config._base import _Strict
from raypipe.config.sources import IcebergSource, SqlSource

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
    schema_drift: Action = "warn"
    """A column present in some files and missing from others (read as null where missing)."""


class DataConfig(_Strict):
    path: str | None = None
    """Parquet folder, file or URI (s3://, gs://, file://), or ``dataset://flights``."""
    sql: SqlSource | None = None
    """A SQL query or table instead of ``path``."""
    iceberg: IcebergSource | None = None
    """An Iceberg table instead of ``path``."""
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

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        given = [k for k in ("path", "sql", "iceberg") if getattr(self, k) is not None]
        if len(given) != 1:
            got = " and ".join(f"data.{k}" for k in given) if given else "none"
            raise ValueError(f"give exactly one of data.path, data.sql or data.iceberg (got {got})")
        return self

    @property
    def source_name(self) -> str:
        """The source as printed: the path, the redacted SQL URL or the Iceberg table."""
        from raypipe.config.sources import redact_url

        if self.sql is not None:
            return f"{redact_url(self.sql.url)} ({self.sql.table or 'query'})"
        if self.iceberg is not None:
            return f"iceberg table {self.iceberg.table}"
        return self.path


class FeaturesConfig(_Strict):
    include: list[str] | None = None
    """Feature columns; default: every column except label, id and weight."""
    exclude: list[str] = []
    categorical: list[str] = []
    """Force these columns to be categorical (e.g. integer codes)."""
    numeric: list[str] = []
    max_categories: int = Field(5000, ge=2)
    """Levels of a categorical the contract keeps, most frequent train-split levels first (rarer
    ones are unseen: missing, or the prior of a target encoding)."""
    native_max_levels: int = Field(512, ge=2)
    """Categoricals with at most this many train levels are native codes (one-hot: indicators)."""
    high_cardinality: Literal["target", "native"] = "target"
    """Categoricals with more levels: ``target`` = their train-split frequency plus their smoothed
    mean label, out-of-fold on train rows (``raypipe.target_encoding``); ``native`` = codes for the
    ``native_max_levels`` most frequent levels. ``target`` by measurement (``benchmarks/bench_encodings.py``:
    best of the five encodings tried on a 4,000-level string, repeated user/item ids and flights'
    ``tailnum``; native codes of all levels lost 0.02-0.05 AUC on flights)."""
    derived: dict[str, str] = {}
    """New numeric columns from arithmetic on others, e.g. ``{spread: "temp - dewp"}``."""
    encoding: Literal["native", "onehot", "ordinal"] = "native"
    """Categoricals: ``native`` codes XGBoost splits on as categories; ``onehot`` or
    ``ordinal`` for models without categorical support (scikit-learn)."""
    scale: bool = False
    """Standardise numeric columns with train-split mean and std (linear models need it)."""
    impute: Literal["none", "mean", "zero"] = "none"
    """Numeric missing values: XGBoost learns a default branch for them, so ``none`` is best for it."""
