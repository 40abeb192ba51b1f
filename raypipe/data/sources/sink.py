"""Write scored rows to a SQL table or an Iceberg table, replacing a rerun's own rows.

Every row carries ``model_version`` and ``run_id``. Writing run ``R`` again first removes the
rows of ``R`` in the same transaction (SQL: ``DELETE ... WHERE run_id = R`` then the insert,
one commit; Iceberg: one ``overwrite`` commit filtered on ``run_id``), so a retried or repeated
scoring job never duplicates rows and a failed one leaves the old rows in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa

from raypipe.config.sources import IcebergSource, SqlSource
from raypipe.errors import DataError

RUN_ID, MODEL_VERSION = "run_id", "model_version"


def tag(table: pa.Table, model_version: str, run_id: str) -> pa.Table:
    """``table`` plus the ``model_version`` and ``run_id`` columns."""
    for name, value in ((MODEL_VERSION, model_version), (RUN_ID, run_id)):
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    return table


def write(sink: SqlSource | IcebergSource, batches: Iterable[pa.Table], run_id: str) -> int:
    """Replace ``run_id``'s rows in the sink's table with ``batches``; returns the rows written.

    Raises:
        DataError: unreachable, rejected, or the table's columns do not fit the rows.
    """
    if isinstance(sink, IcebergSource):
        return _write_iceberg(sink, batches, run_id)
    from raypipe.data.sources import sql

    if sink.table is None:
        raise DataError("a SQL sink needs a table (data.sql.table / --to-table), not a query")
    ep = sql.endpoint(sink)
    if ep.kind == "postgresql":
        return _write_postgres(sink, ep, batches, run_id)
    return _write_file_db(sink, ep, batches, run_id)


def _write_postgres(sink: SqlSource, ep, batches: Iterable[pa.Table], run_id: str) -> int:
    import adbc_driver_postgresql.dbapi as adbc

    from raypipe.data.sources.sql import _pg_error

    schema, _, table = sink.table.rpartition(".")
    try:
        conn = adbc.connect(ep._url)
    except Exception as e:  # noqa: BLE001
        raise _pg_error(e, ep, "connect") from None
    rows = 0
    with conn:
        cur = conn.cursor()
        try:
            cur.execute("SELECT to_regclass($1) IS NOT NULL", parameters=(sink.table,))
            exists = bool(cur.fetchone()[0])
            if exists:
                cur.execute(f"DELETE FROM {sink.table} WHERE {RUN_ID} = $1", parameters=(run_id,))
            for batch in batches:
                mode = "append" if exists else "create_append"
                rows += cur.adbc_ingest(table, batch, mode=mode, db_schema_name=schema or None)
                exists = True
            conn.commit()  # the delete and every insert, or nothing
        except Exception as e:  # noqa: BLE001
            conn.rollback()
            raise _pg_error(e, ep, f"writing to table {sink.table}") from None
        finally:
            cur.close()
    return rows


def _write_file_db(sink: SqlSource, ep, batches: Iterable[pa.Table], run_id: str) -> int:
    from raypipe.data.sources.sql import _query_error

    rows = 0
    if ep.kind == "duckdb":
        import duckdb

        conn = duckdb.connect(ep.path)

        def run(statement: str, params: list | None = None) -> list:
            return conn.execute(statement, params).fetchall()  # drained: DuckDB needs it before the next one

        try:
            run("BEGIN")
            name = sink.table.split(".")[-1]
            exists = bool(run("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name])[0][0])
            if exists:
                run(f"DELETE FROM {sink.table} WHERE {RUN_ID} = ?", [run_id])
            for batch in batches:
                conn.register("_raypipe_scored", batch)
                if not exists:
                    run(f"CREATE TABLE {sink.table} AS SELECT * FROM _raypipe_scored LIMIT 0")
                    exists = True
                run(f"INSERT INTO {sink.table} BY NAME SELECT * FROM _raypipe_scored")
                conn.unregister("_raypipe_scored")
                rows += batch.num_rows
            run("COMMIT")
        except duckdb.Error as e:
            conn.execute("ROLLBACK")
            raise _query_error(str(e), ep, f"writing to table {sink.table}") from None
        finally:
            conn.close()
        return rows
    import sqlite3

    conn = sqlite3.connect(ep.path)
    try:
        with conn:  # one transaction
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (sink.table,)).fetchone()
            for batch in batches:
                cols = batch.column_names
                if not exists:
                    conn.execute(
                        f"CREATE TABLE {sink.table} ({', '.join(_sqlite_col(batch.schema.field(c)) for c in cols)})"
                    )
                    exists = True
                elif rows == 0:
                    conn.execute(f"DELETE FROM {sink.table} WHERE {RUN_ID} = ?", (run_id,))
                marks = ", ".join("?" * len(cols))
                conn.executemany(
                    f"INSERT INTO {sink.table} ({', '.join(cols)}) VALUES ({marks})",
                    zip(*(batch.column(c).to_pylist() for c in cols)),
                )
                rows += batch.num_rows
    except sqlite3.Error as e:
        raise _query_error(str(e), ep, f"writing to table {sink.table}") from None
    finally:
        conn.close()
    return rows


def _sqlite_col(field: pa.Field) -> str:
    t = field.type
    kind = (
        "INTEGER" if pa.types.is_integer(t) or pa.types.is_boolean(t) else "REAL" if pa.types.is_floating(t) else "TEXT"
    )
    return f"{field.name} {kind}"


def _write_iceberg(sink: IcebergSource, batches: Iterable[pa.Table], run_id: str) -> int:
    from pyiceberg.exceptions import NoSuchTableError
    from pyiceberg.expressions import EqualTo

    from raypipe.data.sources.iceberg import load_catalog

    tables = [_plain_strings(b) for b in batches]
    if not tables:
        return 0
    data = pa.concat_tables(tables)
    catalog = load_catalog(sink)
    try:
        table = catalog.load_table(sink.table)
    except NoSuchTableError:
        catalog.create_namespace_if_not_exists(sink.table.rsplit(".", 1)[0])
        table = catalog.create_table(sink.table, schema=data.schema)
    try:
        # One commit: the run's old rows out, the new ones in.
        table.overwrite(data, overwrite_filter=EqualTo(RUN_ID, run_id))
    except (ValueError, TypeError) as e:
        raise DataError(f"cannot write scores to Iceberg table '{sink.table}': {str(e).splitlines()[0]}") from None
    return data.num_rows


def _plain_strings(table: pa.Table) -> pa.Table:
    """Iceberg stores strings as ``large_string`` and has no unsigned or dictionary types: normalise."""
    fields = [
        pa.field(f.name, pa.large_string() if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type) else f.type)
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def parquet_batches(folder: str) -> Iterator[pa.Table]:
    """The tables of a (hive-partitioned) Parquet folder, one file at a time."""
    import pyarrow.dataset as pads

    dataset = pads.dataset(folder, format="parquet", partitioning="hive")
    for fragment in dataset.get_fragments():
        yield fragment.to_table(schema=dataset.schema)


def replace_table(target: SqlSource | IcebergSource, table: pa.Table) -> int:
    """Create ``target``'s table from ``table``, replacing one of that name (loading datasets)."""
    if isinstance(target, IcebergSource):
        from raypipe.data.sources.iceberg import load_catalog

        catalog = load_catalog(target)
        catalog.create_namespace_if_not_exists(target.table.rsplit(".", 1)[0])
        data = _plain_strings(table)
        if catalog.table_exists(target.table):
            catalog.drop_table(target.table)
        catalog.create_table(target.table, schema=data.schema).append(data)
        return data.num_rows
    from raypipe.data.sources import sql

    ep = sql.endpoint(target)
    if ep.kind == "postgresql":
        import adbc_driver_postgresql.dbapi as adbc

        try:
            with adbc.connect(ep._url) as conn, conn.cursor() as cur:
                rows = cur.adbc_ingest(target.table, table, mode="replace")
                conn.commit()
        except Exception as e:  # noqa: BLE001
            raise sql._pg_error(e, ep, f"writing to table {target.table}") from None
        return rows
    if ep.kind == "duckdb":
        import duckdb

        with duckdb.connect(ep.path) as conn:
            conn.register("_raypipe_rows", table)
            conn.execute(f"CREATE OR REPLACE TABLE {target.table} AS SELECT * FROM _raypipe_rows").fetchall()
        return table.num_rows
    import sqlite3

    with sqlite3.connect(ep.path) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {target.table}")
        cols = table.column_names
        conn.execute(f"CREATE TABLE {target.table} ({', '.join(_sqlite_col(table.schema.field(c)) for c in cols)})")
        conn.executemany(
            f"INSERT INTO {target.table} VALUES ({', '.join('?' * len(cols))})",
            zip(*(_sqlite_values(table.column(c)) for c in cols)),
        )
    return table.num_rows


def _sqlite_values(col: pa.ChunkedArray) -> list:
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        return [v.isoformat() if v is not None else None for v in col.to_pylist()]
    return col.to_pylist()
