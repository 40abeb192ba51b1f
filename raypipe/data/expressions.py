"""Derived columns: a tiny, safe arithmetic language evaluated with Arrow compute.

``"temp - dewp"``, ``"distance / 100"``, ``"log(1 + wind_speed)"``: column names,
numbers, ``+ - * /``, unary minus, and ``log``, ``sqrt``, ``abs``. Nothing else
parses, so a config cannot run arbitrary code.
"""

from __future__ import annotations

import ast

import pyarrow as pa
import pyarrow.compute as pc

from raypipe.errors import ConfigError

_BINOPS = {ast.Add: pc.add, ast.Sub: pc.subtract, ast.Mult: pc.multiply, ast.Div: pc.divide}
_FUNCS = {"log": pc.ln, "sqrt": pc.sqrt, "abs": pc.abs}


def _parse(name: str, expr: str) -> ast.expr:
    try:
        return ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise ConfigError(f"features.derived.{name}: '{expr}' is not a valid expression") from None


def check_expression(name: str, expr: str, columns: set[str]) -> None:
    """Raise ConfigError unless ``expr`` uses only allowed syntax and known columns."""
    for node in ast.walk(_parse(name, expr)):
        if isinstance(node, ast.Name) and node.id not in columns and node.id not in _FUNCS:
            raise ConfigError(f"features.derived.{name}: unknown column '{node.id}' in '{expr}'")
        allowed = (ast.BinOp, ast.UnaryOp, ast.USub, ast.Name, ast.Constant, ast.Call, ast.Load, *_BINOPS)
        if not isinstance(node, allowed):
            raise ConfigError(f"features.derived.{name}: '{type(node).__name__}' is not allowed in '{expr}'")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCS):
            raise ConfigError(f"features.derived.{name}: only {sorted(_FUNCS)} may be called in '{expr}'")


def evaluate_expression(expr: str, table: pa.Table) -> pa.Array:
    """Evaluate on a batch; the result is float64 (nulls where inputs are null)."""

    def ev(node: ast.expr):
        if isinstance(node, ast.Constant):
            return pa.scalar(float(node.value))
        if isinstance(node, ast.Name):
            col = table.column(node.id)
            return pc.cast(col, pa.float64())
        if isinstance(node, ast.UnaryOp):
            return pc.negate(ev(node.operand))
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.Call):
            return _FUNCS[node.func.id](ev(node.args[0]))
        raise ConfigError(f"unsupported expression '{expr}'")

    out = ev(ast.parse(expr, mode="eval").body)
    if isinstance(out, pa.Scalar):
        out = pa.array([out.as_py()] * table.num_rows, pa.float64())
    if isinstance(out, pa.ChunkedArray):
        out = out.combine_chunks()
    return out
