"""Training from an Iceberg table (a pyiceberg SQL catalog on SQLite, a local warehouse folder):
the snapshot id is the data version; an append is seen by the next run, and ``reproduce`` of the
first run reads its snapshot again and matches its metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from raypipe.errors import DataError
from raypipe.pipeline.reproduce import reproduce
from raypipe.pipeline.run import prepare, run_pipeline

pytestmark = pytest.mark.integration


def _rows(start: int, n: int) -> pa.Table:
    ids = list(range(start, start + n))
    age = [(i * 7919) % 83 for i in ids]
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "age": pa.array(age, pa.int64()),
            "score": pa.array([((i * 31) % 97) / 97.0 for i in ids], pa.float64()),
            "grade": pa.array(["abc"[i % 3] for i in ids], pa.string()),
            "label": pa.array([int(a > 40 or i % 21 == 0) for i, a in zip(ids, age)], pa.int64()),
        }
    )


@pytest.fixture
def catalog_props(tmp_path: Path) -> dict:
    (tmp_path / "warehouse").mkdir()
    return {
        "type": "sql",
        "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
        "warehouse": f"file://{tmp_path / 'warehouse'}",
    }


def _table(props: dict, name: str = "ml.loans"):
    from pyiceberg.catalog import load_catalog

    catalog = load_catalog("default", **props)
    catalog.create_namespace_if_not_exists("ml")
    return catalog.create_table(name, schema=_rows(0, 1).schema)


def _run(cfg, uri: str):
    lines: list[str] = []
    result = run_pipeline(cfg, tracking_uri=uri, report=lambda stage, s, detail: lines.append(f"{stage} {detail}"))
    return result, {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines}


def test_snapshot_is_the_data_version_and_reproduce_reads_it_again(
    ray_session, catalog_props: dict, make_config, tracking_uri: str, tmp_path: Path
) -> None:
    table = _table(catalog_props)
    table.append(_rows(0, 2500))
    first_snapshot = table.current_snapshot().snapshot_id
    data = {"iceberg": {"catalog": catalog_props, "table": "ml.loans"}, "label": "label", "id_column": "id"}
    cfg = make_config(tmp_path / "work", data, serve={"enabled": False}, report={"enabled": False})
    first, lines = _run(cfg, tracking_uri)
    assert lines["ingest"].startswith("2,500 rows from iceberg table ml.loans")
    assert f"data version: Iceberg snapshot {first_snapshot}" in lines["ingest"]
    manifest = json.loads(Path(first.manifest_path).read_text())
    assert manifest["data"]["version"]["snapshot_id"] == first_snapshot

    table.append(_rows(2500, 1000))  # a new snapshot
    assert table.current_snapshot().snapshot_id != first_snapshot
    assert prepare(cfg).fingerprint != first.data_fingerprint
    second, lines = _run(cfg, tracking_uri)
    assert not lines["ingest"].startswith("cached") and lines["ingest"].startswith("3,500 rows")
    assert sum(second.rows.values()) == 3500

    rep = reproduce(first.run_id, tracking_uri=tracking_uri, work_dir=str(tmp_path / "work"))
    assert rep.changes == []  # same code, packages and data version: the old snapshot
    assert rep.summary.data_fingerprint == first.data_fingerprint
    assert rep.summary.rows == first.rows
    assert rep.within_tolerance and rep.deltas


def test_missing_table_and_unknown_snapshot_are_one_line_errors(catalog_props: dict, make_config, tmp_path) -> None:
    table = _table(catalog_props, "ml.t")
    data = {"iceberg": {"catalog": catalog_props, "table": "ml.t"}, "label": "label"}
    with pytest.raises(DataError, match=r"^Iceberg table 'ml.t' has no snapshot \(no rows written yet\)"):
        prepare(make_config(tmp_path / "w", data))
    table.append(_rows(0, 10))
    with pytest.raises(DataError, match=r"^Iceberg table 'ml.t' has no snapshot 42 \(expired\?\); recent: \d+"):
        prepare(make_config(tmp_path / "w", {**data, "iceberg": {**data["iceberg"], "snapshot_id": 42}}))
    with pytest.raises(DataError, match=r"^Iceberg table 'ml.gone' does not exist in catalog 'default'"):
        prepare(make_config(tmp_path / "w", {**data, "iceberg": {**data["iceberg"], "table": "ml.gone"}}))
