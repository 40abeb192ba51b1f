"""Broken or empty data fails with the right RaypipeError, naming the file or column, and
registers nothing. In process, on the session Ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _mlflow_store import sqlite_store

from raypipe.errors import DataError, RaypipeError, SchemaError
from raypipe.pipeline.run import run_pipeline

pytestmark = pytest.mark.integration


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pa.table(
        {
            "x": x,
            "z": rng.integers(0, 100, n),
            "c": pa.array(rng.choice(["a", "b", "c"], n)),
            "y": (x + rng.normal(size=n)) > 0,
        }
    )


def _write_files(folder: Path, n: int = 2000, names: str = "abc", **write_kwargs) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(names):
        path = folder / f"{name}.parquet"
        pq.write_table(_table(n, seed=i), path, **write_kwargs)
        paths.append(path)
    return paths


def _fail(make_config, tmp_path: Path, uri: str, data: dict, expected: type[RaypipeError]) -> RaypipeError:
    cfg = make_config(tmp_path / "work", data, train={"num_boost_round": 5}, serve={"enabled": False})
    with pytest.raises(RaypipeError) as exc:
        run_pipeline(cfg, tracking_uri=uri)
    assert type(exc.value) is expected, f"{type(exc.value).__name__}: {exc.value}"
    assert "\n" not in str(exc.value)
    return exc.value


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow store for the module (creating a SQLite store costs a second): no test may register."""
    return sqlite_store(tmp_path_factory.mktemp("bad-data-mlflow"))


@pytest.fixture(autouse=True)
def _nothing_registered(ray_session, tracking_uri: str, registered_models):
    yield
    assert registered_models(tracking_uri) == []


@pytest.mark.parametrize("which", [0, 2], ids=["first-file", "last-file"])
def test_truncated_file(make_config, tmp_path: Path, tracking_uri: str, which: int) -> None:
    paths = _write_files(tmp_path / "data")
    data = paths[which].read_bytes()
    paths[which].write_bytes(data[: len(data) // 2])
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(tmp_path / "data"), "label": "y"}, DataError)
    assert paths[which].name in str(err)
    assert not any(p.name in str(err) for i, p in enumerate(paths) if i != which)


def _corrupt_middle_of_pages(path: Path) -> None:
    """Zero bytes in the middle of the first column chunk's pages, footer untouched."""
    meta = pq.read_metadata(path)
    chunk = meta.row_group(0).column(0)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    middle = start + chunk.total_compressed_size // 2
    raw = bytearray(path.read_bytes())
    footer_start = len(raw) - 8 - meta.serialized_size
    assert middle + 64 < footer_start
    raw[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(raw))
    # The footer is intact: the metadata still reads and promises every row.
    assert pq.read_metadata(path).num_rows == meta.num_rows


def _corrupt_page_header(path: Path) -> None:
    """Overwrite the first page header of the first column chunk, footer untouched."""
    meta = pq.read_metadata(path)
    chunk = meta.row_group(0).column(0)
    start = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
    raw = bytearray(path.read_bytes())
    raw[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    assert pq.read_metadata(path).num_rows == meta.num_rows


@pytest.mark.parametrize(
    "write_kwargs, corrupt",
    [
        # Writers such as Spark/parquet-mr store page CRCs: corrupt values must fail their check.
        ({"compression": "snappy", "write_page_checksum": True}, _corrupt_middle_of_pages),
        ({"compression": "none", "write_page_checksum": True}, _corrupt_middle_of_pages),
        # Compressed pages: the codec itself detects the damage.
        ({"compression": "zstd", "column_encoding": {"x": "PLAIN"}, "use_dictionary": False}, _corrupt_middle_of_pages),
        # No CRC at all: a destroyed page header cannot be decoded.
        ({"compression": "snappy"}, _corrupt_page_header),
    ],
    ids=["crc-snappy", "crc-uncompressed", "zstd", "page-header"],
)
def test_corrupt_pages_with_intact_footer(
    make_config, tmp_path: Path, tracking_uri: str, write_kwargs, corrupt
) -> None:
    paths = _write_files(tmp_path / "data", **write_kwargs)
    corrupt(paths[1])
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(tmp_path / "data"), "label": "y"}, DataError)
    assert "corrupt Parquet file 'b.parquet'" in str(err)
    assert err.context["files"] == [str(paths[1])]


def test_column_type_differs_between_files(make_config, tmp_path: Path, tracking_uri: str) -> None:
    paths = _write_files(tmp_path / "data")
    odd = _table(2000, seed=1)
    odd = odd.set_column(1, "z", pa.array([str(v) for v in odd.column("z").to_pylist()]))
    pq.write_table(odd, paths[1])
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(tmp_path / "data"), "label": "y"}, SchemaError)
    msg = str(err)
    assert "'b.parquet'" in msg and "column 'z'" in msg and "string" in msg and "integer" in msg
    assert err.context["column"] == "z" and err.context["file"] == str(paths[1])


