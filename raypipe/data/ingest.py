"""Find, fingerprint and stream partitioned Parquet (decoding every file to name a broken one is
:mod:`raypipe.data.validate`)."""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from raypipe.data.validate import listed
from raypipe.errors import DataError, SchemaError

BUILTIN_SCHEME = "dataset://"


@dataclass(frozen=True)
class Source:
    """The files behind ``data.path`` after partition pruning (metadata only)."""

    uri: str
    filesystem: pafs.FileSystem
    base: str
    files: tuple[str, ...]
    sizes: tuple[int, ...]
    mtimes: tuple[float, ...]
    schema: pa.Schema
    """Unified schema, hive partition columns included."""
    partition_columns: tuple[str, ...]
    filter: str | None
    partition_values: tuple[dict[str, Any], ...] = ()
    """Per file, its hive partition values, typed as in ``schema``."""
    skipped: tuple[str, ...] = ()
    """Files under ``base`` that are not Parquet (``part-1.csv``), left out of the data."""

    def relpath(self, path: str) -> str:
        return posixpath.relpath(path, self.base) if path.startswith(self.base) else path


def resolve_path(path: str, cache_dir: Path, *, build: bool = True) -> str:
    """Map ``dataset://flights`` / ``dataset://synth?rows=N`` to a built local folder (built on first use).

    Raises:
        DataError: an unknown built-in name, or (``build=False``) one not built yet.
    """
    if not path.startswith(BUILTIN_SCHEME):
        return path
    name, _, query = path[len(BUILTIN_SCHEME) :].partition("?")
    params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
    if name == "flights":
        from raypipe.data.datasets.flights import build_flights, is_built

        out = cache_dir / "flights"
    elif name == "synth":
        from raypipe.data.datasets.synth import write_synth

        rows, seed = int(params.get("rows", 200_000)), int(params.get("seed", 0))
        out = cache_dir / f"synth-{rows}-{seed}"
    else:
        raise DataError(f"unknown built-in dataset '{path}'; known: dataset://flights, dataset://synth?rows=N")
    built = is_built(out) if name == "flights" else out.is_dir()  # write_synth renames a finished folder into place
    if not built and not build:
        raise DataError(f"built-in dataset '{path}' is not built yet under {out}", path=path, folder=str(out))
    if name == "flights":
        return str(build_flights(out))
    if not built:
        write_synth(out, rows, seed=seed)
    return str(out)


def discover(path: str, filter: str | None = None) -> Source:
    """List the Parquet files under ``path`` and prune partitions by ``filter``.

    Raises:
        DataError: the path is missing or holds no Parquet files, or the filter
            matches no partition.
    """
    try:
        fs, base = pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, ValueError):
        fs, base = pafs.LocalFileSystem(), str(Path(path).expanduser().resolve())
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise DataError(f"data path '{path}' does not exist; check data.path", path=path)
    skipped: tuple[str, ...] = ()
    try:
        if info.type == pafs.FileType.File:
            dataset = pads.dataset([base], filesystem=fs, format="parquet")
        else:
            selector = pafs.FileSelector(base, recursive=True)
            visible = sorted(
                f.path
                for f in fs.get_file_info(selector)
                if f.type == pafs.FileType.File
                and not any(part.startswith(("_", ".")) for part in posixpath.relpath(f.path, base).split("/"))
            )
            paths = [p for p in visible if p.endswith(".parquet")]
            skipped = tuple(posixpath.relpath(p, base) for p in visible if not p.endswith(".parquet"))
            if not paths:
                found = f"; it holds only other files ({listed(skipped)})" if skipped else ""
                raise DataError(f"no Parquet files under '{path}'{found}; check data.path", path=path)
            dataset = pads.dataset(
                paths,
                filesystem=fs,
                format="parquet",
                partitioning=pads.HivePartitioning.discover(infer_dictionary=False),
                partition_base_dir=base,
            )
    except pa.ArrowInvalid as e:
        # Schema inference reads the first footer: name the file if Arrow did not.
        raise DataError(f"cannot open Parquet data under '{path}': {e}", path=path) from None
    part_cols = tuple(n for n in dataset.schema.names if n not in _file_schema_names(dataset))
    fragments = list(dataset.get_fragments())
    if filter:
        expr = parse_filter(filter)
        part_only = set(_expr_columns(filter)) <= set(part_cols)
        if part_only:
            fragments = list(dataset.get_fragments(filter=expr))
            if not fragments:
                raise DataError(
                    f"data.filter '{filter}' matches no partition under '{path}'",
                    path=path,
                )
    files = tuple(f.path for f in fragments)
    infos = fs.get_file_info(list(files))
    return Source(
        uri=path,
        filesystem=fs,
        base=base if info.type != pafs.FileType.File else posixpath.dirname(base),
        files=files,
        sizes=tuple(int(i.size or 0) for i in infos),
        mtimes=tuple(i.mtime.timestamp() if i.mtime else 0.0 for i in infos),
        schema=dataset.schema,
        partition_columns=part_cols,
        filter=filter,
        partition_values=tuple(pads.get_partition_keys(f.partition_expression) for f in fragments),
        skipped=skipped,
    )


def _file_schema_names(dataset: pads.FileSystemDataset) -> set[str]:
    first = next(iter(dataset.get_fragments()), None)
    return set(first.physical_schema.names) if first is not None else set(dataset.schema.names)


def parse_filter(text: str) -> pads.Expression:
    """Parse ``"month <= 6 and origin == 'JFK'"`` into an Arrow expression."""
    from ray.data._internal.planner.plan_expression.expression_evaluator import (
        ExpressionEvaluator,
    )

    try:
        return ExpressionEvaluator.get_filters(text)
    except Exception as e:  # the parser raises bare ValueErrors/TypeErrors
        raise DataError(f"data.filter '{text}' is not a valid expression: {e}") from None


