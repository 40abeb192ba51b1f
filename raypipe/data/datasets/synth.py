"""A synthetic tabular dataset of any size, for scale tests and drift tests.

Rows are generated chunk by chunk, so memory stays bounded no matter how many
rows are asked for. Each chunk has its own random generator seeded by
`(seed, chunk_index)`, and inside a chunk every column draws from its own
child stream: output is deterministic, does not depend on the order chunks are
written, and drifting one column cannot perturb any other column.

The label's dependence on the features (the "concept") is fixed and does not
depend on `seed`, so datasets written with different seeds are different
samples of the same task (e.g. a train and a test set).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SYNTH_LABEL = "label"
TASKS = ("binary", "regression", "multiclass")
MULTICLASS_LEVELS = ("a", "b", "c")

# Seed for the task definition (level effects), deliberately independent of
# the data seed so every seed samples the same task.
_CONCEPT_SEED = 20_240_917
# Fraction of mass moved to the rarest level by a categorical drift of strength 1.
_CAT_DRIFT_MAX_MASS = 0.9


@dataclass(frozen=True)
class _NumericSpec:
    """One numeric column: distribution family, parameters, and null rate."""

    name: str
    kind: str  # "normal" | "lognormal" | "uniform"
    a: float  # normal: loc, lognormal: mu, uniform: low
    b: float  # normal: scale, lognormal: sigma, uniform: high
    null_frac: float

    @property
    def std(self) -> float:
        """Population standard deviation, the unit for drift shifts."""
        if self.kind == "normal":
            return self.b
        if self.kind == "lognormal":
            return math.sqrt((math.exp(self.b**2) - 1.0) * math.exp(2 * self.a + self.b**2))
        return (self.b - self.a) / math.sqrt(12.0)


@dataclass(frozen=True)
class _CategoricalSpec:
    """One categorical column: level names, level probabilities and null rate."""

    name: str
    levels: tuple[str, ...]
    probs: np.ndarray
    null_frac: float


def _numeric_specs(n: int) -> list[_NumericSpec]:
    specs = []
    for i in range(n):
        kind = ("normal", "lognormal", "uniform")[i % 3]
        if kind == "normal":
            a, b = float(i % 7) - 3.0, 1.0 + (i % 5)
        elif kind == "lognormal":
            a, b = 0.5 * (i % 3), 0.5 + 0.1 * (i % 4)
        else:
            a, b = -float(i), 10.0 + i
        # Every fourth column (starting with num_1) has ~2% nulls.
        specs.append(_NumericSpec(f"num_{i}", kind, a, b, 0.02 if i % 4 == 1 else 0.0))
    return specs


def _categorical_specs(k: int) -> list[_CategoricalSpec]:
    specs = []
    for j in range(k):
        n_levels = 5 + (j * 15) % 46  # 5, 20, 35, 50, 19, ... always within 5..50
        # Zipf-like frequencies: a few common levels and a long rare tail, as in real data.
        weights = 1.0 / np.arange(1, n_levels + 1) ** 1.1
        levels = tuple(f"c{j}_{lvl}" for lvl in range(n_levels))
        specs.append(_CategoricalSpec(f"cat_{j}", levels, weights / weights.sum(), 0.03 if j % 2 else 0.0))
    return specs


def _level_effects(specs: list[_CategoricalSpec]) -> list[np.ndarray]:
    """Per-level additive effects on the label for the first two categoricals."""
    rng = np.random.default_rng(_CONCEPT_SEED)
    return [rng.normal(0.0, 0.8 if j == 0 else 0.5, len(s.levels)) for j, s in enumerate(specs[:2])]


def _validate_drift(
    drift: dict[str, float] | None,
    numeric: list[_NumericSpec],
    categorical: list[_CategoricalSpec],
) -> dict[str, float]:
    drift = dict(drift or {})
    known = {s.name for s in numeric} | {s.name for s in categorical}
    for name, strength in drift.items():
        if name not in known:
            raise ValueError(
                f"drift names unknown column {name!r}; driftable columns are "
                f"num_0..num_{len(numeric) - 1} and cat_0..cat_{len(categorical) - 1}"
            )
        if not math.isfinite(strength):
            raise ValueError(f"drift strength for column {name!r} must be finite, got {strength}")
    return drift


def _numeric_column(spec: _NumericSpec, rng: np.random.Generator, n: int, shift: float) -> tuple[pa.Array, np.ndarray]:
    """Return the (possibly drifted) column and its undrifted standardized values."""
    # Draw order is fixed (values, then null mask) whatever the drift, so the
    # drifted column is the undrifted one shifted, draw for draw.
    if spec.kind == "uniform":
        u = rng.random(n)
        values = spec.a + (spec.b - spec.a) * u
        z = (u - 0.5) * math.sqrt(12.0)
    else:
        z = rng.standard_normal(n)
        values = spec.a + spec.b * z if spec.kind == "normal" else np.exp(spec.a + spec.b * z)
    if shift:
        values = values + shift * spec.std
    mask = rng.random(n) < spec.null_frac if spec.null_frac else None
    return pa.array(values.astype(np.float32), mask=mask), z


def _categorical_column(
    spec: _CategoricalSpec, rng: np.random.Generator, n: int, strength: float
) -> tuple[pa.Array, np.ndarray]:
    """Return the (possibly drifted) column and its undrifted level codes."""
    u = rng.random(n)
    mask = rng.random(n) < spec.null_frac if spec.null_frac else None
    last = len(spec.levels) - 1
    base = np.minimum(np.searchsorted(np.cumsum(spec.probs), u, side="right"), last)
    codes = base
    if strength:
        # Move mass onto the rarest level: a new, dominant category is the
        # typical upstream change (new product, renamed code) that drift
        # monitors must catch.
        w = min(abs(strength), 1.0) * _CAT_DRIFT_MAX_MASS
        probs = (1.0 - w) * spec.probs
        probs[last] += w
        codes = np.minimum(np.searchsorted(np.cumsum(probs), u, side="right"), last)
    dictionary = pa.array(spec.levels, pa.string())
    return pc.take(dictionary, pa.array(codes.astype(np.int32), mask=mask)), base


def _zi(z: list[np.ndarray], i: int, n: int) -> np.ndarray:
    """Standardized numeric i, or zeros when the dataset has fewer numerics."""
    return z[i] if i < len(z) else np.zeros(n)


def _signal(z: list[np.ndarray], cat_codes: list[np.ndarray], effects: list[np.ndarray], n: int) -> np.ndarray:
    """Latent score: a few numerics (one interaction, one nonlinearity) plus level effects."""
    z0, z1, z2, z3, z4 = (_zi(z, i, n) for i in range(5))
    f = 1.0 * z0 - 0.8 * z1 + 0.6 * z2 + 0.6 * z3 * z4 + 0.5 * (z1**2 - 1.0)
    for codes, eff in zip(cat_codes, effects):
        f = f + eff[codes]
    return f


def _label(
    task: str,
    rng: np.random.Generator,
    z: list[np.ndarray],
    cat_codes: list[np.ndarray],
    effects: list[np.ndarray],
    n: int,
) -> pa.Array:
    f = _signal(z, cat_codes, effects, n)
    if task == "binary":
        # Bernoulli(sigmoid(f - 1)): ~30% positives, and the coin flip is the
        # irreducible noise that keeps the AUC well below 1.
        p = 1.0 / (1.0 + np.exp(-(f - 1.0)))
        return pa.array(rng.random(n) < p)
    if task == "regression":
        return pa.array((f + rng.normal(0.0, 1.0, n)).astype(np.float32))
    # multiclass: softmax over three scores, class "a" as the reference.
    g = 0.8 * _zi(z, 2, n) - 0.8 * _zi(z, 0, n)
    scores = np.stack([np.zeros(n), f, g + 0.3], axis=1)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    classes = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), 2)
    return pc.take(pa.array(MULTICLASS_LEVELS, pa.string()), pa.array(classes.astype(np.int32)))


def _chunk(
    seed: int,
    chunk_index: int,
    start: int,
    n: int,
    numeric: list[_NumericSpec],
    categorical: list[_CategoricalSpec],
    effects: list[np.ndarray],
    drift: dict[str, float],
    task: str,
) -> pa.Table:
    """Generate rows [start, start + n) of the dataset."""
    rng = np.random.default_rng([seed, chunk_index])
    # One child stream per column (label first): a column's draws never depend
    # on another column's parameters, which is what keeps drift local.
    label_rng, *col_rngs = rng.spawn(1 + len(numeric) + len(categorical))

    columns: dict[str, pa.Array] = {"id": pa.array(np.arange(start, start + n, dtype=np.int64))}
    z = []
    for spec, col_rng in zip(numeric, col_rngs):
        columns[spec.name], zs = _numeric_column(spec, col_rng, n, drift.get(spec.name, 0.0))
        z.append(zs)
    cat_codes = []
    for spec, col_rng in zip(categorical, col_rngs[len(numeric) :]):
        columns[spec.name], codes = _categorical_column(spec, col_rng, n, drift.get(spec.name, 0.0))
        cat_codes.append(codes)
    # The label uses undrifted inputs: drift models an upstream feature change
    # the model has not seen, and the label column must stay identical.
    columns[SYNTH_LABEL] = _label(task, label_rng, z, cat_codes[: len(effects)], effects, n)
    return pa.table(columns)


def write_synth(
    out_dir: str | Path,
    rows: int,
    *,
    seed: int = 0,
    n_numeric: int = 20,
    n_categorical: int = 4,
    rows_per_file: int = 250_000,
    partitions: int = 4,
    drift: dict[str, float] | None = None,
    task: str = "binary",
) -> Path:
    """Write a synthetic, hive-partitioned Parquet dataset with bounded memory.

    Columns: `id` (int64 row index), `num_<i>` (float32; normal, lognormal and
    uniform; some ~2% null), `cat_<j>` (strings with 5-50 levels; some null)
    and `label` (bool for "binary", float32 for "regression", "a"/"b"/"c"
    for "multiclass"). Chunk `i` goes to `part=<i % partitions>/chunk-<i:05d>.parquet`.

    Args:
        out_dir: Destination folder; must not exist or be empty.
        rows: Total number of rows.
        seed: Data seed. Same seed (and `rows_per_file`) gives identical files.
        n_numeric: Number of numeric feature columns.
        n_categorical: Number of categorical feature columns.
        rows_per_file: Rows per chunk/file; bounds peak memory.
        partitions: Number of `part=` folders.
        drift: Column name -> strength. Numeric columns are shifted by
            `strength` standard deviations; categorical columns move up to
            90% (at strength >= 1) of their mass onto their rarest level.
            All other columns, the label included, are bit-identical to the
            undrifted dataset with the same seed.
        task: "binary", "regression" or "multiclass".

    Returns:
        `out_dir` as a Path.

    Raises:
        ValueError: On bad sizes, an unknown task, or a drift key that is not a
            feature column.
        FileExistsError: If `out_dir` exists and is not empty.
    """
    if rows < 1 or rows_per_file < 1 or partitions < 1 or n_numeric < 0 or n_categorical < 0:
        raise ValueError(
            f"need rows, rows_per_file, partitions >= 1 and n_numeric, n_categorical >= 0; got "
            f"rows={rows}, rows_per_file={rows_per_file}, partitions={partitions}, "
            f"n_numeric={n_numeric}, n_categorical={n_categorical}"
        )
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    numeric = _numeric_specs(n_numeric)
    categorical = _categorical_specs(n_categorical)
    drift_map = _validate_drift(drift, numeric, categorical)
    effects = _level_effects(categorical)

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; write_synth needs a new or empty folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename at the end, so readers never see a
    # partial dataset (same filesystem, so the rename is atomic).
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for p in range(min(partitions, math.ceil(rows / rows_per_file))):
            (tmp / f"part={p}").mkdir()
        for i, start in enumerate(range(0, rows, rows_per_file)):
            n = min(rows_per_file, rows - start)
            table = _chunk(seed, i, start, n, numeric, categorical, effects, drift_map, task)
            pq.write_table(
                table,
                tmp / f"part={i % partitions}" / f"chunk-{i:05d}.parquet",
                compression="zstd",
            )
            del table  # release the chunk before generating the next one
        # os.rename replaces an empty directory on POSIX, so an empty out_dir is fine.
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
