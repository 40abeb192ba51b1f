"""Window parsing, date-partition pruning and the per-block map step, without Ray."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raypipe.data.ingest import HIVE_NULL
from raypipe.errors import DataError
from raypipe.monitor.collect import Plan, Window, hive_partitioning, list_files, parse_time, summarize

NOW = dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)


def test_parse_time_forms():
    assert parse_time("24h", NOW) == NOW - dt.timedelta(hours=24)
    assert parse_time("-7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_time("2026-11-20") == dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
    assert parse_time("2026-11-20T06:00+01:00").utcoffset() == dt.timedelta(hours=1)
    assert parse_time(None) is None
    with pytest.raises(DataError, match="bad time 'yesterday'.*24h"):
        parse_time("yesterday")


def test_list_files_prunes_date_partitions(tmp_path):
    tmp_path = tmp_path / ".work"  # a hidden folder above the root (.raypipe/) must not hide the logs
    for day in ("2026-11-19", "2026-11-20", "2026-11-21"):
        (tmp_path / "model=m" / f"date={day}").mkdir(parents=True)
        pq.write_table(pa.table({"x": [1]}), tmp_path / "model=m" / f"date={day}" / "part-1-abc.parquet")
    (tmp_path / "model=m" / "date=2026-11-20" / ".part-tmp.parquet").write_bytes(b"partial")  # in-flight write
    w = Window(dt.datetime(2026, 11, 20, 5, tzinfo=dt.UTC), dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    files = list_files(str(tmp_path), w)
    assert [f.split("date=")[1][:10] for f in files] == ["2026-11-20", "2026-11-21"]
    assert len(list_files(str(tmp_path), Window())) == 3
    with pytest.raises(DataError, match="no Parquet files"):
        list_files(str(tmp_path), Window(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)))
    with pytest.raises(DataError, match="does not exist.*--input"):
        list_files(str(tmp_path / "nope"), Window())


def test_summarize_counts_bins_out_of_schema_new_levels_and_window():
    ts = pa.array([0, 1000, 2000, 3000, 4000], pa.timestamp("ms", tz="UTC"))
    batch = pa.table(
        {
            "request_id": ["a", "a", "b", "c", "c"],
            "row": pa.array([0, 1, 0, 0, 1], pa.int32()),
            "ts": ts,
            "latency_ms": [5.0, 5.0, 7.0, 9.0, 9.0],
            "x": [0.5, 1.5, None, 99.0, float("nan")],
            "c": ["u", "v", "NEW", None, "u"],
        }
    )
    plan = Plan(numeric={"x": ([1.0], [0.0, 1.0, 2.0], 0.0, 10.0)}, categorical={"c": ["u", "v"]}, until_ms=3500)
    s = json.loads(summarize(batch, plan)["summary"][0])
    assert s["rows"] == 4 and s["requests"] == 3  # ts 4000 is outside the window
    x = s["num"]["x"]
    assert x["counts"] == [1, 2] and x["nulls"] == 1 and x["out_of_schema"] == 1  # 99 > max 10
    c = s["cat"]["c"]
    assert c["counts"] == [1, 1] and c["other"] == 1 and c["nulls"] == 1 and c["new_levels"] == {"NEW": 1}
    assert np.sum(s["latency_counts"]) == 3


def test_hive_partitioning_finds_features_in_trailing_key_value_folders():
    part, found = hive_partitioning("/d/a=b/data/month=7/carrier=UA/f.parquet", ["carrier", "month", "x", "a"])
    assert found == ["carrier", "month"]  # `a=b` is above a plain folder: not a partition
    assert part.base_dir == "/d/a=b/data" and part.field_types == {"carrier": str, "month": str}
    part, found = hive_partitioning("s3://bucket/logs/month=7/f.parquet", ["month"])
    assert found == ["month"] and part.base_dir == "s3://bucket/logs"
    assert hive_partitioning("/d/model=m/date=2026-11-20/p.parquet", ["x"]) == (None, [])


def test_summarize_types_folder_values_and_reads_hive_null_as_null():
    batch = pa.table({"month": ["1", "7", HIVE_NULL, "12"], "carrier": ["UA", HIVE_NULL, "B6", "UA"]})
    plan = Plan(
        numeric={"month": ([6.5], [0.0, 6.5, 13.0], 1.0, 12.0)},
        categorical={"carrier": ["UA", "B6"]},
        folder_columns=["month", "carrier"],
    )
    s = json.loads(summarize(batch, plan)["summary"][0])
    assert s["num"]["month"]["counts"] == [1, 2] and s["num"]["month"]["nulls"] == 1
    assert s["num"]["month"]["out_of_schema"] == 0
    assert s["cat"]["carrier"]["counts"] == [2, 1] and s["cat"]["carrier"]["nulls"] == 1
    assert s["cat"]["carrier"]["new_levels"] == {}
    with pytest.raises(DataError, match="column 'month': a folder month=<value> is not double"):
        summarize(pa.table({"month": ["July"]}), plan)


def test_out_of_schema_alerts_on_the_increase_over_the_train_share():
    from raypipe.config import MonitorThresholds
    from raypipe.monitor import ReferenceProfile
    from raypipe.monitor.checks import check, compare

    # A high-cardinality categorical: 40% of train values are beyond the kept levels.
    ref = ReferenceProfile.from_dict(
        {
            "version": 1,
            "contract": {
                "features": [{"name": "tail", "kind": "categorical", "dtype": "string", "categories": ["a", "b"]}],
                "label": {"name": "y", "task": "binary", "dtype": "bool", "classes": ["false", "true"]},
            },
            "numeric": {},
            "categorical": {
                "tail": {"count": 1000, "nulls": 0, "levels": ["a", "b"], "counts": [300, 300], "other": 400}
            },
        }
    )

    def run(other: int):
        cur = {"rows": 1000, "num": {}, "cat": {"tail": {"count": 1000, "nulls": 0, "counts": [(1000 - other) // 2] * 2,
                                                          "other": other, "new_levels": {}}}}  # fmt: skip
        feats = compare(ref, cur)
        return feats[0], check(feats, {}, None, {}, MonitorThresholds(psi=None, category_shift=None))

    same, alerts = run(410)
    assert same.out_of_schema_rate == pytest.approx(0.41) and same.out_of_schema_rate_ref == pytest.approx(0.4)
    assert alerts == []
    _, alerts = run(500)
    assert [(a.metric, round(a.value, 3)) for a in alerts] == [("out_of_schema_rate", 0.1)]