def test_missing_label_column(make_config, tmp_path: Path, tracking_uri: str) -> None:
    _write_files(tmp_path / "data")
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(tmp_path / "data"), "label": "target"}, SchemaError)
    assert "label column 'target'" in str(err)
    assert "x, z, c, y" in str(err)  # the available columns
    assert err.context["column"] == "target"


def test_all_null_feature_column(make_config, tmp_path: Path, tracking_uri: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(2):
        table = _table(2000, seed=i).append_column("sensor", pa.nulls(2000, pa.float64()))
        pq.write_table(table, folder / f"part-{i}.parquet")
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(folder), "label": "y"}, DataError)
    assert "'sensor'" in str(err) and "entirely null" in str(err)


def _hive_by_month(folder: Path, months=(1, 2, 3)) -> Path:
    for m in months:
        (folder / f"month={m}").mkdir(parents=True)
        pq.write_table(_table(1000, seed=m), folder / f"month={m}" / "part-0.parquet")
    return folder


def test_partition_filter_matching_nothing(make_config, tmp_path: Path, tracking_uri: str) -> None:
    folder = _hive_by_month(tmp_path / "data")
    data = {"path": str(folder), "label": "y", "filter": "month == 13"}
    err = _fail(make_config, tmp_path, tracking_uri, data, DataError)
    assert "'month == 13'" in str(err) and "matches no partition" in str(err) and str(folder) in str(err)


def test_row_filter_matching_nothing_is_an_empty_dataset(make_config, tmp_path: Path, tracking_uri: str) -> None:
    folder = _hive_by_month(tmp_path / "data")
    data = {"path": str(folder), "label": "y", "filter": "x > 1000"}
    err = _fail(make_config, tmp_path, tracking_uri, data, DataError)
    assert "empty" in str(err) and "data.filter" in str(err)


def test_empty_dataset(make_config, tmp_path: Path, tracking_uri: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("a", "b"):
        pq.write_table(_table(0), folder / f"{name}.parquet")
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(folder), "label": "y"}, DataError)
    assert "empty (0 rows)" in str(err) and str(folder) in str(err)


def test_missing_data_path(make_config, tmp_path: Path, tracking_uri: str) -> None:
    missing = tmp_path / "nowhere"
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(missing), "label": "y"}, DataError)
    assert f"'{missing}' does not exist" in str(err)


def _run_unregistered(make_config, tmp_path: Path, uri: str, data: dict):
    cfg = make_config(
        tmp_path / "work",
        data,
        train={"num_boost_round": 5},
        serve={"enabled": False},
        register={"enabled": False},
        report={"enabled": False},
    )
    return run_pipeline(cfg, tracking_uri=uri)


def test_a_column_only_some_files_have_is_named(make_config, tmp_path: Path, tracking_uri: str) -> None:
    paths = _write_files(tmp_path / "data")
    pq.write_table(_table(2000, seed=1).append_column("extra", pa.array(np.arange(2000))), paths[1])
    data = {"path": str(tmp_path / "data"), "label": "y"}
    result = _run_unregistered(make_config, tmp_path, tracking_uri, data)
    drift = [n for n in result.notes if "'extra'" in n]
    assert drift == ["column 'extra' is only in b.parquet, not in a.parquet, c.parquet: read as null where missing"]

    err = _fail(make_config, tmp_path, tracking_uri, {**data, "quality": {"schema_drift": "fail"}}, SchemaError)
    assert "'extra'" in str(err) and "b.parquet" in str(err) and err.context["column"] == "extra"


def test_non_parquet_files_are_listed(make_config, tmp_path: Path, tracking_uri: str) -> None:
    _write_files(tmp_path / "data")
    (tmp_path / "data" / "part-1.csv").write_text("x,z,c,y\n1,2,a,true\n")
    result = _run_unregistered(make_config, tmp_path, tracking_uri, {"path": str(tmp_path / "data"), "label": "y"})
    assert "1 non-Parquet file(s) under data.path left out: part-1.csv" in result.notes

    only_csv = tmp_path / "csv"
    only_csv.mkdir()
    (only_csv / "part-1.csv").write_text("x,y\n1,true\n")
    err = _fail(make_config, tmp_path, tracking_uri, {"path": str(only_csv), "label": "y"}, DataError)
    assert "it holds only other files (part-1.csv)" in str(err)


def test_rows_with_a_null_label_are_left_out_of_the_counts(make_config, tmp_path: Path, tracking_uri: str) -> None:
    paths = _write_files(tmp_path / "data")
    t = _table(2000, seed=2)
    pq.write_table(t.set_column(t.schema.get_field_index("y"), "y", pa.nulls(2000, pa.bool_())), paths[2])
    result = _run_unregistered(make_config, tmp_path, tracking_uri, {"path": str(tmp_path / "data"), "label": "y"})
    assert sum(result.rows.values()) == 4000, result.rows
    [note] = [n for n in result.notes if "null label" in n]
    assert note.startswith("2,000 rows with a null label left out (train ")
