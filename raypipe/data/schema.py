"""The schema contract: what a model was trained on, and what serving accepts.

Inferred from the Arrow schema plus column statistics, saved as JSON next to
the model, and read back by serving and monitoring.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from raypipe.config import DataConfig, FeaturesConfig
from raypipe.data.profile import ColumnStats
from raypipe.errors import DataError, SchemaError

log = logging.getLogger(__name__)

Kind = Literal["numeric", "categorical", "boolean", "timestamp"]
ResolvedTask = Literal["binary", "multiclass", "regression"]


@dataclass
class ColumnSpec:
    name: str
    kind: Kind
    dtype: str
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    """Levels seen in the train split, most frequent first (categoricals only)."""
    format: str | None = None
    """A timestamp held as strings: the strptime format its values parse with (``ISO8601``: any ISO form)."""


@dataclass
class LabelSpec:
    name: str
    task: ResolvedTask
    dtype: str
    classes: list[str] | None = None
    """Class values as strings, sorted; the last one is the positive class for binary."""


@dataclass
class Contract:
    features: list[ColumnSpec]
    label: LabelSpec
    id_column: str | None = None
    weight_column: str | None = None
    version: int = 1
    notes: list[str] = field(default_factory=list)
    example: dict[str, Any] | None = None
    """One real row's features from the data (JSON-ready): the example of the API docs and the try-it page."""

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> ColumnSpec:
        return next(f for f in self.features if f.name == name)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def example_record(self) -> dict[str, Any]:
        """The saved real row, or (for a contract without one) a valid record built from the specs."""
        if self.example is not None:
            return {f.name: self.example.get(f.name) for f in self.features}
        return {f.name: _typical(f) for f in self.features}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contract:
        return cls(
            features=[ColumnSpec(**f) for f in d["features"]],
            label=LabelSpec(**d["label"]),
            id_column=d.get("id_column"),
            weight_column=d.get("weight_column"),
            version=d.get("version", 1),
            notes=d.get("notes", []),
            example=d.get("example"),
        )

    def save(self, path: str | Path) -> None:
        """JSON, or YAML when the name ends in .yaml/.yml (for people to edit)."""
        p = Path(path)
        if p.suffix in (".yaml", ".yml"):
            import yaml

            p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        else:
            p.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Contract:
        """Read a JSON or YAML contract.

        Raises:
            SchemaError: the file is missing or malformed.
        """
        import yaml

        p = Path(path)
        try:
            return cls.from_dict(yaml.safe_load(p.read_text()))
        except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
            raise SchemaError(f"cannot read schema contract '{p}': {type(e).__name__}: {e}") from None


def _typical(spec: ColumnSpec) -> Any:
    """A value the contract accepts: the most frequent category, the middle of the training range."""
    if spec.kind == "categorical":
        first = spec.categories[0] if spec.categories else None
        return int(first) if first is not None and spec.dtype.startswith(("int", "uint")) else first
    if spec.kind == "boolean":
        return False
    if spec.kind == "timestamp":
        first = datetime.datetime(2024, 1, 1)
        return first.isoformat() if spec.format in (None, "ISO8601") else first.strftime(spec.format)
    if spec.min is None or spec.max is None:
        return 0
    mid = (spec.min + spec.max) / 2
    return int(mid) if spec.dtype.startswith(("int", "uint")) else float(f"{mid:.6g}")


