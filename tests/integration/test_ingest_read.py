"""The whole-file reader: same rows and types as pyarrow's dataset scan, typed partitions, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from raypipe.data import ingest


def _write(root: Path, months: range, big_value: int | None = None) -> Path:
    for m in months:
        d = root / f"month={m}" / "region=north"
        d.mkdir(parents=True)
        n = 100 + m
        # The first file has int32 `count`, later ones int64: read as the discovered (first) type.
        count_type = pa.int32() if m == months[0] else pa.int64()
        counts = np.arange(n) if big_value is None or m != months[-1] else np.full(n, big_value)
        pq.write_table(
            pa.table({"x": pa.array(np.linspace(0, 1, n), pa.float32()), "count": pa.array(counts, count_type)}),
            d / "part-0.parquet",
        )
    return root


def test_rows_types_partitions_and_projection_match_pyarrow(ray_session, tmp_path: Path) -> None:
    root = _write(tmp_path / "data", range(1, 7))
    source = ingest.discover(str(root))
    import ray

    from raypipe.data._filesource import WholeFileParquet

    ds = ingest.read(source)
    assert isinstance(ds._logical_plan.dag.datasource, WholeFileParquet)  # enough files for whole-file tasks
    got = ds.to_arrow_refs()
    table = pa.concat_tables(ray.get(got)).sort_by([("month", "ascending"), ("x", "ascending")])
    want = (
        pads.dataset(str(root), partitioning=pads.HivePartitioning.discover(infer_dictionary=False))
        .to_table()
        .sort_by([("month", "ascending"), ("x", "ascending")])
    )
    assert table.schema == source.schema == want.schema
    assert table.schema.field("month").type == pa.int32() and table.schema.field("region").type == pa.string()
    assert table.equals(want)

    projected = ingest.read(source, ["count", "month"]).take_batch(5, batch_format="pyarrow")
    assert projected.column_names == ["count", "month"]


def test_value_that_does_not_fit_the_discovered_type_names_the_file(ray_session, tmp_path: Path) -> None:
    from raypipe.errors import DataError

    root = _write(tmp_path / "data", range(1, 7), big_value=2**40)
    source = ingest.discover(str(root))
    with pytest.raises(Exception) as info:
        ingest.read(source).materialize()
    err = info.value
    cause = getattr(err, "cause", None) or err
    assert isinstance(cause, DataError) or "DataError" in str(err)
    assert "month=6/region=north/part-0.parquet" in str(err)


@pytest.mark.parametrize("files", [2, 12], ids=["ray-reader", "whole-file"])
def test_null_partition_folder_reads_as_null_on_both_readers(
    ray_session, tmp_path: Path, files: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``k=__HIVE_DEFAULT_PARTITION__`` (pyarrow's and Hive's null folder): null, not a crash, not a level."""
    import ray

    from raypipe.data._filesource import WholeFileParquet

    n = 6_000
    k = pa.array([None if i % 10 == 0 else i % 3 for i in range(n)], pa.int64())
    c = pa.array([None if i % 7 == 0 else "ab"[i % 2] for i in range(n)])
    table = pa.table({"x": np.arange(n, dtype=np.float32), "k": k, "c": c})
    root = tmp_path / "data"
    if files == 2:  # two folders, k=1 and k=null: too few files for whole-file tasks, were they big
        parts, table = ["k"], table.filter(pa.compute.or_kleene(pa.compute.is_null(k), pa.compute.equal(k, 1)))
        monkeypatch.setattr(ingest, "_READ_TASK_BYTES", 1)  # small files are read whole: make these "big"
    else:
        parts = ["k", "c"]
    pads.write_dataset(table, root, format="parquet", partitioning=parts, partitioning_flavor="hive")
    assert (root / f"k={ingest.HIVE_NULL}").is_dir()
    source = ingest.discover(str(root))
    ds = ingest.read(source)
    assert isinstance(getattr(ds._logical_plan.dag, "datasource", None), WholeFileParquet) == (files != 2)
    got = pa.concat_tables(ray.get(ds.to_arrow_refs()))
    want = pads.dataset(str(root), partitioning=pads.HivePartitioning.discover(infer_dictionary=False)).to_table()
    assert got.num_rows == table.num_rows and got.schema == source.schema == want.schema
    for col in parts:
        assert got.column(col).null_count == want.column(col).null_count > 0
        assert sorted(got.column(col).drop_null().to_pylist()) == sorted(want.column(col).drop_null().to_pylist())
    if files == 2:  # as they are (a few KB each), two files are read whole: no Ray planning pass
        monkeypatch.undo()
        assert isinstance(getattr(ingest.read(source)._logical_plan.dag, "datasource", None), WholeFileParquet)
