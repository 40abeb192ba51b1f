"""Target and frequency encoding of high-cardinality categoricals, out-of-fold on the train split.

A categorical with more than ``features.native_max_levels`` train levels becomes two kinds of
numeric inputs: the level's train-split row count (``<col>__freq``) and its smoothed mean label
(``<col>__te``; one per class for multiclass, ``<col>__te=<class>``). Measured against native codes
capped at 512, all levels as native codes, and frequency alone, on a 4,000-level string, repeated
user/item ids and the flights ``tailnum`` (``benchmarks/bench_encodings.py``), target + frequency
was the best on all three.

No leakage: statistics come from the train split only, and a train row's target encoding leaves
out its own fold (5 folds by a hash of the row, as stable as the split). Valid and test rows, and
requests at serving time, use the encoding of every train row. Unseen levels get the prior.

    stats = fit_dataset(train_rows, prep, columns, key, seed)     # one Ray Data pass over train rows
    encode(stats, column, values, folds=None) -> (frequency, target)               # at transform time
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FOLDS = 5
SMOOTHING = 20.0
"""Pseudo-rows of the prior blended into each level's mean: a level seen twice stays near the prior."""
_FOLD_SALT = 0x5EED
_PRIOR = "__prior__"


@dataclass
class ColumnTargets:
    """What one column's encoding needs, as plain lists (JSON in the preprocessor)."""

    levels: list[str]
    count: list[float]
    """Train rows per level."""
    sums: list[list[float]]
    """Per output (one, or one per class): the label sum per level."""
    fold_count: list[list[float]]
    """Per fold: rows per level."""
    fold_sums: list[list[list[float]]]
    """Per fold, per output: the label sum per level."""
    prior: list[float]
    """Per output: the train-split mean label."""

    def to_dict(self) -> dict:
        return asdict(self)


def fold_of(table: pa.Table, key: list[str], seed: int) -> np.ndarray:
    """A fold (0..FOLDS-1) per row from a hash of its key columns: the same row, the same fold."""
    from raypipe.data.split import row_hash

    return (row_hash(table, key, seed ^ _FOLD_SALT) % np.uint64(FOLDS)).astype(np.int64)


def _as_strings(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    return col


def _outputs(y: np.ndarray, n_outputs: int) -> np.ndarray:
    """Label as (rows, outputs): the value (binary, regression) or a one-hot of the class."""
    if n_outputs == 1:
        return y.reshape(-1, 1).astype(np.float64)
    return (y.reshape(-1, 1) == np.arange(n_outputs)).astype(np.float64)


def partial(
    batch: pa.Table,
    columns: dict[str, list[str]],
    encode_label: Callable[[pa.Table], np.ndarray],
    n_outputs: int,
    folds: np.ndarray,
) -> dict[str, np.ndarray]:
    """Map step: per column, an array (FOLDS, 1 + outputs, levels) of row counts and label sums."""
    y = encode_label(batch)
    keep = ~np.isnan(y)
    out = {_PRIOR: np.concatenate([[keep.sum()], _outputs(y[keep], n_outputs).sum(axis=0)])}
    for name, levels in columns.items():
        idx = pc.index_in(_as_strings(batch.column(name)), value_set=pa.array(levels, pa.string()))
        idx = np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.float64)
        ok = keep & ~np.isnan(idx)
        acc = np.zeros((FOLDS, 1 + n_outputs, len(levels)))
        cell = folds[ok] * len(levels) + idx[ok].astype(np.int64)
        acc[:, 0, :] = np.bincount(cell, minlength=FOLDS * len(levels)).reshape(FOLDS, -1)
        ys = _outputs(y[ok], n_outputs)
        for j in range(n_outputs):
            acc[:, 1 + j, :] = np.bincount(cell, weights=ys[:, j], minlength=FOLDS * len(levels)).reshape(FOLDS, -1)
        out[name] = acc
    return out


def finish(acc: dict[str, np.ndarray], columns: dict[str, list[str]]) -> dict[str, ColumnTargets]:
    """Reduce step's result: per column, the totals and per-fold statistics."""
    rows, *label_sums = acc[_PRIOR]
    prior = np.asarray(label_sums) / max(rows, 1.0)
    out = {}
    for name, levels in columns.items():
        a = acc[name]
        total = a.sum(axis=0)
        out[name] = ColumnTargets(
            levels=list(levels),
            count=total[0].tolist(),
            sums=total[1:].tolist(),
            fold_count=a[:, 0].tolist(),
            fold_sums=a[:, 1:].tolist(),
            prior=[float(p) for p in prior],
        )
    return out


def merge(parts: Iterable[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    total: dict[str, np.ndarray] = {}
    for part in parts:
        for name, a in part.items():
            total[name] = a if name not in total else total[name] + a
    return total


def encode(
    t: ColumnTargets, col: pa.ChunkedArray | pa.Array, folds: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """``(frequency (rows,), target (rows, outputs))`` for a column's values; with ``folds``
    (train rows), each row's target leaves out its own fold."""
    idx = pc.index_in(_as_strings(col), value_set=pa.array(t.levels, pa.string()))
    idx = np.asarray(idx.to_numpy(zero_copy_only=False), dtype=np.float64)
    seen = ~np.isnan(idx)
    at = np.where(seen, idx, 0).astype(np.int64)
    count = np.asarray(t.count)[at]
    sums = np.asarray(t.sums).T[at]  # (rows, outputs)
    if folds is not None:
        fold_count = np.asarray(t.fold_count)[folds, at]
        fold_sums = np.asarray(t.fold_sums)[folds, :, at]  # (rows, outputs)
        count, sums = count - fold_count, sums - fold_sums
    prior = np.asarray(t.prior)
    target = (sums + SMOOTHING * prior) / (count + SMOOTHING)[:, None]
    target[~seen] = prior
    frequency = np.where(seen, np.asarray(t.count)[at], 0.0)
    return frequency.astype(np.float32), target.astype(np.float32)


def n_outputs(label) -> int:
    """One target per class for multiclass, else one (P(positive), or the mean value)."""
    return len(label.classes or []) if label.task == "multiclass" else 1


def fit_dataset(train_rows, prep, columns: dict[str, list[str]], key: list[str], seed: int) -> dict[str, ColumnTargets]:
    """One Ray Data pass over the raw train rows: counts and label sums per level and fold.

    Only the key, label and encoded columns are read (Parquet is columnar); each task returns a few
    arrays of ``FOLDS x outputs x levels`` numbers, which the driver adds up.
    """
    import json

    wanted = list(dict.fromkeys([*key, *columns, prep.label.name]))
    k = n_outputs(prep.label)

    def task(batch: pa.Table) -> dict[str, np.ndarray]:
        parts = partial(batch, columns, prep.encode_label, k, fold_of(batch, key, seed))
        return {"part": np.array([json.dumps({k: v.tolist() for k, v in parts.items()})], dtype=object)}

    rows = train_rows.select_columns(wanted).map_batches(task, batch_format="pyarrow", batch_size=None).iter_rows()
    acc = merge({k: np.asarray(v) for k, v in json.loads(row["part"]).items()} for row in rows)
    return finish(acc, columns)
