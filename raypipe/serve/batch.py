"""Batch scoring: Parquet in, Parquet with predictions out, on Ray Data with an actor pool.

The driver downloads and verifies the model once and shares it with the pool through the
object store. Input is read like training data (``ingest.read``: whole files per task, no
planning pass). Each actor scores a block with the same preprocessor the server uses
(``Bundle.predict_table``: Arrow -> float32 matrix -> ``inplace_predict``), so offline and
online scores agree, and writes it itself: scored rows never travel back through the object
store to separate write tasks (measured: that hand-off and Ray's partitioned write took
2 s of 4.4 s per 2 M rows). Output keeps every input column and adds ``prediction`` (str)
and ``score`` (float64, as in the prediction log), partitioned like the input (its hive
keys) unless told otherwise.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from raypipe.bundle import Bundle
from raypipe.data.schema import Contract
from raypipe.errors import DataError
from raypipe.registry import load_model
from raypipe.serve.predlog import prediction_columns


@dataclass(frozen=True)
class _ModelCopy:
    """Where the driver put its verified copy of the pinned model (small: sent with each actor)."""

    uri: str
    tracking_uri: str | None
    folder: str
    node_id: str
    hashes: dict[str, str]


class _ScoreWriter:
    """The Ray Data actor: scores each block and writes it, so scored rows never cross the object store.

    On the driver's node an actor loads the driver's downloaded copy (verified against the same
    sha256 pins, no MLflow import); elsewhere it downloads the pinned version itself.
    """

    def __init__(self, model: _ModelCopy, output_dir: str, partition_cols: list[str]) -> None:
        import ray

        if ray.get_runtime_context().get_node_id() == model.node_id and Path(model.folder).is_dir():
            self._bundle = Bundle.load(model.folder, expected=model.hashes)
        else:
            self._bundle = load_model(model.uri, model.tracking_uri).bundle
        self._out, self._keys = output_dir, partition_cols
        self._token = uuid.uuid4().hex[:12]
        self._blocks = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        scored = score_table(self._bundle, batch)
        name = f"part-{self._token}-{self._blocks:05d}"
        self._blocks += 1
        write_scored(scored, self._out, self._keys, name)
        return pa.table({"rows": [scored.num_rows]})


def write_scored(table: pa.Table, output_dir: str, partition_cols: list[str], name: str) -> None:
    """Write one scored block under ``output_dir``: hive folders for ``partition_cols`` (values leave the file)."""
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    if not partition_cols:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, Path(output_dir, f"{name}.parquet"))
        return
    pads.write_dataset(
        table,
        output_dir,
        format="parquet",
        partitioning=partition_cols,
        partitioning_flavor="hive",
        basename_template=f"{name}-{{i}}.parquet",
        existing_data_behavior="overwrite_or_ignore",  # other blocks write into the same folders
    )


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


def score_parquet(
    model_uri: str,
    tracking_uri: str | None,
    input_path: str,
    output_dir: str,
    *,
    actors: int = 2,
    cpus_per_actor: float = 0.5,
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
        cpus_per_actor: CPUs each actor reserves (leave some for the read tasks).
        partition_cols: output partition columns; default the input's hive keys.

    Raises:
        DataError: the input lacks contract columns.
        RegistryError: the model cannot be loaded or fails verification.

    Example:
        >>> score_parquet("models:/flights@champion", uri, "data/", "scored/")  # doctest: +SKIP
    """
    import ray

    from raypipe.serve.deploy import pin_model_uri

    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"output folder '{output_dir}' is not empty; pass a new or empty folder")
    pinned = pin_model_uri(model_uri, tracking_uri)  # every actor scores with the same version
    with tempfile.TemporaryDirectory(prefix="raypipe-score-") as tmp:
        loaded = load_model(pinned, tracking_uri, dst=tmp)  # downloaded and verified once, here
        node = ray.get_runtime_context().get_node_id()
        model = _ModelCopy(pinned, tracking_uri, str(loaded.folder), node, loaded.bundle.hashes)
        return _score(model, loaded.bundle.contract, input_path, out, partition_cols, actors, cpus_per_actor)


def _score(
    model: _ModelCopy,
    contract: Contract,
    input_path: str,
    out: Path,
    partition_cols: list[str] | None,
    actors: int,
    cpus_per_actor: float,
) -> ScoreResult:
    import ray.data

    from raypipe.data import ingest

    t0 = time.perf_counter()
    source = ingest.discover(input_path)
    missing = [c for c in contract.feature_names if c not in source.schema.names]
    if missing:
        raise DataError(
            f"'{input_path}' lacks the model's feature column(s) {missing}; the model was trained on "
            f"{contract.feature_names}"
        )
    keys = list(source.partition_columns) if partition_cols is None else partition_cols
    unknown = [k for k in keys if k not in source.schema.names]
    if unknown:
        raise DataError(f"partition column(s) {unknown} not in '{input_path}'; available: {source.schema.names}")
    # Whole blocks per call (one file's rows or a row group): one predict and one file each.
    written = ingest.read(source).map_batches(
        _ScoreWriter,
        fn_constructor_args=(model, str(out), keys),
        batch_format="pyarrow",
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        zero_copy_batch=True,
    )
    rows = sum(int(b["rows"].sum()) for b in written.iter_batches(batch_format="numpy", batch_size=None))
    return ScoreResult(model.uri, rows, str(out), time.perf_counter() - t0)
