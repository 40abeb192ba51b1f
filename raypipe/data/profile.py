"""Column statistics computed as a distributed map-reduce over Ray Data batches.

Each batch yields a small JSON summary per split; the driver only merges
summaries, so it never holds the data. Used to infer the task and the schema
contract, fit the preprocessor (train split only) and report data quality.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.data.sketch import estimate, merge, sketch
from raypipe.data.split import hash_column

# Distinct values kept per column per batch; more means "high cardinality".
_MAX_LEVELS_PER_BATCH = 5000
# Numeric columns keep levels only when they have few (label inference).
_MAX_NUMERIC_LEVELS = 64


@dataclass
class ColumnStats:
    count: int = 0
    nulls: int = 0
    min: float | None = None
    max: float | None = None
    sum: float = 0.0
    sum_sq: float = 0.0
    levels: Counter[str] = field(default_factory=Counter)
    levels_truncated: bool = False
    non_integer: bool = False
    """A numeric column holds values with a fractional part."""
    sketch: list[int] = field(default_factory=list)
    """KMV sketch of the values (:mod:`raypipe.data.sketch`), kept where ``levels`` cannot count them."""

    @property
    def distinct(self) -> float:
        """Distinct non-null values: exact from ``levels`` when they are complete, else estimated."""
        if not self.levels_truncated:
            return float(len(self.levels))
        return estimate(self.sketch) if self.sketch else float("nan")

    @property
    def distinct_ratio(self) -> float:
        """Distinct values per non-null row: near 1 for a row identifier, small for a repeated key."""
        valid = self.count - self.nulls
        return self.distinct / valid if valid else 0.0

    @property
    def null_rate(self) -> float:
        return self.nulls / self.count if self.count else 0.0

    @property
    def mean(self) -> float | None:
        n = self.count - self.nulls
        return self.sum / n if n else None

    @property
    def std(self) -> float | None:
        n = self.count - self.nulls
        if not n:
            return None
        var = max(self.sum_sq / n - (self.sum / n) ** 2, 0.0)
        return var**0.5

    def merge(self, other: dict[str, Any]) -> None:
        self.count += other["count"]
        self.nulls += other["nulls"]
        for attr, fn in (("min", min), ("max", max)):
            v = other.get(attr)
            if v is not None:
                cur = getattr(self, attr)
                setattr(self, attr, v if cur is None else fn(cur, v))
        self.sum += other.get("sum", 0.0)
        self.sum_sq += other.get("sum_sq", 0.0)
        self.levels.update(other.get("levels", {}))
        self.levels_truncated |= other.get("levels_truncated", False)
        self.non_integer |= other.get("non_integer", False)
        if other.get("sketch"):
            self.sketch = merge([self.sketch, other["sketch"]])


Profile = dict[str, dict[str, ColumnStats]]
"""split name -> column -> stats."""


def _column_summary(col: pa.ChunkedArray | pa.Array, want_levels: bool, force_levels: bool = False) -> dict[str, Any]:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    out: dict[str, Any] = {"count": len(col), "nulls": col.null_count}
    t = col.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        num = pc.cast(col, pa.float64())
        # NaN counts as missing, like a null: XGBoost and the contract treat both alike.
        if pa.types.is_floating(t):
            nan = pc.sum(pc.is_nan(num)).as_py() or 0
            out["nulls"] += nan
            num = pc.if_else(pc.is_nan(num), None, num)
        mm = pc.min_max(num)
        out["min"], out["max"] = mm["min"].as_py(), mm["max"].as_py()
        out["sum"] = pc.sum(num).as_py() or 0.0
        out["sum_sq"] = pc.sum(pc.multiply(num, num)).as_py() or 0.0
        if pa.types.is_floating(t):
            valid = num.drop_null()
            out["non_integer"] = bool(len(valid)) and not pc.all(pc.equal(pc.floor(valid), valid)).as_py()
    # Nested columns (lists, structs) have no levels (Arrow cannot count them); the contract
    # then names them as unsupported instead of the profile step crashing.
    if not want_levels or pa.types.is_timestamp(t) or pa.types.is_nested(t):
        return out
    valid = col.drop_null()
    if force_levels or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t):
        cap = _MAX_LEVELS_PER_BATCH
    elif len(pc.unique(valid)) <= _MAX_NUMERIC_LEVELS:
        cap = _MAX_NUMERIC_LEVELS  # a numeric label may still be a class label (0/1, 1..5)
    else:
        out["levels_truncated"] = True
        out["sketch"] = sketch(hash_column(valid))
        return out
    vc = pc.value_counts(valid)
    values, counts = vc.field("values").to_pylist(), vc.field("counts").to_pylist()
    if len(values) > cap:
        order = np.argsort(counts)[::-1][:cap]
        values, counts = [values[i] for i in order], [counts[i] for i in order]
        out["levels_truncated"] = True
        out["sketch"] = sketch(hash_column(valid))
    out["levels"] = {_fmt(v): int(c) for v, c in zip(values, counts)}
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


def profile_batch(
    batch: pa.Table,
    split_column: str | None,
    level_columns: frozenset[str] = frozenset(),
    id_column: str | None = None,
) -> dict[str, np.ndarray]:
    """Map step: one JSON summary per split present in the batch; with ``id_column``, also the
    64-bit hashes of its non-null values (the duplicate-id screen, :class:`ProfilePass`)."""
    ids = b""
    if id_column is not None and id_column in batch.column_names:
        ids = hash_column(batch.column(id_column).drop_null()).tobytes()
    groups: dict[str, pa.Table] = {}
    if split_column and split_column in batch.column_names:
        codes = batch.column(split_column).to_numpy()
        data = batch.drop_columns([split_column])
        for code in np.unique(codes):
            groups[SPLIT_NAMES[int(code)]] = data.filter(pa.array(codes == code))
    else:
        groups["all"] = batch
    out = {}
    for name, table in groups.items():
        out[name] = {c: _column_summary(table.column(c), True, c in level_columns) for c in table.column_names}
    return {"profile": np.array([json.dumps(out)], dtype=object), "id_hashes": np.array([ids], dtype=object)}


SPLIT_NAMES = ("train", "valid", "test")


# The duplicate-id screen keeps at most this many hashes on the driver (8 bytes each); beyond it,
# the quality stage counts duplicates exactly with a distributed group-by instead.
_MAX_SCREENED_IDS = 32_000_000


@dataclass
class ProfilePass:
    """What one streaming pass over the rows yields: per-split statistics and the id screen."""

    profile: Profile
    repeated_ids: int | None = None
    """Id hashes seen more than once: 0 proves every non-null id unique (equal ids hash alike); more
    may be hash collisions, so the quality stage then counts exactly. ``None``: not screened."""


def profile_pass(
    ds, split_column: str | None = None, level_columns: list[str] | None = None, id_column: str | None = None
) -> ProfilePass:
    """Reduce step: merge the per-batch summaries on the driver (and screen the ids for repeats).

    Args:
        ds: the Ray Dataset.
        split_column: group statistics by this split-code column.
        level_columns: numeric columns to count levels for (declared categoricals).
        id_column: screen this column for repeated values in the same pass.
    """
    summaries = ds.map_batches(
        profile_batch,
        batch_format="pyarrow",
        fn_kwargs={
            "split_column": split_column,
            "level_columns": frozenset(level_columns or []),
            "id_column": id_column,
        },
        batch_size=None,
        zero_copy_batch=True,
    )
    merged: Profile = {}
    hashes: list[np.ndarray] | None = [] if id_column else None
    held = 0
    for row in summaries.iter_rows():
        for split, cols in json.loads(row["profile"]).items():
            target = merged.setdefault(split, {})
            for col, s in cols.items():
                target.setdefault(col, ColumnStats()).merge(s)
        if hashes is not None:
            part = np.frombuffer(row["id_hashes"], dtype=np.uint64)
            held += len(part)
            if held > _MAX_SCREENED_IDS:
                hashes = None
            else:
                hashes.append(part)
    repeated = None
    if hashes is not None:
        _, counts = np.unique(np.concatenate(hashes) if hashes else np.empty(0, np.uint64), return_counts=True)
        repeated = int((counts > 1).sum())
    return ProfilePass(merged, repeated)


def compute_profile(ds, split_column: str | None = None, level_columns: list[str] | None = None) -> Profile:
    """Per-split column statistics (:func:`profile_pass` without the id screen)."""
    return profile_pass(ds, split_column, level_columns).profile


def combine(profile: Profile) -> dict[str, ColumnStats]:
    """All splits together (for task inference and quality checks)."""
    total: dict[str, ColumnStats] = {}
    for cols in profile.values():
        for col, s in cols.items():
            t = total.setdefault(col, ColumnStats())
            t.merge(
                {
                    "count": s.count,
                    "nulls": s.nulls,
                    "min": s.min,
                    "max": s.max,
                    "sum": s.sum,
                    "sum_sq": s.sum_sq,
                    "levels": s.levels,
                    "levels_truncated": s.levels_truncated,
                    "non_integer": s.non_integer,
                    "sketch": s.sketch,
                }
            )
    return total
