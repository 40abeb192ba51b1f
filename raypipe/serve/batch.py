"""Batch scoring: Parquet in, Parquet with predictions out, on Ray Data with an actor pool.

Each actor loads (and verifies) the model once; batches are scored with the same
preprocessor the server uses (``Bundle.predict_table``: Arrow -> float32 matrix ->
``inplace_predict``), so offline and online scores agree. Output keeps every input
column and adds ``prediction`` (str) and ``score`` (float64, as in the prediction log),
partitioned like the input (its hive keys) unless told otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from raypipe.errors import DataError
from raypipe.registry import load_model
from raypipe.serve.predlog import prediction_columns


class _Scorer:
    """The Ray Data actor: one verified model per actor, one vectorised predict per batch."""

    def __init__(self, model_uri: str, tracking_uri: str | None) -> None:
        self._bundle = load_model(model_uri, tracking_uri).bundle

    def __call__(self, batch: pa.Table) -> pa.Table:
        return score_table(self._bundle, batch)


def score_table(bundle, table: pa.Table) -> pa.Table:
    """``table`` plus ``prediction`` and ``score`` columns (the in-process path, shared with the actors)."""
    prediction, score = prediction_columns(bundle.contract.label, bundle.predict_table(table))
    return table.append_column("prediction", prediction).append_column("score", score)


@dataclass(frozen=True)
class ScoreResult:
    model_uri: str
    rows: int
    output: str
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def hive_keys(path: str | Path) -> list[str]:
    """Partition keys of a hive-partitioned folder (``month=1/...`` -> ``["month"]``), from its first file."""
    root = Path(path)
    if not root.is_dir():
        return []
    first = next(iter(sorted(root.rglob("*.parquet"))), None)
    if first is None:
        return []
    return [p.split("=", 1)[0] for p in first.relative_to(root).parts[:-1] if "=" in p]


def score_parquet(
    model_uri: str,
    tracking_uri: str | None,
    input_path: str,
    output_dir: str,
    *,
    actors: int = 2,
    cpus_per_actor: float = 0.5,
    batch_size: int = 16_384,
    partition_cols: list[str] | None = None,
) -> ScoreResult:
    """Score a Parquet folder with an actor pool and write partitioned Parquet.

    Needs a connected Ray (``runtime.connect``).

    Args:
        model_uri: ``models:/name@alias``, ``models:/name/3`` or a bundle folder.
        tracking_uri: the MLflow store.
        input_path: Parquet file or (hive-partitioned) folder holding every contract feature column.
        output_dir: where the scored Parquet goes.
        actors: size of the actor pool.
        cpus_per_actor: CPUs each actor reserves (leave some for the read and write tasks).
        batch_size: rows per ``predict`` call.
        partition_cols: output partition columns; default the input's hive keys.

    Raises:
        DataError: the input lacks contract columns.
        RegistryError: the model cannot be loaded or fails verification.

    Example:
        >>> score_parquet("models:/flights@champion", uri, "data/", "scored/")  # doctest: +SKIP
    """
    import ray.data

    from raypipe.serve.deploy import pin_model_uri

    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output folder '{output_dir}' is not empty; pass a new or empty folder")
    pinned = pin_model_uri(model_uri, tracking_uri)  # every actor scores with the same version
    contract = load_model(pinned, tracking_uri).bundle.contract  # verify once, fail early
    t0 = time.perf_counter()
    ds = ray.data.read_parquet(input_path)
    missing = [c for c in contract.feature_names if c not in ds.schema().names]
    if missing:
        raise DataError(
            f"'{input_path}' lacks the model's feature column(s) {missing}; the model was trained on "
            f"{contract.feature_names}"
        )
    keys = hive_keys(input_path) if partition_cols is None else partition_cols
    scored = ds.map_batches(
        _Scorer,
        fn_constructor_args=(pinned, tracking_uri),
        batch_format="pyarrow",
        batch_size=batch_size,
        concurrency=actors,
        num_cpus=cpus_per_actor,
        zero_copy_batch=True,
    )
    scored.write_parquet(output_dir, partition_cols=keys or None)
    seconds = time.perf_counter() - t0
    rows = sum(m.num_rows or 0 for m in _metadata(output_dir))
    return ScoreResult(pinned, rows, output_dir, seconds)


def _metadata(folder: str):
    import pyarrow.parquet as pq

    for f in sorted(Path(folder).rglob("*.parquet")):
        yield pq.ParquetFile(f).metadata
