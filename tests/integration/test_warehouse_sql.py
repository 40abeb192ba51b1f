"""Training from SQL end to end on the session Ray: PostgreSQL (a table read in shards, a join
query), DuckDB and SQLite files; the cache follows ``version_query``; no password anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raypipe.errors import DataError
from raypipe.pipeline.run import prepare, run_pipeline

pytestmark = pytest.mark.integration

ROWS = 3000
# Deterministic rows whose label follows age and grade, with some noise: a learnable task.
_LOANS = f"""
CREATE TABLE loans AS SELECT i AS id, (i * 7919 % 83)::int AS age,
  round(((i * 104729) % 100000) / 100.0, 2)::numeric(10,2)
  AS amount, ((i * 31) % 97) / 97.0 AS ratio, (i % 5 = 0) AS flag, (ARRAY['a','b','c'])[1 + (i % 3)] AS grade,
  DATE '2020-01-01' + (i % 365) AS day, TIMESTAMPTZ '2020-01-01 00:00+00' + i * INTERVAL '1 minute' AS at,
  ((i * 7919 % 83) > 40 OR (i % 3 = 0 AND i % 7 = 0))::int AS label FROM generate_series(1, {ROWS}) i;
CREATE TABLE grades AS SELECT * FROM (VALUES ('a', 1.0), ('b', 2.5), ('c', 4.0)) AS g(grade, weight);
"""


@pytest.fixture(scope="module")
def loans(postgres) -> str:
    import psycopg

    url = postgres.create_database("loans")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(_LOANS)
    return url


def _run(cfg, uri: str):
    lines: list[str] = []
    result = run_pipeline(cfg, tracking_uri=uri, report=lambda stage, s, detail: lines.append(f"{stage} {detail}"))
    return result, {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines}


def _files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_postgres_table_in_shards_cached_until_version_changes_and_no_password_leaks(
    ray_session, postgres, loans: str, make_config, tracking_uri: str, tmp_path: Path, monkeypatch, capfd
) -> None:
    import psycopg
    from _postgres import PASSWORD

    monkeypatch.setenv("RAYPIPE_TEST_PGPW", PASSWORD)
    sql = {
        "url": postgres.url("loans", password="${ENV:RAYPIPE_TEST_PGPW}"),
        "table": "loans",
        "shard_column": "id",
        "version_query": "SELECT count(*), max(id) FROM loans",
    }
    cfg = make_config(tmp_path / "work", {"sql": sql, "label": "label", "id_column": "id"},
                      serve={"enabled": False}, report={"enabled": False})  # fmt: skip
    first, lines = _run(cfg, tracking_uri)
    assert f"{ROWS:,} rows from postgresql://raypipe:${{ENV:RAYPIPE_TEST_PGPW}}@" in lines["ingest"]
    assert f"data version: version_query [[{ROWS}, {ROWS}]]" in lines["ingest"]
    assert sum(first.rows.values()) == ROWS and first.metrics["test_auc"] > 0.8
    manifest = json.loads(Path(first.manifest_path).read_text())
    assert manifest["data"]["version"]["version_query_result"] == f"[[{ROWS}, {ROWS}]]"
    snapshot = sorted((tmp_path / "work" / "cache" / "ingest").glob("*/rows/*.parquet"))
    assert len(snapshot) == 2  # one file per shard task (2 CPUs)
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in snapshot) == ROWS

    second, lines = _run(cfg, tracking_uri)
    assert lines["ingest"].startswith("cached ·") and "train" in second.cached_stages
    assert second.metrics == first.metrics

    with psycopg.connect(loans, autocommit=True) as c:
        c.execute("INSERT INTO loans SELECT id + 10000, age, amount, ratio, flag, grade, day, at, label "
                  "FROM loans WHERE id <= 500")  # fmt: skip
    third, lines = _run(cfg, tracking_uri)
    assert not lines["ingest"].startswith("cached") and f"[[{ROWS + 500}, 10500]]" in lines["ingest"]
    assert sum(third.rows.values()) == ROWS + 500 and "train" not in third.cached_stages

    # The password was in the environment only: not in MLflow's store or artifacts, the manifests,
    # the audit trail, the cache or anything printed.
    out, err = capfd.readouterr()
    needle = PASSWORD.encode()
    assert needle not in (out + err).encode()
    assert _files_containing(tmp_path, needle) == []
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_session_dir_path()) / "logs"
    assert logs.is_dir() and _files_containing(logs, needle) == []  # Ray's driver, worker and task logs
    assert (tmp_path / "mlflow.db").is_file() and list((tmp_path / "work").rglob("audit*"))


def test_join_query_without_version_query_is_read_again_every_run(
    ray_session, postgres, loans: str, make_config, tracking_uri: str, tmp_path: Path
) -> None:
    query = "SELECT l.id, l.age, l.ratio, l.grade, g.weight, l.label FROM loans l JOIN grades g USING (grade)"
    cfg = make_config(tmp_path / "work", {"sql": {"url": loans, "query": query}, "label": "label", "id_column": "id"},
                      serve={"enabled": False}, report={"enabled": False}, register={"enabled": False})  # fmt: skip
    assert prepare(cfg).fingerprint != prepare(cfg).fingerprint  # no data version: a new key every time
    result, lines = _run(cfg, tracking_uri)
    assert "data version: no version_query: read again every run" in lines["ingest"]
    assert result.rows["train"] > 0 and "weight" in json.dumps(result.example)


def test_an_empty_result_fails_in_ingest_naming_the_source(ray_session, loans: str, make_config, tmp_path) -> None:
    cfg = make_config(tmp_path / "work", {"sql": {"url": loans, "query": "SELECT * FROM loans WHERE false"},
                      "label": "label"}, serve={"enabled": False}, register={"enabled": False})  # fmt: skip
    with pytest.raises(DataError, match=r"^postgresql://raypipe:\*\*\*@127.0.0.1:\d+/loans \(query\) returned no rows"):
        run_pipeline(cfg)


@pytest.mark.parametrize("kind", ["duckdb", "sqlite"])
def test_train_from_a_database_file(ray_session, kind: str, make_config, tracking_uri: str, tmp_path: Path) -> None:
    rows = [(i, (i * 7919) % 83, ((i * 31) % 97) / 97.0, "abc"[i % 3], int((i * 7919) % 83 > 40)) for i in range(2000)]
    db = tmp_path / f"loans.{kind}"
    if kind == "duckdb":
        import duckdb

        with duckdb.connect(str(db)) as c:
            c.execute("CREATE TABLE loans (id INTEGER, age INTEGER, score DOUBLE, grade VARCHAR, label INTEGER)")
            c.executemany("INSERT INTO loans VALUES (?, ?, ?, ?, ?)", rows)
    else:
        import sqlite3

        with sqlite3.connect(db) as c:
            c.execute("CREATE TABLE loans (id INTEGER, age INTEGER, score REAL, grade TEXT, label INTEGER)")
            c.executemany("INSERT INTO loans VALUES (?, ?, ?, ?, ?)", rows)
    cfg = make_config(tmp_path / "work", {"sql": {"url": f"{kind}:///{db}", "table": "loans"}, "label": "label",
                      "id_column": "id"}, serve={"enabled": False}, report={"enabled": False},
                      register={"enabled": False})  # fmt: skip
    result, lines = _run(cfg, tracking_uri)
    assert lines["ingest"].startswith(f"2,000 rows from {kind}:///{db} (loans)")
    assert sum(result.rows.values()) == 2000 and result.metrics["test_auc"] > 0.9


def test_scores_go_back_to_postgres_duckdb_and_iceberg_and_a_rerun_replaces_its_rows(
    ray_session, postgres, loans: str, make_config, tracking_uri: str, tmp_path: Path
) -> None:
    import duckdb
    import psycopg
    from pyiceberg.catalog import load_catalog

    from raypipe.config.sources import IcebergSource, SqlSource
    from raypipe.serve.warehouse import predict

    cfg = make_config(tmp_path / "work", {"sql": {"url": loans, "table": "loans"}, "label": "label", "id_column": "id"},
                      name="loans_sink", serve={"enabled": False}, report={"enabled": False})  # fmt: skip
    trained = run_pipeline(cfg, tracking_uri=tracking_uri)
    model = "models:/loans_sink@champion"
    source = SqlSource(url=loans, query="SELECT * FROM loans WHERE id <= 1000")
    pg_sink = SqlSource(url=loans, table="public.scores")

    first = predict(model, tracking_uri, source, sink=pg_sink, run_id="nightly-1", output_dir=str(tmp_path / "p"))
    assert first.rows == first.sink_rows == 1000 and first.model_version == trained.model_version
    assert sorted(p.name for p in (tmp_path / "p").glob("*.parquet"))  # Parquet as well
    predict(model, tracking_uri, source, sink=pg_sink, run_id="nightly-1")  # rerun: replaces its own rows
    predict(model, tracking_uri, source, sink=pg_sink, run_id="nightly-2")
    with psycopg.connect(loans) as c:
        counts = dict(c.execute("SELECT run_id, count(*) FROM scores GROUP BY run_id").fetchall())
        versions = {r[0] for r in c.execute("SELECT DISTINCT model_version FROM scores").fetchall()}
        scored = c.execute("SELECT count(*) FROM scores WHERE score BETWEEN 0 AND 1 AND prediction IN ('0', '1')")
        assert scored.fetchone()[0] == 2000
    assert counts == {"nightly-1": 1000, "nightly-2": 1000} and versions == {trained.model_version}

    db = tmp_path / "scores.duckdb"
    duck = SqlSource(url=f"duckdb:///{db}", table="scores")
    for _ in range(2):
        assert predict(model, tracking_uri, source, sink=duck, run_id="r1").sink_rows == 1000
    with duckdb.connect(str(db)) as c:
        assert c.execute("SELECT count(*), count(DISTINCT id) FROM scores").fetchone() == (1000, 1000)

    # Iceberg as the input (the rows Postgres holds, copied) and as the sink.
    (tmp_path / "wh").mkdir()
    props = {"type": "sql", "uri": f"sqlite:///{tmp_path / 'cat.db'}", "warehouse": f"file://{tmp_path / 'wh'}"}
    catalog = load_catalog("default", **props)
    catalog.create_namespace("ml")
    import pyarrow as pa

    from raypipe.data.sources import sql

    ep = sql.endpoint(source)
    rows = pa.concat_tables(sql.read_batches(ep, source.select, sql.schema(source, ep)))
    catalog.create_table("ml.loans", schema=rows.schema).append(rows)
    ice_in = IcebergSource(catalog=props, table="ml.loans")
    ice_out = IcebergSource(catalog=props, table="ml.scores")
    for _ in range(2):
        assert predict(model, tracking_uri, ice_in, sink=ice_out, run_id="ice-1").sink_rows == 1000
    out = catalog.load_table("ml.scores").scan().to_arrow()
    assert out.num_rows == 1000 and set(out.column("run_id").to_pylist()) == {"ice-1"}
