"""Rows from PostgreSQL, DuckDB or SQLite (``data.sql``).

Metadata (the result's column types, ``version_query``) is read in this process before Ray
starts, so a wrong password or a missing table fails first, in one line. Rows are read in
Ray tasks, Arrow-native: PostgreSQL through the ADBC driver (its binary COPY protocol; faster
than Ray Data's ``read_sql`` over a DB-API cursor, see ``benchmarks/bench_sql.py``), DuckDB
through its Arrow reader, SQLite through its cursor. With ``shard_column`` each task reads
the rows whose ``abs(column) % n`` (PostgreSQL text: ``abs(hashtext(column))``) is its own.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import pyarrow as pa

from raypipe.config.sources import SqlSource, redact_url
from raypipe.data.sources._types import arrow_schema, conform
from raypipe.errors import ConfigError, DataError

_ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")
_BATCH_ROWS = 65_536


@dataclass(frozen=True)
class Endpoint:
    """A parsed ``data.sql.url``: ``shown`` (password redacted) is the only form ever printed."""

    kind: str
    """``postgresql``, ``duckdb`` or ``sqlite``."""
    shown: str
    _url: str
    """Secrets resolved: passed to drivers only."""
    user: str = ""
    host: str = ""
    port: int = 0
    database: str = ""
    path: str = ""
    connect_timeout_s: int = 10

    def __repr__(self) -> str:  # never the password, even in a traceback
        return f"Endpoint({self.shown!r})"

    @property
    def who(self) -> str:
        """``user@host:port/db`` or the file path: what an error names."""
        return f"{self.user}@{self.host}:{self.port}/{self.database}" if self.kind == "postgresql" else self.path

    @property
    def password(self) -> str | None:
        return unquote(urlsplit(self._url).password) if urlsplit(self._url).password else None

    def scrub(self, text: str) -> str:
        """``text`` without the password (drivers may echo a connection string)."""
        pw = self.password
        return text.replace(pw, "***") if pw else text


def endpoint(cfg: SqlSource) -> Endpoint:
    """Parse the URL, resolving ``${ENV:NAME}`` (percent-encoded: any character may be in a password).

    Raises:
        ConfigError: a referenced variable is not set.
    """

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise ConfigError(f"data.sql.url references ${{ENV:{m.group(1)}}} but {m.group(1)} is not set")
        return quote(os.environ[m.group(1)], safe="")

    url = _ENV_REF.sub(sub, cfg.url)
    shown = redact_url(cfg.url)
    scheme, rest = url.split("://", 1)
    if scheme in ("duckdb", "sqlite"):
        path = rest[1:] if rest.startswith("/") else rest  # sqlite:///abs/path -> /abs/path
        path = "/" + path.lstrip("/") if rest.startswith("//") else path
        return Endpoint(scheme, shown, url, path=path, connect_timeout_s=cfg.connect_timeout_s)
    parts = urlsplit(url)
    url = parts._replace(scheme="postgresql").geturl()
    return Endpoint(
        "postgresql",
        shown,
        url,
        user=unquote(parts.username or os.environ.get("PGUSER", "")),
        host=parts.hostname or "localhost",
        port=parts.port or 5432,
        database=parts.path.lstrip("/") or (parts.username or ""),
        connect_timeout_s=cfg.connect_timeout_s,
    )


# --- connections and their errors -----------------------------------------------------------


def _pg_error(e: Exception, ep: Endpoint, what: str) -> DataError:
    text = ep.scrub(str(e)).strip()
    msg = (text.splitlines() or [type(e).__name__])[0]  # the database's first line
    low = " ".join(text.split()).lower()
    if "timeout expired" in low or "timed out" in low:
        return DataError(
            f"cannot reach PostgreSQL at {ep.host}:{ep.port} (no answer within {ep.connect_timeout_s} s); "
            "check the host and port in data.sql.url and that the server is running",
            host=ep.host,
            port=ep.port,
        )
    if "connection refused" in low or "could not translate host name" in low or "no route to host" in low:
        return DataError(
            f"cannot reach PostgreSQL at {ep.host}:{ep.port} ({_after_colon(msg)}); "
            "check the host and port in data.sql.url and that the server is running",
            host=ep.host,
            port=ep.port,
        )
    if "password authentication failed" in low or "no password supplied" in low:
        return DataError(
            f"PostgreSQL rejected the password for {ep.who}; set it through ${{ENV:NAME}} in data.sql.url "
            "or PGPASSWORD",
            user=ep.user,
        )
    if "does not exist" in low and "database" in low:
        return DataError(f"database '{ep.database}' does not exist on {ep.host}:{ep.port}; check data.sql.url")
    return _query_error(msg, ep, what)


def _after_colon(msg: str) -> str:
    return msg.rsplit(":", 1)[-1].strip() or msg


def _query_error(msg: str, ep: Endpoint, what: str) -> DataError:
    first = (msg.strip().splitlines() or ["unknown error"])[0]
    low = first.lower()
    if ("does not exist" in low and ("relation" in low or "table" in low)) or "no such table" in low:
        return DataError(f"missing table in {ep.shown}: {first}; check data.sql.table or data.sql.query", table=what)
    return DataError(f"{what} failed on {ep.shown}: {first}; fix the SQL in data.sql", sql=what)


def connect(ep: Endpoint):
    """A DB-API connection (psycopg, duckdb, sqlite3); every failure as one-line ``DataError``."""
    if ep.kind == "postgresql":
        import psycopg

        try:
            return psycopg.connect(ep._url, connect_timeout=ep.connect_timeout_s, autocommit=True)
        except psycopg.Error as e:
            raise _pg_error(e, ep, "connect") from None
    if not Path(ep.path).is_file():
        raise DataError(f"{ep.kind} database file '{ep.path}' does not exist; check data.sql.url", path=ep.path)
    if ep.kind == "duckdb":
        import duckdb

        return duckdb.connect(ep.path, read_only=True)
    import sqlite3

    return sqlite3.connect(f"file:{ep.path}?mode=ro", uri=True)


def _execute(conn, ep: Endpoint, sql: str, what: str, params: Any = None):
    try:
        return conn.execute(sql, params) if params is not None else conn.execute(sql)
    except Exception as e:  # noqa: BLE001 - each driver has its own error tree
        if ep.kind == "postgresql":
            raise _pg_error(e, ep, what) from None
        raise _query_error(ep.scrub(str(e)), ep, what) from None


# --- metadata -------------------------------------------------------------------------------


def schema(cfg: SqlSource, ep: Endpoint) -> pa.Schema:
    """The Arrow schema of the rows, from the database's column types (no rows read).

    Raises:
        DataError: unreachable, rejected, a missing table or a SQL error.
        SchemaError: a column type raypipe cannot map.
    """
    where = f"{ep.shown} ({cfg.table or 'data.sql.query'})"
    conn = connect(ep)
    try:
        probe = f"SELECT * FROM ({cfg.select}) AS _raypipe_q LIMIT 0"
        if ep.kind == "postgresql":
            cur = _execute(conn, ep, probe, "data.sql.query")
            oids = [d.type_code for d in cur.description]
            names = dict(_execute(conn, ep, "SELECT oid::int, format_type(oid, NULL) FROM pg_type WHERE oid = ANY(%s)",
                                  "type lookup", (oids,)).fetchall())  # fmt: skip
            cols = [(d.name, names.get(d.type_code, f"oid {d.type_code}")) for d in cur.description]
        elif ep.kind == "duckdb":
            cols = [(r[0], r[1]) for r in _execute(conn, ep, f"DESCRIBE {cfg.select}", "data.sql.query").fetchall()]
        else:
            cols = _sqlite_columns(conn, ep, cfg)
    finally:
        conn.close()
    return arrow_schema(cols, where)


def _sqlite_columns(conn, ep: Endpoint, cfg: SqlSource) -> list[tuple[str, str]]:
    """SQLite is dynamically typed: a table's declared types, else the first non-null value's type."""
    cur = _execute(conn, ep, f"SELECT * FROM ({cfg.select}) AS _raypipe_q LIMIT 1000", "data.sql.query")
    names = [d[0] for d in cur.description]
    declared = {}
    if cfg.table:
        declared = {r[1]: r[2] for r in conn.execute(f"PRAGMA table_info({cfg.table})").fetchall() if r[2]}
    rows = cur.fetchall()
    out = []
    for i, name in enumerate(names):
        if name in declared:
            out.append((name, declared[name]))
            continue
        seen = {type(r[i]) for r in rows if r[i] is not None}
        kind = (
            "double" if float in seen else "integer" if int in seen else "blob" if bytes in seen else "text"
        )  # int and float mixed: the REAL affinity
        out.append((name, kind))
    return out


def version(cfg: SqlSource, ep: Endpoint) -> str | None:
    """The ``version_query`` result as text (None without one)."""
    if not cfg.version_query:
        return None
    conn = connect(ep)
    try:
        rows = _execute(conn, ep, cfg.version_query, "data.sql.version_query").fetchall()
    finally:
        conn.close()
    return json.dumps([list(r) for r in rows], default=str)


# --- rows -----------------------------------------------------------------------------------


def shard_predicate(ep: Endpoint, column: str, kind: pa.DataType | None, shards: int, i: int) -> str:
    """The WHERE clause of shard ``i`` of ``shards``.

    Raises:
        DataError: the column is not in the result, or of a type the database cannot shard on.
    """
    if kind is None:
        raise DataError(f"shard_column '{column}' is not a column of the result; pick one of its columns")
    if pa.types.is_integer(kind):
        expr = f"ABS({column}) % {shards}"
    elif pa.types.is_string(kind) and ep.kind == "postgresql":
        expr = f"ABS(hashtext({column})::bigint) % {shards}"
    else:
        on = "integer or text" if ep.kind == "postgresql" else "integer"
        raise DataError(
            f"shard_column '{column}' is {kind}; {ep.kind} can shard on {on} columns only; "
            "pick another column or remove data.sql.shard_column",
            column=column,
        )
    # Rows whose shard column is NULL belong to shard 0, so no row is lost.
    return f"COALESCE({expr}, 0) = {i}"


def read_batches(ep: Endpoint, sql: str, schema: pa.Schema) -> Iterator[pa.Table]:
    """The rows of ``sql`` as Arrow tables of ``schema``, in this process."""
    if ep.kind == "postgresql":
        import adbc_driver_postgresql.dbapi as adbc

        try:
            conn = adbc.connect(ep._url)
        except Exception as e:  # noqa: BLE001 - adbc_driver_manager.Error and OSError
            raise _pg_error(e, ep, "connect") from None
        with conn:
            cur = conn.cursor()
            try:
                cur.execute(sql)
                reader = cur.fetch_record_batch()
            except Exception as e:  # noqa: BLE001
                raise _pg_error(e, ep, "data.sql.query") from None
            for batch in reader:
                yield conform(batch, schema)
            cur.close()
        return
    conn = connect(ep)
    try:
        if ep.kind == "duckdb":
            try:
                reader = conn.sql(sql).to_arrow_reader(_BATCH_ROWS)  # streams without a DB-API copy
            except Exception as e:  # noqa: BLE001 - duckdb.Error subclasses
                raise _query_error(str(e), ep, "data.sql.query") from None
            for batch in reader:
                yield conform(batch, schema)
            return
        cur = _execute(conn, ep, sql, "data.sql.query")
        names = [d[0] for d in cur.description]
        while rows := cur.fetchmany(_BATCH_ROWS):
            cols = [pa.array([r[i] for r in rows]) for i in range(len(names))]
            yield conform(pa.Table.from_arrays(cols, names=names), schema)
    finally:
        conn.close()


def dataset(cfg: SqlSource, ep: Endpoint, schema: pa.Schema, shards: int):
    """A Ray Dataset over the rows: one read task, or ``shards`` with ``shard_column``."""
    import ray.data

    from raypipe.data.sources._datasource import ArrowReads

    if not cfg.shard_column:
        reads = [functools.partial(_read_all, ep, cfg.select, schema)]
    else:
        kind = schema.field(cfg.shard_column).type if cfg.shard_column in schema.names else None
        where = [shard_predicate(ep, cfg.shard_column, kind, shards, i) for i in range(shards)]
        reads = [
            functools.partial(_read_all, ep, f"SELECT * FROM ({cfg.select}) AS _raypipe_q WHERE {w}", schema)
            for w in where
        ]
    return ray.data.read_datasource(ArrowReads(reads, schema, "ReadSQL"), override_num_blocks=len(reads))


def _read_all(ep: Endpoint, sql: str, schema: pa.Schema) -> Iterator[pa.Table]:
    yield from read_batches(ep, sql, schema)