def _expr_columns(text: str) -> list[str]:
    import ast

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return []
    return [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]


def fingerprint(source: Source, columns: list[str] | None = None) -> str:
    """A cheap dataset digest: file list, sizes, mtimes, schema, filter, projection."""
    h = hashlib.sha256()
    for f, s, m in zip(source.files, source.sizes, source.mtimes):
        h.update(f"{source.relpath(f)}\0{s}\0{m:.6f}\n".encode())
    h.update(source.schema.to_string(show_schema_metadata=False).encode())
    h.update(json.dumps({"filter": source.filter, "columns": columns}).encode())
    return h.hexdigest()[:16]


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
"""The folder name Hive (and pyarrow) give a null partition value: ``month=__HIVE_DEFAULT_PARTITION__``."""


def _partitioning(source: Source):
    """Hive partitioning with the value types pyarrow inferred (Ray defaults to strings).

    A column with a null folder is read as strings (Ray would fail casting the folder name)
    and typed by ``hive_folder_values``.
    """
    from ray.data.datasource.partitioning import Partitioning

    if not source.partition_columns:
        return None
    with_null = _null_partition_columns(source)
    types = {}
    for name in source.partition_columns:
        t = source.schema.field(name).type
        numeric = name not in with_null and (pa.types.is_integer(t) or pa.types.is_floating(t))
        types[name] = (int if pa.types.is_integer(t) else float) if numeric else str
    return Partitioning("hive", base_dir=source.base, field_types=types)


def _null_partition_columns(source: Source) -> set[str]:
    """Partition columns with a null folder (``HIVE_NULL``) for some file."""
    return {k for pv in source.partition_values for k, v in pv.items() if v is None}


def hive_folder_values(batch: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Columns read from hive folder names as strings, typed: Hive's null folder becomes null.

    Raises:
        DataError: a value cannot be cast; names the column and the type.
    """
    for name, typ in types.items():
        i = batch.schema.get_field_index(name)
        if i < 0:
            continue
        col = pc.cast(batch.column(i), pa.string())
        col = pc.if_else(pc.equal(col, HIVE_NULL), pa.scalar(None, pa.string()), col)
        try:
            col = pc.cast(col, typ)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataError(f"column '{name}': a folder {name}=<value> is not {typ}: {e}", column=name) from None
        batch = batch.set_column(i, pa.field(name, typ), col)
    return batch


def read(source: Source, columns: list[str] | None = None):
    """Stream the source as a Ray Dataset with projection and predicate pushdown."""
    import ray.data

    missing = [c for c in columns or [] if c not in source.schema.names]
    if missing:
        raise SchemaError(
            f"column(s) {missing} not in the data under '{source.uri}'; available: {source.schema.names}",
            columns=missing,
        )
    ds = _whole_file_read(source, columns)
    if ds is None:
        ds = ray.data.read_parquet(
            list(source.files), filesystem=source.filesystem, columns=columns, partitioning=_partitioning(source)
        )
        wanted = columns or source.schema.names
        as_str = {c: source.schema.field(c).type for c in sorted(_null_partition_columns(source)) if c in wanted}
        if as_str:
            ds = ds.map_batches(
                hive_folder_values, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, fn_args=(as_str,)
            )
    if hasattr(ds.context, "op_resource_reservation_enabled"):
        # Per-operator reservation keeps a lone (fused) map operator, raypipe's usual plan, at about
        # one task in flight on a 2-CPU node (1.0 busy CPUs of 2; 2.1 s against 1.3 s for 4 M rows).
        # This context is this read's own copy: datasets derived from it share it, nothing else does.
        ds.context.op_resource_reservation_enabled = False
    if source.filter:
        from ray.data._internal.planner.plan_expression.expression_evaluator import (
            ExpressionEvaluator,
        )

        ds = ds.filter(expr=ExpressionEvaluator.parse_native_expression(source.filter))
    return ds


def _whole_file_read(source: Source, columns: list[str] | None):
    """Whole files per read task, cast to the discovered schema (see raypipe.data._filesource).

    Returns None (use Ray Data's reader) when files are too few to keep every CPU busy: Ray's
    reader then splits files by row group.
    """
    import ray
    import ray.data

    from raypipe.data._filesource import WholeFileParquet

    if not ray.is_initialized() or len(source.partition_values) != len(source.files):
        return None
    tasks = _file_read_tasks(source, ray.cluster_resources().get("CPU", 1.0))
    if tasks is None:
        return None
    names = columns or source.schema.names
    schema = pa.schema([source.schema.field(n) for n in names])
    values = [{k: v for k, v in pv.items() if k in names} for pv in source.partition_values]
    ds = WholeFileParquet(source.files, source.sizes, source.filesystem, schema, values, tasks)
    return ray.data.read_datasource(ds, override_num_blocks=tasks)


# Read tasks get whole files when there are at least this many files per CPU, and about this
# much Parquet (on disk) each, but no fewer than 4 tasks per CPU (balance).
_MIN_FILES_PER_CPU = 2
_READ_TASK_BYTES = 64 * 1024 * 1024


def _file_read_tasks(source: Source, cpus: float) -> int | None:
    """How many whole-file read tasks to use, or None: too few files to keep every CPU busy, and
    big enough that splitting them by row group pays for Ray's planning pass (about 1.5 s a read
    on 2 CPUs: most of a small run's read time)."""
    if len(source.files) < _MIN_FILES_PER_CPU * cpus and max(source.sizes, default=0) > _READ_TASK_BYTES:
        return None
    by_size = -(-sum(source.sizes) // _READ_TASK_BYTES)
    return max(1, min(len(source.files), max(int(4 * cpus), by_size)))
