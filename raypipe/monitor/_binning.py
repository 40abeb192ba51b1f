"""Per-batch summaries shared by the reference profile and the monitor.

Both sides bin values with the same functions and the same edges, so a
reference count and a current count always mean the same thing. Every summary
is a small JSON-able dict: Ray Data tasks return them and the driver only adds
them up, so driver memory does not grow with the data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.data.profile import _fmt

# Levels not in the reference kept per batch for the report (the rest are only counted).
MAX_NEW_LEVELS = 50


def to_float(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Float64 values with nulls (and NaN) as NaN."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        col = pc.cast(pc.cast(col, pa.int64()), pa.float64())
    else:
        col = pc.cast(col, pa.float64())
    return col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def bin_index(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin ``i`` holds ``edges[i-1] <= v < edges[i]``; ``len(edges) + 1`` bins, open-ended."""
    return np.searchsorted(edges, values, side="right")


def numeric_counts(values: np.ndarray, edges: np.ndarray, plot_edges: np.ndarray) -> dict[str, Any]:
    """Counts of non-null ``values`` in the fine bins and in the (clipped) plot bins."""
    valid = np.sort(values[~np.isnan(values)])
    # Sorting once and locating the ~100 edges in it is ~3x faster than binning every value,
    # and gives the same counts as bin_index: values below edge i lie in bins 0..i.
    below = np.searchsorted(valid, edges, side="left")
    counts = np.diff(np.concatenate([[0], below, [len(valid)]]))
    # Plot bins clip: values below the first edge count in the first bin, above the last in the last.
    inner = np.searchsorted(valid, plot_edges[1:-1], side="left")
    plot = np.diff(np.concatenate([[0], inner, [len(valid)]]))
    return {
        "count": int(len(values)),
        "nulls": int(len(values) - len(valid)),
        "counts": counts.tolist(),
        "plot_counts": plot.tolist(),
        "sum": float(valid.sum()),
    }


def level_counts(col: pa.ChunkedArray | pa.Array) -> tuple[dict[str, int], int, int]:
    """(level -> count, nulls, rows); levels formatted as the data profile formats them."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    nulls = col.null_count
    if pa.types.is_floating(col.type):
        nulls += int(pc.sum(pc.is_nan(col)).as_py() or 0)
        col = pc.if_else(pc.is_nan(col), None, col)
    vc = pc.value_counts(col.drop_null())
    values, counts = vc.field("values").to_pylist(), vc.field("counts").to_pylist()
    return {_fmt(v): int(c) for v, c in zip(values, counts)}, int(nulls), len(col)


def categorical_counts(col: pa.ChunkedArray | pa.Array, levels: list[str]) -> dict[str, Any]:
    """Counts of the reference ``levels`` in order, plus everything else."""
    found, nulls, rows = level_counts(col)
    index = {lvl: i for i, lvl in enumerate(levels)}
    counts = [0] * len(levels)
    other: dict[str, int] = {}
    for lvl, c in found.items():
        if lvl in index:
            counts[index[lvl]] = c
        else:
            other[lvl] = c
    top_new = dict(sorted(other.items(), key=lambda kv: -kv[1])[:MAX_NEW_LEVELS])
    return {"count": rows, "nulls": nulls, "counts": counts, "other": sum(other.values()), "new_levels": top_new}


def add_into(total: dict[str, Any], part: dict[str, Any]) -> None:
    """Merge one summary into another: numbers and lists add, dicts merge recursively."""
    for k, v in part.items():
        if k not in total:
            total[k] = v
        elif isinstance(v, dict):
            add_into(total[k], v)
        elif isinstance(v, list):
            total[k] = [a + b for a, b in zip(total[k], v)]
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            total[k] = total[k] + v


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: np.ndarray) -> np.ndarray:
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cum = np.cumsum(w) - 0.5 * w
    return np.interp(qs * w.sum(), cum, v)


def edges_from_sample(values: np.ndarray, weights: np.ndarray, n_fine: int, n_plot: int) -> tuple[list, list]:
    """Fine quantile edges (for PSI and KS) and equal-width plot edges over the 0.5-99.5% range."""
    if len(values) == 0:
        return [], [0.0, 1.0]
    qs = np.arange(1, n_fine) / n_fine
    fine = np.unique(weighted_quantiles(values, weights, qs))
    lo, hi = weighted_quantiles(values, weights, np.array([0.005, 0.995]))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return fine.tolist(), np.linspace(lo, hi, n_plot + 1).tolist()
