"""SQL column types -> Arrow, one explicit table for every database raypipe reads.

A type outside the table is an error naming the column and the type, with the fix (cast it
in the query), never a silent string column.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

from raypipe.errors import SchemaError

_INT = pa.int64()
_FLOAT = pa.float64()
_STR = pa.string()

# Lower-case type names, without parameters (``numeric(10,2)`` -> ``numeric``), as PostgreSQL
# (pg_type.typname and format_type), DuckDB (DESCRIBE) and SQLite (declared affinity) spell them.
SQL_TO_ARROW: dict[str, pa.DataType] = {
    **dict.fromkeys(
        ["smallint", "integer", "int", "bigint", "int2", "int4", "int8", "tinyint", "utinyint", "usmallint",
         "uinteger", "serial", "bigserial", "smallserial", "int16", "int32", "int64", "long", "short"],
        _INT,
    ),
    **dict.fromkeys(["numeric", "decimal"], _FLOAT),
    **dict.fromkeys(["real", "float4", "float8", "double precision", "double", "float", "float32", "float64"], _FLOAT),
    **dict.fromkeys(["boolean", "bool"], pa.bool_()),
    **dict.fromkeys(
        ["text", "varchar", "character varying", "character", "char", "bpchar", "name", "string", "clob"], _STR
    ),
    "date": pa.date32(),
    **dict.fromkeys(["timestamp", "timestamp without time zone", "datetime", "timestamp_us"], pa.timestamp("us")),
    **dict.fromkeys(["timestamptz", "timestamp with time zone"], pa.timestamp("us", tz="UTC")),
}  # fmt: skip


def _base(type_name: str) -> str:
    name = re.sub(r"\(.*?\)", "", type_name.strip().lower()).strip()
    return " ".join(name.split())


def arrow_type(column: str, type_name: str, where: str) -> pa.DataType:
    """The Arrow type raypipe reads a SQL column as.

    Raises:
        SchemaError: the type is not in :data:`SQL_TO_ARROW`; names the column and the type.
    """
    t = SQL_TO_ARROW.get(_base(type_name))
    if t is None:
        raise SchemaError(
            f"column '{column}' of {where} has SQL type '{type_name}', which raypipe cannot map; "
            f"cast it in the query (e.g. CAST({column} AS TEXT)) or leave it out",
            column=column,
            type=type_name,
        )
    return t


def arrow_schema(columns: list[tuple[str, str]], where: str) -> pa.Schema:
    """``[(name, sql type)]`` -> the Arrow schema rows are read as (every unmappable column at once)."""
    fields, bad = [], []
    for name, typ in columns:
        try:
            fields.append(pa.field(name, arrow_type(name, typ, where)))
        except SchemaError as e:
            bad.append(e)
    if bad:
        more = f" (and {len(bad) - 1} more: {', '.join(e.context['column'] for e in bad[1:])})" if len(bad) > 1 else ""
        raise SchemaError(bad[0].message + more, column=bad[0].context["column"], type=bad[0].context["type"])
    return pa.schema(fields)


def conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """Cast what a driver returned to ``schema`` (decimals arrive as strings or decimal128)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    cols = []
    for f in schema:
        col = table.column(f.name)
        if isinstance(col.type, pa.ExtensionType):  # ADBC's opaque numeric: its storage is text
            col = pa.chunked_array([c.storage for c in col.chunks], type=col.type.storage_type)
        if col.type != f.type:
            col = pc.cast(col, f.type)
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=schema)
