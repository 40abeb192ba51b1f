"""Rows from an Iceberg table (``data.iceberg``) through a pyiceberg catalog.

The snapshot id is the data version: the run reads one snapshot (``data.iceberg.snapshot_id``
or the current one, looked up before Ray starts), so every read of the run sees the same rows
and ``raypipe reproduce`` reads that snapshot again after new commits.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pyarrow as pa

from raypipe.config.sources import IcebergSource
from raypipe.errors import ConfigError, DataError

_ENV_REF = re.compile(r"\$\{ENV:([A-Za-z_][A-Za-z0-9_]*)\}")


def catalog_properties(cfg: IcebergSource) -> dict[str, Any]:
    """The catalog properties with ``${ENV:NAME}`` resolved (never printed)."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in os.environ:
            raise ConfigError(f"data.iceberg.catalog references ${{ENV:{m.group(1)}}} but {m.group(1)} is not set")
        return os.environ[m.group(1)]

    return {k: _ENV_REF.sub(sub, v) if isinstance(v, str) else v for k, v in cfg.catalog.items()}


def load_catalog(cfg: IcebergSource):
    from pyiceberg.catalog import load_catalog as _load

    props = catalog_properties(cfg)
    name = props.pop("name", "default")  # pyiceberg's default; a SQL catalog keys its tables by it
    try:
        return _load(name, **props)
    except Exception as e:  # noqa: BLE001 - pyiceberg raises many types for a bad catalog
        raise DataError(
            f"cannot open the Iceberg catalog '{name}': {_first_line(e)}; check data.iceberg.catalog"
        ) from None


def load_table(cfg: IcebergSource):
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    catalog = load_catalog(cfg)
    try:
        return catalog.load_table(cfg.table)
    except (NoSuchTableError, NoSuchNamespaceError):
        raise DataError(
            f"Iceberg table '{cfg.table}' does not exist in catalog '{catalog.name}'; check data.iceberg.table",
            table=cfg.table,
        ) from None


def snapshot(cfg: IcebergSource, table) -> tuple[int, pa.Schema]:
    """The snapshot id to read and its schema.

    Raises:
        DataError: the table has no snapshot (never written), or ``snapshot_id`` is not one of its snapshots.
    """
    if cfg.snapshot_id is not None:
        snap = table.snapshot_by_id(cfg.snapshot_id)
        if snap is None:
            known = ", ".join(str(s.snapshot_id) for s in table.snapshots()[-5:]) or "none"
            raise DataError(
                f"Iceberg table '{cfg.table}' has no snapshot {cfg.snapshot_id} (expired?); recent: {known}",
                snapshot_id=cfg.snapshot_id,
            )
    else:
        snap = table.current_snapshot()
        if snap is None:
            raise DataError(f"Iceberg table '{cfg.table}' has no snapshot (no rows written yet)", table=cfg.table)
    schema = table.schemas().get(snap.schema_id, table.schema())
    return snap.snapshot_id, _plain(schema.as_arrow())


def _plain(schema: pa.Schema) -> pa.Schema:
    """Iceberg's Arrow schema with ``large_string`` as ``string`` and no field ids (raypipe's contract types)."""
    fields = []
    for f in schema:
        t = pa.string() if pa.types.is_large_string(f.type) else f.type
        fields.append(pa.field(f.name, t, nullable=True))
    return pa.schema(fields)


def dataset(cfg: IcebergSource, snapshot_id: int, schema: pa.Schema):
    """The snapshot's rows as a Ray Dataset (Ray Data's ``read_iceberg``), cast to ``schema``."""
    import ray.data

    from raypipe.data.sources._types import conform

    props = {"name": "default", **catalog_properties(cfg)}
    kwargs: dict[str, Any] = {"table_identifier": cfg.table, "snapshot_id": snapshot_id, "catalog_kwargs": props}
    if cfg.row_filter:
        kwargs["row_filter"] = cfg.row_filter
    ds = ray.data.read_iceberg(**kwargs)
    return ds.map_batches(conform, batch_format="pyarrow", batch_size=None, fn_args=(schema,), zero_copy_batch=True)


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]
