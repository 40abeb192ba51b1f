"""ingest: decode every file of the source in Ray tasks, so a corrupt or mismatched file is named;
a SQL or Iceberg source is read once into a Parquet snapshot kept in the stage's cache entry."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from raypipe.data import ingest as source_files
from raypipe.data import sources, validate
from raypipe.errors import DataError
from raypipe.pipeline.stages._io import read_json, write_json

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext


@dataclass
class Ingested:
    fingerprint: str
    files: int
    validated: bool
    listing: list[tuple[str, int, float]] = field(default_factory=list)
    """``(path relative to data.path, bytes, mtime)`` per file: what ``raypipe plan`` diffs."""
    notes: list[str] = field(default_factory=list)
    """Files left out, columns only some files have."""
    rows: int | None = None
    """Rows read from a SQL or Iceberg source (None: Parquet, read in place)."""
    version: dict | None = None
    """A SQL or Iceberg source's data version and the cache rule that applied (see raypipe.data.sources)."""
    snapshot: str | None = None
    """The Parquet snapshot of a SQL or Iceberg source: ``<entry>/rows``."""

    def save(self, d: Path) -> None:
        if self.snapshot is not None:
            os.replace(self.snapshot, d / _ROWS)  # staged on the cache's file system: a rename
            Path(self.snapshot).parent.rmdir()
            self.snapshot = str(d / _ROWS)
        write_json(d / "ingest.json", asdict(self) | {"snapshot": None})

    def moved(self, d: Path) -> None:
        if self.snapshot is not None:
            self.snapshot = str(d / _ROWS)

    @classmethod
    def load(cls, d: Path) -> Ingested:
        result = cls(**read_json(d / "ingest.json"))
        if result.version is not None:
            if not (d / _ROWS).is_dir():
                raise FileNotFoundError(d / _ROWS)  # a miss: read the source again
            result.snapshot = str(d / _ROWS)
        return result


_ROWS = "rows"


def listing(source: source_files.Source) -> list[tuple[str, int, float]]:
    return [(source.relpath(f), s, round(m, 6)) for f, s, m in zip(source.files, source.sizes, source.mtimes)]


def ingest(ctx: RunContext) -> Ingested:
    if isinstance(ctx.source, sources.WarehouseSource):
        return _snapshot(ctx, ctx.source)
    data = ctx.cfg.data
    notes = validate.skipped_note(ctx.source)
    if data.validate_files:
        notes += validate.validate_files(ctx.source, schema_drift=data.quality.schema_drift)
    return Ingested(ctx.fingerprint, len(ctx.source.files), data.validate_files, listing(ctx.source), notes)


def _snapshot(ctx: RunContext, source: sources.WarehouseSource) -> Ingested:
    """Read the pinned version of a SQL or Iceberg source once, into Parquet staged beside the cache."""
    import pyarrow.parquet as pq

    from raypipe.data import splitfiles

    staging = splitfiles.staging_folder(ctx.paths.cache / "ingest")
    try:
        sources.read_warehouse(source, ctx.session.total_cpus if ctx.session else 2).write_parquet(str(staging / _ROWS))
        files = sorted((staging / _ROWS).glob("*.parquet")) if (staging / _ROWS).is_dir() else []
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        if rows == 0:
            raise DataError(
                f"{ctx.cfg.data.source_name} returned no rows; check data.sql.query / data.iceberg.row_filter"
            )
    except BaseException:
        splitfiles.remove(staging)
        raise
    version = {**source.version, "rule": source.rule}
    return Ingested(ctx.fingerprint, len(files), False, rows=rows, version=version, snapshot=str(staging / _ROWS))


def record(ctx: RunContext, result: Ingested) -> None:
    """Later stages read the snapshot of a SQL or Iceberg source like any Parquet source."""
    if result.snapshot is not None:
        ctx.source = source_files.discover(result.snapshot, ctx.cfg.data.filter)


def describe(ctx: RunContext, result: Ingested) -> str:
    if result.version is not None:
        rule = result.version.get("rule", "")
        fp = result.fingerprint
        return f"{result.rows:,} rows from {ctx.cfg.data.source_name}; data version: {rule}; fingerprint {fp}"
    notes = f"; {len(result.notes)} note(s)" if result.notes else ""
    return f"{result.files} files, fingerprint {result.fingerprint}{notes}"
