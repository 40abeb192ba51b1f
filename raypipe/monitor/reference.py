"""The reference profile: what the training data and the test scores looked like.

Built once at training time with two Ray Data map-reduce passes over the raw
train split (pass 1: a bounded weighted sample per numeric column, category
counts and null counts; pass 2: exact counts in the sample's quantile bins),
saved as plain JSON inside the model bundle, and compared against live traffic
by ``raypipe monitor``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raypipe.data.schema import Contract
from raypipe.errors import DataError
from raypipe.monitor._binning import (
    add_into,
    categorical_counts,
    edges_from_sample,
    level_counts,
    numeric_counts,
    to_float,
)

REFERENCE_FILE = "reference.json"
FORMAT_VERSION = 1
# Quantile bins per numeric column: KS is read off their CDF, PSI merges them into 10.
FINE_BINS = 100
PLOT_BINS = 40
# Sampled values per numeric column per block, and kept on the driver per column.
_SAMPLE_PER_BLOCK = 2048
_MAX_SAMPLE = 200_000


@dataclass
class NumericRef:
    """Counts of non-null values in ``len(edges) + 1`` open-ended quantile bins."""

    count: int
    nulls: int
    edges: list[float]
    counts: list[int]
    plot_edges: list[float]
    plot_counts: list[int]
    mean: float | None = None

    @property
    def null_rate(self) -> float:
        return self.nulls / self.count if self.count else 0.0


@dataclass
class CategoricalRef:
    """Counts of the contract's levels (in order), values outside them, and nulls."""

    count: int
    nulls: int
    levels: list[str]
    counts: list[int]
    other: int = 0

    @property
    def null_rate(self) -> float:
        return self.nulls / self.count if self.count else 0.0


@dataclass
class ReferenceProfile:
    contract: dict[str, Any]
    numeric: dict[str, NumericRef]
    categorical: dict[str, CategoricalRef]
    scores: NumericRef | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    primary_metric: str | None = None
    n_rows: int = 0
    skipped: list[str] = field(default_factory=list)
    """Features not profiled (timestamps): monitoring skips them."""
    created_at: str = ""
    version: int = FORMAT_VERSION

    @property
    def contract_obj(self) -> Contract:
        return Contract.from_dict(self.contract)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_scores(
        self,
        test_scores: np.ndarray,
        test_metrics: dict[str, float] | None = None,
        primary_metric: str | None = None,
    ) -> ReferenceProfile:
        """Attach the test split's scores (and metrics) to a profile built before evaluation.

        Lets the pipeline profile the train split early (while the CPUs are free) and add the
        scores once the model exists. Scores as in :func:`build_reference`.
        """
        arr = np.asarray(test_scores, dtype=np.float64)
        self.scores = numeric_ref_from_array(arr.max(axis=1) if arr.ndim == 2 else arr)
        self.test_metrics = dict(test_metrics or self.test_metrics)
        self.primary_metric = primary_metric or self.primary_metric
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceProfile:
        if d.get("version") != FORMAT_VERSION:
            raise DataError(
                f"reference profile format {d.get('version')!r} is not {FORMAT_VERSION}; rebuild it with this raypipe"
            )
        return cls(
            contract=d["contract"],
            numeric={k: NumericRef(**v) for k, v in d["numeric"].items()},
            categorical={k: CategoricalRef(**v) for k, v in d["categorical"].items()},
            scores=NumericRef(**d["scores"]) if d.get("scores") else None,
            test_metrics=d.get("test_metrics", {}),
            primary_metric=d.get("primary_metric"),
            n_rows=d.get("n_rows", 0),
            skipped=d.get("skipped", []),
            created_at=d.get("created_at", ""),
            version=d["version"],
        )

    def save(self, path: str | Path) -> Path:
        """Write JSON; a folder gets ``reference.json`` inside it."""
        p = Path(path)
        if p.is_dir():
            p = p / REFERENCE_FILE
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        """Read a reference profile (a file, or a folder holding ``reference.json``).

        Raises:
            DataError: the file is missing, not JSON, or not a reference profile.
        """
        p = Path(path)
        if p.is_dir():
            p = p / REFERENCE_FILE
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except DataError as e:
            raise DataError(f"cannot read reference profile '{p}': {e}") from None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"cannot read reference profile '{p}': {type(e).__name__}: {e}; "
                "it is written at training time (reference.json in the model bundle)"
            ) from None


