"""SQL sources against a real PostgreSQL server and real DuckDB / SQLite files, before Ray:
the explicit type mapping, sharding predicates, the data version and every one-line error."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pyarrow as pa
import pytest

from raypipe.config.sources import SqlSource
from raypipe.data.sources import sql
from raypipe.errors import DataError, SchemaError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pg_url(postgres) -> str:
    import psycopg

    url = postgres.create_database("types")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(
            """CREATE TABLE every_type (
                 a smallint, b integer, c bigint, d numeric(10, 2), e real, f double precision, g boolean,
                 h text, i varchar(5), j char(3), k date, l timestamp, m timestamptz, n jsonb)"""
        )
        c.execute(
            """INSERT INTO every_type VALUES
                 (1, 2, 3, 4.25, 1.5, 2.5, true, 'x', 'y', 'z', '2020-01-02', '2020-01-02 03:04:05',
                  '2020-01-02 03:04:05+02', '{}'),
                 (NULL, -7, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"""
        )
    return url


def _src(url: str, **kw) -> tuple[SqlSource, sql.Endpoint]:
    cfg = SqlSource(url=url, **kw)
    return cfg, sql.endpoint(cfg)


def test_postgres_types_map_explicitly_and_rows_arrive_typed(pg_url: str) -> None:
    cfg, ep = _src(pg_url, query="SELECT a, b, c, d, e, f, g, h, i, j, k, l, m FROM every_type ORDER BY b DESC")
    schema = sql.schema(cfg, ep)
    want = {
        "a": pa.int64(), "b": pa.int64(), "c": pa.int64(), "d": pa.float64(), "e": pa.float64(),
        "f": pa.float64(), "g": pa.bool_(), "h": pa.string(), "i": pa.string(), "j": pa.string(),
        "k": pa.date32(), "l": pa.timestamp("us"), "m": pa.timestamp("us", tz="UTC"),
    }  # fmt: skip
    assert {f.name: f.type for f in schema} == want
    table = pa.concat_tables(sql.read_batches(ep, cfg.select, schema))
    assert table.schema == schema
    first = table.slice(0, 1).to_pylist()[0]
    assert first["d"] == 4.25 and first["j"] == "z  " and first["m"].hour == 1  # char(3) pads; 03:04+02 is 01:04 UTC
    assert table.column("a").null_count == 1


def test_an_unmappable_type_names_the_column_and_the_type(pg_url: str) -> None:
    cfg, ep = _src(pg_url, table="every_type")
    with pytest.raises(SchemaError, match=r"column 'n' .* SQL type 'jsonb'.*cast it in the query") as e:
        sql.schema(cfg, ep)
    assert e.value.context == {"column": "n", "type": "jsonb"}


def test_unreachable_host_times_out_naming_host_and_port(postgres) -> None:
    # A listener that never answers: the TCP handshake completes, the server's greeting never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        cfg, ep = _src(f"postgresql://raypipe@127.0.0.1:{port}/db", table="t", connect_timeout_s=2)
        start = time.monotonic()
        with pytest.raises(
            DataError, match=rf"cannot reach PostgreSQL at 127\.0\.0\.1:{port} \(no answer within 2 s\)"
        ):
            sql.schema(cfg, ep)
        assert time.monotonic() - start < 15


def test_refused_port_names_host_and_port(postgres) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        cfg, ep = _src(f"postgresql://raypipe@127.0.0.1:{port}/db", table="t")
        with pytest.raises(DataError, match=rf"cannot reach PostgreSQL at 127\.0\.0\.1:{port} \(.*refused"):
            sql.schema(cfg, ep)


def test_wrong_password_names_user_host_db_and_never_the_password(postgres, monkeypatch) -> None:
    monkeypatch.setenv("RAYPIPE_TEST_PW", "Wr0ng-s3cret")
    cfg, ep = _src(postgres.url("types", password="${ENV:RAYPIPE_TEST_PW}"), table="every_type")
    with pytest.raises(DataError) as e:
        sql.schema(cfg, ep)
    msg = str(e.value)
    assert msg.startswith(f"PostgreSQL rejected the password for raypipe@127.0.0.1:{postgres.port}/types")
    assert "Wr0ng-s3cret" not in msg and "Wr0ng-s3cret" not in repr(ep) and "\n" not in msg


def test_missing_table_syntax_error_and_missing_database_are_one_line(pg_url: str, postgres) -> None:
    cfg, ep = _src(pg_url, table="no_such_table")
    with pytest.raises(DataError, match=r'^missing table in .*relation "no_such_table" does not exist; check data'):
        sql.schema(cfg, ep)
    cfg, ep = _src(pg_url, query="SELEC 1")
    with pytest.raises(
        DataError, match=r'data.sql.query failed on .*: syntax error at or near "\S+"; fix the SQL in data.sql$'
    ):
        sql.schema(cfg, ep)
    cfg, ep = _src(postgres.url("nope"), table="t")
    with pytest.raises(DataError, match="database 'nope' does not exist"):
        sql.schema(cfg, ep)


def test_shard_predicates_cover_every_row_exactly_once(pg_url: str) -> None:
    cfg, ep = _src(pg_url, query="SELECT i, 'k' || i AS s, i * 0.5 AS x FROM generate_series(-50, 49) i")
    schema = sql.schema(cfg, ep)
    for column in ("i", "s"):  # integer and (PostgreSQL) text
        seen = []
        for shard in range(3):
            where = sql.shard_predicate(ep, column, schema.field(column).type, 3, shard)
            part = pa.concat_tables(sql.read_batches(ep, f"SELECT * FROM ({cfg.select}) q WHERE {where}", schema))
            assert part.num_rows > 0
            seen += part.column("i").to_pylist()
        assert sorted(seen) == list(range(-50, 50))
    with pytest.raises(DataError, match=r"shard_column 'x' is double; postgresql can shard on integer or text"):
        sql.shard_predicate(ep, "x", schema.field("x").type, 3, 0)
    with pytest.raises(DataError, match="shard_column 'zz' is not a column of the result"):
        sql.shard_predicate(ep, "zz", None, 3, 0)


def test_version_query_result_is_the_data_version(pg_url: str) -> None:
    import psycopg

    cfg, ep = _src(pg_url, table="every_type", version_query="SELECT count(*), max(b) FROM every_type")
    before = sql.version(cfg, ep)
    assert before == "[[2, 2]]"
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("INSERT INTO every_type (b) VALUES (9)")
    assert sql.version(cfg, ep) == "[[3, 9]]"
    assert sql.version(SqlSource(url=pg_url, table="every_type"), ep) is None


def test_duckdb_and_sqlite_files(tmp_path: Path) -> None:
    import duckdb

    db = tmp_path / "f.duckdb"
    with duckdb.connect(str(db)) as c:
        c.execute("CREATE TABLE t AS SELECT i::INTEGER AS i, (i * 1.5)::DECIMAL(8,2) AS d, 'v' || i AS s, "
                  "DATE '2021-01-01' + i::INTEGER AS day, i % 2 = 0 AS even FROM range(10) r(i)")  # fmt: skip
    cfg, ep = _src(f"duckdb:///{db}", table="t")
    schema = sql.schema(cfg, ep)
    assert [f.type for f in schema] == [pa.int64(), pa.float64(), pa.string(), pa.date32(), pa.bool_()]
    table = pa.concat_tables(sql.read_batches(ep, cfg.select, schema))
    assert table.num_rows == 10 and table.column("d").to_pylist()[3] == 4.5

    lite = tmp_path / "f.sqlite"
    with sqlite3.connect(lite) as c:
        c.execute("CREATE TABLE t (i INTEGER, x REAL, s TEXT, b BLOB)")
        c.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(i, i / 2, f"s{i}", b"\0") for i in range(5)])
    cfg, ep = _src(f"sqlite:///{lite}", query="SELECT i, x, s FROM t")
    schema = sql.schema(cfg, ep)
    assert [f.type for f in schema] == [pa.int64(), pa.float64(), pa.string()]
    assert pa.concat_tables(sql.read_batches(ep, cfg.select, schema)).column("x").to_pylist()[1] == 0.5
    with pytest.raises(SchemaError, match="column 'b' .* SQL type 'BLOB'"):
        sql.schema(*_src(f"sqlite:///{lite}", table="t"))
    with pytest.raises(DataError, match="missing table in sqlite:.*no such table: gone"):
        sql.schema(*_src(f"sqlite:///{lite}", table="gone"))
    with pytest.raises(DataError, match="sqlite database file '.*missing.sqlite' does not exist"):
        sql.schema(*_src(f"sqlite:///{tmp_path}/missing.sqlite", table="t"))


def test_datasets_flights_to_postgres_then_the_sql_job_joins_in_the_database(postgres, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from raypipe.config import load_config
    from raypipe.pipeline.run import prepare

    url = postgres.create_database("flights")
    done = subprocess.run(
        [sys.executable, "-m", "raypipe", "datasets", "flights", "--to", url],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (
        f"loaded flights (327,346 rows), weather (26,115 rows) into postgresql://raypipe:***@127.0.0.1:{postgres.port}/flights"
        in done.stdout
    )  # noqa: E501
    assert "pw-" not in done.stdout + done.stderr
    job = Path(__file__).resolve().parents[2] / "jobs" / "flights_sql.yaml"
    cfg = load_config(job, overrides=[f"data.sql.url={url}", f"runtime.work_dir={tmp_path}"])
    ctx = prepare(cfg)
    assert ctx.columns[-1] == "delayed" and {"temp", "visib", "carrier"} <= set(ctx.columns)
    assert ctx.source.schema.field("delayed").type == pa.bool_() and "[[327346, 26115]]" in ctx.source.rule


def test_predict_cli_names_a_bad_input_or_sink_in_one_line(postgres, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    def predict(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "raypipe", "predict", "models:/m@champion", *args],
            capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "250"}, cwd=tmp_path,
        )  # fmt: skip

    url = postgres.url("types")
    done = predict("--input", url, "--output", str(tmp_path / "o"))
    assert done.returncode == 2 and "give exactly one of 'query' and 'table'" in done.stderr + done.stdout
    assert "pw-" not in done.stderr + done.stdout and "raypipe:***@" in done.stderr + done.stdout
    done = predict("--input", str(tmp_path))
    assert (
        done.returncode == 2 and "pass --output FOLDER, --to URL|iceberg:NS.TABLE, or both" in done.stderr + done.stdout
    )
    done = predict("--input", str(tmp_path), "--to", str(tmp_path / "x"))
    assert done.returncode == 2 and "is not a SQL URL or iceberg:NS.TABLE" in done.stderr + done.stdout
