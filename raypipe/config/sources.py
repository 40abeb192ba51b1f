"""Where rows come from besides Parquet: a SQL query or table (``data.sql``) and an Iceberg table
(``data.iceberg``). Credentials stay out of the config: ``${ENV:NAME}`` inside these sections is
resolved only when connecting, and a password written into a URL is redacted whenever the config
is dumped (MLflow params, the manifest, the audit trail)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_serializer, model_validator

from raypipe.config._base import _Strict

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
SQL_SCHEMES = ("postgresql", "postgres", "duckdb", "sqlite")


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (``${ENV:X}`` kept)."""
    return re.sub(r"^([a-z0-9+.-]+://[^:/@]*):(?!\$\{ENV:[A-Za-z_][A-Za-z0-9_]*\}@)[^@/]*@", r"\1:***@", url)


class SqlSource(_Strict):
    """A SQL query or table: PostgreSQL, DuckDB or SQLite.

    Example::

        sql:
          url: postgresql://ml:${ENV:PGPASSWORD}@127.0.0.1:5432/flights
          query: SELECT f.*, w.temp FROM flights f JOIN weather w USING (origin, time_hour)
          version_query: SELECT max(updated_at), count(*) FROM flights
    """

    url: str
    """``postgresql://user[:${ENV:PW}]@host:port/db``, ``duckdb:///path/file.duckdb`` or ``sqlite:///path``."""
    query: str | None = None
    table: str | None = None
    """A table (``schema.table``): read whole."""
    shard_column: str | None = None
    """An integer (or, on PostgreSQL, text) column: the read is split in parallel tasks by its value."""
    version_query: str | None = None
    """A cheap query whose result changes when the data does (``SELECT max(updated_at), count(*) FROM t``):
    the data version in the cache key. Without it the source is read again on every run."""
    connect_timeout_s: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _check(self) -> SqlSource:
        scheme = self.url.split("://", 1)[0] if "://" in self.url else ""
        if scheme not in SQL_SCHEMES:
            raise ValueError(
                f"url '{redact_url(self.url)}' must start with one of " + ", ".join(f"{s}://" for s in SQL_SCHEMES)
            )
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' and 'table'")
        if self.table is not None and not _IDENTIFIER.match(self.table):
            raise ValueError(f"table '{self.table}' is not a plain (schema.)table name; use 'query' instead")
        if self.shard_column is not None and not _IDENTIFIER.match(self.shard_column):
            raise ValueError(f"shard_column '{self.shard_column}' is not a column name")
        return self

    @field_serializer("url")
    def _redacted(self, url: str) -> str:
        return redact_url(url)

    @property
    def select(self) -> str:
        """The SQL that yields the rows."""
        return self.query.strip().rstrip(";") if self.query is not None else f"SELECT * FROM {self.table}"


class IcebergSource(_Strict):
    """An Iceberg table through a pyiceberg catalog; its snapshot id is the data version.

    Example::

        iceberg:
          catalog: {type: sql, uri: "sqlite:////data/catalog.db", warehouse: "file:///data/warehouse"}
          table: ml.flights
    """

    catalog: dict[str, Any]
    """pyiceberg catalog properties (``type``, ``uri``, ``warehouse``, ...) and its ``name`` (default ``default``;
    a SQL catalog keys its tables by it)."""
    table: str
    """``namespace.table``."""
    snapshot_id: int | None = None
    """Read this snapshot; default: the current one (recorded in the manifest, so ``reproduce`` reads it again)."""
    row_filter: str | None = None
    """A pyiceberg row filter, e.g. ``"month <= 6"``."""

    @model_validator(mode="after")
    def _check(self) -> IcebergSource:
        if "." not in self.table:
            raise ValueError(f"table '{self.table}' must be namespace.table")
        return self

    @field_serializer("catalog")
    def _redacted(self, catalog: dict[str, Any]) -> dict[str, Any]:
        return {
            k: (redact_url(v) if isinstance(v, str) else v)
            if not _secret_key(k) or (isinstance(v, str) and v.startswith("${ENV:"))
            else "***"
            for k, v in catalog.items()
        }


def _secret_key(key: str) -> bool:
    return any(w in key.lower() for w in ("password", "secret", "token", "credential", "key"))