def _is_string(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return True
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def infer_task(label: str, dtype: pa.DataType, stats: ColumnStats, max_classes: int) -> ResolvedTask:
    """String, bool or few distinct integer values mean classification."""
    levels = len(stats.levels)
    if _is_string(dtype) or pa.types.is_boolean(dtype):
        if stats.levels_truncated or levels > 1000:
            raise DataError(f"label '{label}' has more than 1000 distinct string values; is it really the label?")
        return "binary" if levels <= 2 else "multiclass"
    if not stats.non_integer and not stats.levels_truncated and levels <= max_classes:
        return "binary" if levels <= 2 else "multiclass"
    return "regression"


def infer_contract(
    schema: pa.Schema,
    stats: dict[str, ColumnStats],
    train_stats: dict[str, ColumnStats],
    data: DataConfig,
    features: FeaturesConfig,
    declared: Contract | None = None,
) -> Contract:
    """Build the contract: task, feature kinds, ranges and train-split categories.

    A ``declared`` contract (``data.schema_file``) fixes kinds, allowed ranges,
    categories and the label's task and classes; the data fills in the rest.

    Raises:
        SchemaError: the label or a named column is not in the data.
        DataError: the data is empty, the label has one value, or a feature is all null.
    """
    names = schema.names
    problems: list[str] = []
    for role, col in (
        ("data.label", data.label),
        ("data.id_column", data.id_column),
        ("data.weight_column", data.weight_column),
    ):
        if col is not None and col not in names:
            problems.append(f"{role} '{col}' is not a column")
    for col in (features.include or []) + features.categorical + features.numeric:
        if col not in names:
            problems.append(f"feature '{col}' is not a column")
    if problems:
        raise SchemaError("; ".join(problems) + f"; available columns: {', '.join(names)}")

    label_stats = stats[data.label]
    if label_stats.count == 0:
        raise DataError("the dataset is empty (0 rows after filters); check data.path and data.filter")
    if label_stats.nulls:
        log.warning(
            "label '%s' is null in %d rows; they are dropped",
            data.label,
            label_stats.nulls,
        )
    task = (
        data.task
        if data.task != "auto"
        else infer_task(data.label, schema.field(data.label).type, label_stats, data.max_classes)
    )
    if declared is not None and data.task == "auto":
        task = declared.label.task
    classes = None
    if task != "regression":
        classes = sorted(label_stats.levels)
        if declared is not None and declared.label.classes:
            classes = list(declared.label.classes)
        if len(classes) < 2:
            raise DataError(f"label '{data.label}' has a single value {classes}; nothing to learn")
        if task == "binary" and len(classes) > 2:
            raise DataError(f"data.task is binary but label '{data.label}' has {len(classes)} classes")

    reserved = {data.label, data.id_column, data.weight_column}
    want = {f.name: f for f in declared.features} if declared is not None else {}
    if want:
        features = features.model_copy(
            update={
                "categorical": features.categorical + [n for n, f in want.items() if f.kind == "categorical"],
                "numeric": features.numeric + [n for n, f in want.items() if f.kind == "numeric"],
            }
        )
    cols = features.include or ([c for c in names if c in want] if want else [c for c in names if c not in reserved])
    cols = [c for c in cols if c not in features.exclude and c not in reserved]
    if not cols:
        raise DataError("no feature columns left; check features.include / features.exclude")
    specs = []
    all_null = []
    notes: list[str] = []
    for c in cols:
        s, ts = stats[c], train_stats.get(c, stats[c])
        if s.count and s.nulls == s.count:
            all_null.append(c)
            continue
        t = schema.field(c).type
        kind = _kind(c, t, features)
        chosen = features.include or c in want or c in features.categorical or c in features.numeric
        if not chosen:
            why = _row_identifier(c, kind, ts)
            if why:
                notes.append(
                    f"'{c}' looks like a row identifier ({why}) and is not used as a feature "
                    "(set features.include to keep it)"
                )
                log.info(notes[-1])
                continue
            if kind == "numeric" and id_named(c) and not s.non_integer:
                # A repeated key (customer, store, item): its levels carry signal as categories.
                kind = "categorical"
                notes.append(
                    f"'{c}' is named like an identifier but repeats ({_ratio(ts)}): kept, as a categorical key"
                )
                log.info(notes[-1])
        date_format = _date_format(ts) if kind == "categorical" and _is_string(t) and c not in want else None
        if date_format and c not in features.categorical:
            kind = "timestamp"
            notes.append(f"'{c}' holds dates as strings (format {date_format}): used as date parts, not as categories")
            log.info(notes[-1])
        spec = ColumnSpec(name=c, kind=kind, dtype=str(t), nullable=s.nulls > 0, format=date_format)
        if kind == "numeric":
            spec.min, spec.max = s.min, s.max
        elif kind == "categorical":
            ranked = sorted(ts.levels.items(), key=lambda kv: (-kv[1], kv[0]))
            spec.categories = [k for k, _ in ranked[: features.max_categories]]
            if len(ranked) > features.max_categories or ts.levels_truncated:
                log.info(
                    "feature '%s': kept the %d most frequent levels",
                    c,
                    features.max_categories,
                )
        if c in want:  # the declared contract is the allowed domain
            d = want[c]
            spec.min = d.min if d.min is not None else spec.min
            spec.max = d.max if d.max is not None else spec.max
            spec.categories = d.categories or spec.categories
        specs.append(spec)
    if all_null:
        raise DataError(f"feature column(s) {all_null} are entirely null; drop them with features.exclude")
    return Contract(
        features=specs,
        label=LabelSpec(
            name=data.label,
            task=task,
            dtype=str(schema.field(data.label).type),
            classes=classes,
        ),
        id_column=data.id_column,
        weight_column=data.weight_column,
        notes=notes,
    )


ID_RATIO = 0.9
"""Distinct values per row above which an id-named integer column is a row identifier, not a key."""
_STRING_ID_RATIO = 0.5
"""Strings this unique per row cannot be learned as categories (each level seen about once)."""


def id_named(name: str) -> bool:
    lowered = name.lower()
    return lowered in ("id", "index", "row", "rowid") or lowered.endswith(("_id", "id_", "uuid", "_key"))


def _ratio(s: ColumnStats) -> str:
    valid = s.count - s.nulls
    return f"{s.distinct_ratio:.2f} distinct values per row, about {s.distinct:,.0f} in {valid:,} train rows"


def _row_identifier(name: str, kind: str, s: ColumnStats) -> str | None:
    """Why a column is a row identifier (noise or leakage as a feature), decided from its values:
    strings nearly unique per row, or integer columns named like ids whose values (nearly) never
    repeat. An id-named column whose values repeat is a key, and stays."""
    valid = s.count - s.nulls
    if kind == "categorical" and valid > 1000 and s.distinct_ratio > _STRING_ID_RATIO:
        return _ratio(s)
    if kind == "numeric" and id_named(name) and not s.non_integer and valid and s.distinct_ratio >= ID_RATIO:
        return _ratio(s)
    return None


_DATE_FORMATS = ("%Y-%m-%d", "%d-%b-%Y", "%d %b %Y", "%b %d %Y", "%b %d, %Y", "%d %B %Y", "%B %d, %Y",
                 "%m/%d/%Y", "%d/%m/%Y", "%Y/%m/%d", "%d.%m.%Y", "%m/%d/%Y %H:%M", "%m/%d/%Y %H:%M:%S",
                 "%Y-%m-%d %H:%M", "%d-%b-%Y %H:%M:%S")  # fmt: skip
DATE_SHARE = 0.95
"""A string column is a timestamp when at least this share of its (counted) values parse as one."""


def _date_format(s: ColumnStats) -> str | None:
    """The format at least ``DATE_SHARE`` of a string column's values parse with, or None.

    Decided on the value counts of the profile (every distinct value, or the most frequent ones
    per batch for very many), weighted by rows: ISO 8601 first, then common written forms.
    """
    import numpy as np
    import pyarrow.compute as pc

    from raypipe.features import ISO8601, parse_timestamps

    if not s.levels:
        return None
    keys = pa.array(list(s.levels), pa.string())
    weights = np.fromiter(s.levels.values(), dtype=np.float64, count=len(s.levels))
    total = weights.sum()
    digits = pc.match_substring_regex(keys, r"^[0-9]+$")
    if pc.any(digits).as_py() and weights[np.asarray(digits)].sum() > (1 - DATE_SHARE) * total:
        return None  # numbers in strings (zip codes, years): not dates
    for fmt in (ISO8601, *_DATE_FORMATS):
        parsed = parse_timestamps(keys, fmt)
        ok = np.asarray(parsed.is_valid())
        if weights[ok].sum() >= DATE_SHARE * total:
            return fmt
    return None


def _kind(name: str, t: pa.DataType, features: FeaturesConfig) -> Kind:
    if name in features.categorical:
        return "categorical"
    if name in features.numeric:
        return "numeric"
    if pa.types.is_boolean(t):
        return "boolean"
    if _is_string(t):
        return "categorical"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    raise SchemaError(
        f"column '{name}' has unsupported type {t}; exclude it with features.exclude",
        column=name,
    )
