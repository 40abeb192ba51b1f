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