def _split_features(contract: Contract) -> tuple[list[str], list[str], list[str]]:
    numeric = [f.name for f in contract.features if f.kind == "numeric"]
    categorical = [f.name for f in contract.features if f.kind in ("categorical", "boolean")]
    skipped = [f.name for f in contract.features if f.kind == "timestamp"]
    return numeric, categorical, skipped


def _pass1(batch: pa.Table, numeric: list[str], categorical: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(len(batch))
    present = set(batch.column_names)
    out: dict[str, Any] = {"rows": len(batch), "num": {}, "cat": {}}
    out["missing"] = [c for c in numeric + categorical if c not in present]
    if out["missing"]:
        return {"summary": np.array([json.dumps(out)], dtype=object)}
    for name in numeric:
        v = to_float(batch.column(name))
        valid = v[~np.isnan(v)]
        take = valid if len(valid) <= _SAMPLE_PER_BLOCK else rng.choice(valid, _SAMPLE_PER_BLOCK, replace=False)
        weight = len(valid) / len(take) if len(take) else 0.0
        out["num"][name] = {"sample": take.tolist(), "weight": weight}
    for name in categorical:
        levels, nulls, rows = level_counts(batch.column(name))
        out["cat"][name] = {"levels": levels, "nulls": nulls, "count": rows}
    return {"summary": np.array([json.dumps(out)], dtype=object)}


def _pass2(batch: pa.Table, edges: dict[str, tuple[list, list]], cats: dict[str, list[str]]) -> dict[str, np.ndarray]:
    out: dict[str, Any] = {"num": {}, "cat": {}}
    for name, (fine, plot) in edges.items():
        out["num"][name] = numeric_counts(to_float(batch.column(name)), np.asarray(fine), np.asarray(plot))
    for name, levels in cats.items():
        out["cat"][name] = categorical_counts(batch.column(name), levels)
        out["cat"][name].pop("new_levels")
    return {"summary": np.array([json.dumps(out)], dtype=object)}


def _summaries(ds, fn, **kwargs):
    mapped = ds.map_batches(fn, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, fn_kwargs=kwargs)
    for row in mapped.iter_rows():
        yield json.loads(row["summary"])


class _Sample:
    """A bounded weighted sample: thinned (weights doubled) when it outgrows ``_MAX_SAMPLE``."""

    def __init__(self) -> None:
        self.values: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.size = 0
        self._rng = np.random.default_rng(0)

    def add(self, values: list[float], weight: float) -> None:
        self.values.append(np.asarray(values, dtype=np.float64))
        self.weights.append(np.full(len(values), weight))
        self.size += len(values)
        if self.size > _MAX_SAMPLE:
            v, w = np.concatenate(self.values), np.concatenate(self.weights)
            keep = self._rng.random(len(v)) < 0.5
            self.values, self.weights, self.size = [v[keep]], [w[keep] * 2.0], int(keep.sum())

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.values:
            return np.empty(0), np.empty(0)
        return np.concatenate(self.values), np.concatenate(self.weights)


def numeric_ref_from_array(values: np.ndarray) -> NumericRef:
    """A NumericRef from values already on the driver (the test scores)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    fine, plot = edges_from_sample(v[~np.isnan(v)], np.ones(int((~np.isnan(v)).sum())), FINE_BINS, PLOT_BINS)
    c = numeric_counts(v, np.asarray(fine), np.asarray(plot))
    valid = v[~np.isnan(v)]
    return NumericRef(
        count=c["count"],
        nulls=c["nulls"],
        edges=fine,
        counts=c["counts"],
        plot_edges=plot,
        plot_counts=c["plot_counts"],
        mean=float(valid.mean()) if len(valid) else None,
    )


def build_reference(
    train_raw_ds,
    contract: Contract,
    test_scores: np.ndarray | None,
    *,
    test_metrics: dict[str, float] | None = None,
    primary_metric: str | None = None,
) -> ReferenceProfile:
    """Profile the raw train split for drift monitoring.

    Args:
        train_raw_ds: Ray Dataset of the raw (not preprocessed) train rows, with
            every contract feature column.
        contract: the model's schema contract.
        test_scores: the model's scores on the test split, as serving logs them:
            P(positive) for binary, (n, k) probabilities (the row max is kept) for
            multiclass, predictions for regression. ``None`` skips prediction drift.
        test_metrics: unprefixed test metrics (``{"auc": 0.91}``), the baseline
            for live performance.
        primary_metric: the metric compared live (default: the task's).

    Returns:
        The profile; ``.save(bundle_dir)`` writes ``reference.json``.

    Raises:
        DataError: the dataset lacks a contract feature or has no rows.

    Example:
        >>> ref = build_reference(split_ds.filter(expr=col("__split__") == 0), contract, scores)
        >>> ref.save(bundle_dir)
    """
    numeric, categorical, skipped = _split_features(contract)
    # Checked per block, not with ds.schema(): a lazy read's schema can lack the hive partition
    # columns (e.g. ``month``) that its blocks do carry.
    samples = {n: _Sample() for n in numeric}
    rows = 0
    missing: set[str] = set()
    for s in _summaries(train_raw_ds, _pass1, numeric=numeric, categorical=categorical):
        rows += s["rows"]
        missing.update(s["missing"])
        for name, part in s["num"].items():
            samples[name].add(part["sample"], part["weight"])
    if missing:
        raise DataError(
            f"reference profile: the train data lacks feature column(s) {sorted(missing)}; "
            "pass the raw (not preprocessed) train split"
        )
    if rows == 0:
        raise DataError("reference profile: the train split has no rows")
    edges = {n: edges_from_sample(*samples[n].arrays(), FINE_BINS, PLOT_BINS) for n in numeric}
    # Levels: the contract's categories (what the model knows), else the train levels.
    cats = {}
    for name in categorical:
        spec = contract.feature(name)
        cats[name] = list(spec.categories) if spec.categories else (["false", "true"] if spec.kind == "boolean" else [])
    totals: dict[str, Any] = {"num": {}, "cat": {}}
    for s in _summaries(train_raw_ds, _pass2, edges=edges, cats=cats):
        add_into(totals, s)
    num_refs = {}
    for name in numeric:
        t = totals["num"].get(name, {"count": rows, "nulls": rows, "counts": [], "plot_counts": [], "sum": 0.0})
        valid = t["count"] - t["nulls"]
        num_refs[name] = NumericRef(
            count=t["count"],
            nulls=t["nulls"],
            edges=edges[name][0],
            counts=t["counts"] or [0] * (len(edges[name][0]) + 1),
            plot_edges=edges[name][1],
            plot_counts=t["plot_counts"] or [0] * (len(edges[name][1]) - 1),
            mean=t["sum"] / valid if valid else None,
        )
    cat_refs = {
        name: CategoricalRef(
            count=t["count"], nulls=t["nulls"], levels=cats[name], counts=t["counts"], other=t["other"]
        )
        for name, t in ((n, totals["cat"][n]) for n in categorical)
    }
    ref = ReferenceProfile(
        contract=contract.to_dict(),
        numeric=num_refs,
        categorical=cat_refs,
        test_metrics=dict(test_metrics or {}),
        primary_metric=primary_metric,
        n_rows=rows,
        skipped=skipped,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    return ref if test_scores is None else ref.with_scores(test_scores)
