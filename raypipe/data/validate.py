"""Decode every Parquet file of a source in Ray tasks, and say what does not match.

Ray Data alone does not name a broken file (``read_parquet`` raises ``ArrowInvalid`` without a
path, and a file with corrupt pages but an intact footer passes ``count()``), so each file is
opened and decoded in a Ray task that attaches its path before the real read starts.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raypipe.errors import DataError, SchemaError

if TYPE_CHECKING:
    from raypipe.data.ingest import Source


def listed(names, limit: int = 5) -> str:
    names = list(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def skipped_note(source: Source) -> list[str]:
    """A note naming the non-Parquet files under ``data.path`` that the run leaves out."""
    if not source.skipped:
        return []
    return [f"{len(source.skipped)} non-Parquet file(s) under data.path left out: {listed(source.skipped)}"]


def _check_files(paths: list[str], filesystem: pafs.FileSystem) -> list[dict[str, Any]]:
    """Open each file's footer and decode every page; report errors per file."""
    out = []
    for path in paths:
        try:
            with filesystem.open_input_file(path) as f:
                # Page CRCs (written by Spark/parquet-mr and others) catch corrupt values that still decode.
                pf = pq.ParquetFile(f, page_checksum_verification=True)
                schema = pf.schema_arrow
                for i in range(pf.num_row_groups):
                    pf.read_row_group(i)  # decodes pages: catches corrupt data behind a good footer
            out.append(
                {
                    "path": path,
                    "schema": {n: str(schema.field(n).type) for n in schema.names},
                }
            )
        except Exception as e:  # Arrow raises several types; all mean "unreadable"
            out.append({"path": path, "error": f"{type(e).__name__}: {' '.join(str(e).split())}"})  # one line
    return out


def validate_files(source: Source, max_files_per_task: int = 16, schema_drift: str = "warn") -> list[str]:
    """Decode every file in Ray tasks; raise once, naming each bad file and column.

    Returns notes on columns present in some files only (``schema_drift: warn``).

    Raises:
        DataError: a file is truncated or corrupt.
        SchemaError: a file's column types disagree with the other files, or (``schema_drift:
            fail``) a column is missing from some files.
    """
    import ray

    files = list(source.files)
    n_tasks = max(1, min(len(files), int(ray.cluster_resources().get("CPU", 1) * 2)))
    size = max(1, min(max_files_per_task, -(-len(files) // n_tasks)))
    check = ray.remote(num_cpus=0.5, max_retries=0)(_check_files)
    refs = [check.remote(files[i : i + size], source.filesystem) for i in range(0, len(files), size)]
    results = [r for chunk in ray.get(refs) for r in chunk]

    broken = [r for r in results if "error" in r]
    if broken:
        first = broken[0]
        more = f" (and {len(broken) - 1} more files)" if len(broken) > 1 else ""
        raise DataError(
            f"corrupt Parquet file '{source.relpath(first['path'])}' ({first['error']}){more}; "
            "re-export it or remove it from data.path",
            files=[r["path"] for r in broken],
        )
    problems = _schema_disagreements(results)
    if problems:
        col, path, got, want = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SchemaError(
            f"file '{source.relpath(path)}' has column '{col}' as {got}, other files have {want}{more}; "
            "rewrite the file with a consistent schema",
            file=path,
            column=col,
        )
    drift = [] if schema_drift == "off" else _column_drift(results, source)
    if drift and schema_drift == "fail":
        raise SchemaError(drift[0] + " (data.quality.schema_drift: fail)", column=drift[0].split("'")[1])
    return drift


def _column_drift(results: list[dict[str, Any]], source: Source) -> list[str]:
    """One line per column that some files have and others lack (read as null where missing)."""
    having: dict[str, list[str]] = {}
    for r in results:
        for col in r["schema"]:
            having.setdefault(col, []).append(r["path"])
    lines = []
    for col, paths in having.items():
        if len(paths) < len(results):
            present = set(paths)
            missing = [source.relpath(r["path"]) for r in results if r["path"] not in present]
            where = f"only in {listed(source.relpath(p) for p in paths)}"
            lines.append(f"column '{col}' is {where}, not in {listed(missing)}: read as null where missing")
    return lines


def _schema_disagreements(
    results: list[dict[str, Any]],
) -> list[tuple[str, str, str, str]]:
    types: dict[str, Counter[str]] = {}
    for r in results:
        for col, typ in r["schema"].items():
            types.setdefault(col, Counter())[_type_family(typ)] += 1
    problems = []
    for r in results:
        for col, typ in r["schema"].items():
            majority = types[col].most_common(1)[0][0]
            if _type_family(typ) != majority:
                problems.append((col, r["path"], typ, majority))
    return problems


def _type_family(typ: str) -> str:
    """Widths may differ between files (int32 vs int64); kinds may not."""
    if typ.startswith(("int", "uint")):
        return "integer"
    if typ in ("float", "double", "halffloat") or typ.startswith(("float", "double", "decimal")):
        return "floating"
    if typ in ("string", "large_string", "utf8", "large_utf8") or typ.startswith("dictionary"):
        return "string"
    if typ.startswith("timestamp") or typ.startswith("date"):
        return "timestamp"
    return typ
