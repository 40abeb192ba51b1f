"""The lazy Ray Datasets stages read: the source, the source with its split column, one split's raw rows.

Built once per run (memoised on the context) and only after the ingest stage: reading the
schema of a corrupt file must fail there, by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa

from raypipe.data import ingest
from raypipe.data.profile import SPLIT_NAMES
from raypipe.data.schema import Contract
from raypipe.data.split import SPLIT_COLUMN, add_split_column
from raypipe.model import SCORING_BATCH_ROWS

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext


def source(ctx: RunContext):
    """Every row of the source (projected to ``data.columns``)."""
    return ctx.memo("source", lambda: ingest.read(ctx.source, ctx.cfg.data.columns))


def split_key(ctx: RunContext) -> list[str]:
    """The columns a row's hash is made of: ``data.split.key``, ``data.id_column`` or every column."""
    cfg = ctx.cfg.data
    return cfg.split.key or ([cfg.id_column] if cfg.id_column else list(ctx.columns))


def with_split(ctx: RunContext):
    """The source with the split column (0 train, 1 valid, 2 test; by hash or time)."""
    cfg = ctx.cfg.data
    key = split_key(ctx)
    return ctx.memo(
        "with_split",
        lambda: source(ctx).map_batches(
            add_split_column,
            batch_format="pyarrow",
            fn_kwargs={"key": key, "cfg": cfg.split},
            zero_copy_batch=True,
        ),
    )


def split_rows(ctx: RunContext, name: str):
    """The raw rows of one split (``train``, ``valid`` or ``test``), split column included."""
    from ray.data.expressions import col

    return with_split(ctx).filter(expr=col(SPLIT_COLUMN) == SPLIT_NAMES.index(name))


def batches(ds) -> Iterator[pa.Table]:
    """A dataset's rows as Arrow batches of the scoring size."""
    return iter(ds.iter_batches(batch_size=SCORING_BATCH_ROWS, batch_format="pyarrow"))


def declared(ctx: RunContext) -> Contract | None:
    """The contract the user declared (``data.schema_file``), if any."""
    path = ctx.cfg.data.schema_file
    return ctx.memo("declared", lambda: Contract.load(path) if path else None)


def schema(ctx: RunContext) -> pa.Schema:
    """The source's schema, restricted to the columns read."""
    return pa.schema([ctx.source.schema.field(n) for n in ctx.columns])
