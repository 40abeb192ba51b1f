"""SQL read throughput into Ray Data: Ray's ``read_sql`` against raypipe's ADBC path and the plain
one-process ADBC read, same table, same run.

    python benchmarks/bench_sql.py --rows 4000000

A throwaway PostgreSQL (``tests/_postgres.py``: initdb, 127.0.0.1, a free port) gets a table of
``--rows`` x 28 columns (1 id, 13 float8, 6 int4, 2 numeric(12,2), 3 text, 1 bool, 1 date, 1
timestamptz). Then, in ``--repeat`` interleaved rounds (so load from other processes hits every
side alike), each path reads the whole table into a materialised Ray Dataset:

- ``read_sql`` (Ray Data's default): ``ray.data.read_sql(sql, psycopg.connect)``, DB-API defaults
  (rows become Python tuples, then Arrow), one task: PostgreSQL has ``MOD``/``ABS``/``CONCAT`` but
  sharding needs ``shard_keys``, and the default MD5 hash over a text cast costs more than it saves.
- raypipe: :func:`raypipe.data.sources.sql.dataset` (what the ingest stage reads), ADBC's
  binary COPY straight into Arrow, cast to the explicit type map; ``--shards`` tasks split on
  ``id`` (``abs(id) % n``), and one task.
- baseline (the fastest plain one-process way): ADBC ``cursor.fetch_arrow_table()`` in the driver,
  then ``ray.data.from_arrow`` (the rows put in the object store), numeric cast as raypipe does.

Headline: raypipe rows/s / baseline rows/s, best round of each (target >= 0.7x). Ray start-up and the
table load are excluded. Results are merged into ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

_FLOATS, _INTS = 13, 6


def _load(url: str, rows: int) -> None:
    import psycopg

    cols = ["i AS id"]
    cols += [f"((i * {7 + k}) % 100003) / 7.0 AS f{k}" for k in range(_FLOATS)]
    cols += [f"((i * {11 + k}) % 1000)::int4 AS n{k}" for k in range(_INTS)]
    cols += [f"(((i * {13 + k}) % 1000000) / 100.0)::numeric(12,2) AS d{k}" for k in range(2)]
    cols += [f"(ARRAY['alpha','beta','gamma','delta'])[1 + (i + {k}) % 4] AS s{k}" for k in range(3)]
    cols += ["(i % 2 = 0) AS flag", "DATE '2020-01-01' + (i % 1000) AS day",
             "TIMESTAMPTZ '2020-01-01 00:00+00' + i * INTERVAL '1 second' AS at"]  # fmt: skip
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"CREATE UNLOGGED TABLE wide AS SELECT {', '.join(cols)} FROM generate_series(1, {rows}) i")
        c.execute("VACUUM ANALYZE wide")


def _timed(fn) -> tuple[float, int]:
    t = time.perf_counter()
    ds = fn().materialize()
    rows = ds.count()
    seconds = time.perf_counter() - t
    del ds
    return seconds, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--shards", type=int, default=0, help="raypipe read tasks (default: the CPUs)")
    ap.add_argument("--num-cpus", type=int, default=None)
    ap.add_argument("--skip-read-sql", action="store_true", help="leave out Ray's read_sql (slow at 4 M rows)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sql.json")
    args = ap.parse_args()

    import adbc_driver_postgresql.dbapi as adbc
    import psycopg
    import pyarrow as pa
    import ray
    import ray.data
    from _postgres import PostgresServer

    from raypipe.config.sources import SqlSource
    from raypipe.data.sources import sql
    from raypipe.data.sources._types import conform

    server = PostgresServer().start()
    try:
        url = server.create_database("bench")
        t = time.perf_counter()
        _load(url, args.rows)
        load_s = time.perf_counter() - t
        print(f"loaded {args.rows:,} rows x 28 columns in {load_s:.1f}s", flush=True)
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        cpus = int(ray.cluster_resources()["CPU"])
        shards = args.shards or cpus
        ray.data.DataContext.get_current().enable_progress_bars = False
        spec = SqlSource(url=url, table="wide", shard_column="id")
        ep = sql.endpoint(spec)
        schema = sql.schema(spec, ep)
        one = spec.model_copy(update={"shard_column": None})

        def baseline():
            with adbc.connect(url) as conn, conn.cursor() as cur:
                cur.execute("SELECT * FROM wide")
                table = cur.fetch_arrow_table()
            return ray.data.from_arrow(conform(table, schema))

        paths = {
            f"raypipe ADBC ({shards} tasks)": lambda: sql.dataset(spec, ep, schema, shards),
            "raypipe ADBC (1 task)": lambda: sql.dataset(one, ep, schema, 1),
            "baseline ADBC fetch_arrow_table": baseline,
        }
        if not args.skip_read_sql:
            paths["ray read_sql (psycopg DB-API)"] = lambda: ray.data.read_sql(
                "SELECT * FROM wide", lambda: psycopg.connect(url)
            )
        # Warm-up, untimed: worker processes started and the drivers imported in them.
        tiny = SqlSource(url=url, query="SELECT * FROM wide WHERE id <= 1000", shard_column="id")
        sql.dataset(tiny, ep, schema, shards).materialize()
        ray.data.read_sql(tiny.query, lambda: psycopg.connect(url)).materialize()
        rounds: dict[str, list[float]] = {k: [] for k in paths}
        for r in range(args.repeat):
            for name, fn in paths.items():
                seconds, rows = _timed(fn)
                assert rows == args.rows, (name, rows)
                rounds[name].append(args.rows / seconds)
                print(f"round {r + 1} {name:36s} {seconds:7.2f}s {args.rows / seconds:12,.0f} rows/s", flush=True)
        ray.shutdown()
    finally:
        server.stop()

    best = {k: max(v) for k, v in rounds.items()}
    raypipe_key = f"raypipe ADBC ({shards} tasks)"
    ratio = best[raypipe_key] / best["baseline ADBC fetch_arrow_table"]
    print(f"\nraypipe / baseline (best of {args.repeat}): {ratio:.2f}x (target >= 0.7x)")
    if "ray read_sql (psycopg DB-API)" in best:
        print(f"raypipe / Ray read_sql: {best[raypipe_key] / best['ray read_sql (psycopg DB-API)']:.1f}x")
    entry = {
        "rows": args.rows,
        "columns": 28,
        "cpus": cpus,
        "shards": shards,
        "best_rows_per_s": {k: round(v) for k, v in best.items()},
        "rounds_rows_per_s": {k: [round(x) for x in v] for k, v in rounds.items()},
        "ratio_raypipe_to_baseline": round(ratio, 3),
        "load_seconds": round(load_s, 1),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "versions": {"ray": ray.__version__, "pyarrow": pa.__version__},
    }
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[str(args.rows)] = entry
    tmp = args.out.with_suffix(".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
