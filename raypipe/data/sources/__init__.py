"""Sources beyond Parquet: SQL databases and Iceberg tables, read once per data version.

A warehouse source is described from metadata before Ray starts (the result's schema, the data
version), then the ingest stage reads its rows once into a Parquet snapshot inside its cache
entry. Every later stage reads that snapshot like any Parquet source, so the schema contract,
quality gate, split, preprocessor and serving apply unchanged, and a run never sees two
versions of a table that changes under it. The cache key holds the data version:

    Iceberg            the snapshot id (pinned: ``reproduce`` reads it again)
    SQL + version_query the query text and the version query's result
    SQL alone           the query text and a fresh nonce: read again on every run
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from raypipe.config.data import DataConfig
from raypipe.config.sources import IcebergSource, SqlSource
from raypipe.data import ingest

__all__ = ["WarehouseSource", "fingerprint", "open_source", "open_warehouse", "read_warehouse"]


@dataclass(frozen=True)
class WarehouseSource(ingest.Source):
    """A SQL or Iceberg source before ingest: its schema and data version, no files yet."""

    spec: SqlSource | IcebergSource | None = None
    endpoint: Any = None
    """:class:`raypipe.data.sources.sql.Endpoint` of a SQL source."""
    version: dict[str, Any] = field(default_factory=dict)
    """What the data version is: ``{"rule": ..., "snapshot_id"| "version_query_result"| "nonce": ...}``."""

    @property
    def rule(self) -> str:
        """The cache rule that applied, for the ingest stage's line."""
        v = self.version
        if "snapshot_id" in v:
            return f"Iceberg snapshot {v['snapshot_id']}"
        if "version_query_result" in v:
            return f"version_query {v['version_query_result'][:60]}"
        return "no version_query: read again every run"


def open_source(cfg: DataConfig, datasets_dir: Path, *, build: bool = True) -> tuple[str, ingest.Source]:
    """``(data path as printed, source)`` from metadata alone.

    Raises:
        DataError, SchemaError, ConfigError: unreachable, rejected, missing or unmappable.
    """
    if cfg.path is not None:
        path = ingest.resolve_path(cfg.path, datasets_dir, build=build)
        return path, ingest.discover(path, cfg.filter)
    spec = cfg.sql if cfg.sql is not None else cfg.iceberg
    source = open_warehouse(spec)
    return source.uri, source


def open_warehouse(spec: SqlSource | IcebergSource) -> WarehouseSource:
    """A SQL or Iceberg source's schema and data version, from metadata alone (no Ray).

    Raises:
        DataError, SchemaError, ConfigError: unreachable, rejected, missing or unmappable.
    """
    if isinstance(spec, SqlSource):
        from raypipe.data.sources import sql

        ep = sql.endpoint(spec)
        schema = sql.schema(spec, ep)
        if spec.shard_column:  # fail before Ray starts
            col = spec.shard_column
            sql.shard_predicate(ep, col, schema.field(col).type if col in schema.names else None, 2, 0)
        result = sql.version(spec, ep)
        version = {"version_query_result": result} if result is not None else {"nonce": uuid.uuid4().hex}
        return _warehouse(ep.shown, schema, spec, version, endpoint=ep)
    from raypipe.data.sources import iceberg

    table = iceberg.load_table(spec)
    snapshot_id, schema = iceberg.snapshot(spec, table)
    return _warehouse(f"iceberg:{spec.table}", schema, spec, {"snapshot_id": snapshot_id})


def _warehouse(uri: str, schema: pa.Schema, spec, version: dict, endpoint=None) -> WarehouseSource:
    return WarehouseSource(
        uri=uri,
        filesystem=pafs.LocalFileSystem(),
        base="",
        files=(),
        sizes=(),
        mtimes=(),
        schema=schema,
        partition_columns=(),
        filter=None,
        spec=spec,
        endpoint=endpoint,
        version=version,
    )


def fingerprint(source: ingest.Source, columns: list[str] | None = None) -> str:
    """The data version's digest: :func:`raypipe.data.ingest.fingerprint` for Parquet, else the
    source's text (URL redacted) and version."""
    if not isinstance(source, WarehouseSource):
        return ingest.fingerprint(source, columns)
    spec = source.spec.model_dump(mode="json")  # redacted: a password never reaches the key
    spec.pop("snapshot_id", None)  # the version below is the snapshot read
    payload = json.dumps({"spec": spec, "version": source.version, "columns": columns}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def read_warehouse(source: WarehouseSource, cpus: float):
    """The source's rows as a Ray Dataset (one read of the pinned version)."""
    if isinstance(source.spec, IcebergSource):
        from raypipe.data.sources import iceberg

        return iceberg.dataset(source.spec, source.version["snapshot_id"], source.schema)
    from raypipe.data.sources import sql

    return sql.dataset(source.spec, source.endpoint, source.schema, shards=max(2, min(8, int(cpus))))
