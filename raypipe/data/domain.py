"""Values inside their kind but outside what the model learned: the ``out_of_range`` policy's check.

Derived from the contract, one vectorised pass per numeric column of an Arrow table:
below the training minimum, above the training maximum, or a fraction in a column that was
integer in training (``month`` 1.5). The
same check runs at ``POST /predict`` and in ``raypipe predict``, so both flag the same rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.data.schema import ColumnSpec, Contract

_INTEGER = ("int", "uint")


def _is_integer(spec: ColumnSpec) -> bool:
    return spec.dtype.startswith(_INTEGER)


def _reason(spec: ColumnSpec, v: float) -> str:
    if spec.min is not None and v < spec.min:
        return f"{v:g} is below the training minimum {spec.min:g}"
    if spec.max is not None and v > spec.max:
        return f"{v:g} is above the training maximum {spec.max:g}"
    return f"{v:g} is not a whole number (the field was {spec.dtype} in training)"


def out_of_domain(table: pa.Table, contract: Contract) -> dict[str, np.ndarray]:
    """Per numeric field, a boolean mask of the rows outside the contract's domain (nulls are fine).

    Example:
        >>> masks = out_of_domain(table, contract)  # doctest: +SKIP
        >>> masks["month"].nonzero()[0]  # the rows with a month outside 1..12 or not whole  # doctest: +SKIP
    """
    masks = {}
    for spec in contract.features:
        if spec.kind != "numeric" or spec.name not in table.column_names:
            continue
        v = pc.cast(table.column(spec.name), pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            bad = np.zeros(len(v), bool)
            if spec.min is not None:
                bad |= v < spec.min
            if spec.max is not None:
                bad |= v > spec.max
            if _is_integer(spec):
                bad |= np.isfinite(v) & (v != np.floor(v))
        bad &= np.isfinite(v)  # NaN/inf (and nulls, NaN here) are wrong_kind's, not a range question
        if bad.any():
            masks[spec.name] = bad
    return masks


def wrong_kind(table: pa.Table, contract: Contract) -> dict[str, np.ndarray]:
    """Per field, the rows a request would get a 422 for: NaN/inf in a number, null where training had none.

    Serving's parser rejects these before scoring; batch files are typed, so only these two remain.
    """
    masks = {}
    for spec in contract.features:
        if spec.name not in table.column_names:
            continue
        col = table.column(spec.name)
        bad = np.zeros(len(table), bool)
        if not spec.nullable:
            bad |= np.asarray(pc.is_null(col, nan_is_null=spec.kind == "numeric"))
        if spec.kind == "numeric":
            v = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            bad |= ~np.isfinite(v) & ~np.asarray(pc.is_null(col, nan_is_null=False))
        if bad.any():
            masks[spec.name] = bad
    return masks


def domain_warnings(table: pa.Table, contract: Contract, masks: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One ``{record, field, value, msg, type}`` per flagged value (built only when something is flagged)."""
    out = []
    for name, bad in masks.items():
        spec = contract.feature(name)
        col = table.column(name)
        for i in np.flatnonzero(bad).tolist():
            v = float(col[i].as_py())
            out.append({"record": i, "field": name, "value": v, "msg": _reason(spec, v), "type": "out_of_range"})
    out.sort(key=lambda w: (w["record"], w["field"]))
    return out


def row_fields(num_rows: int, *masks: dict[str, np.ndarray]) -> pa.Array:
    """A ``list<string>`` column: the flagged field names of each row (empty when none)."""
    rows: list[list[str]] = [[] for _ in range(num_rows)]
    for group in masks:
        for name, bad in group.items():
            for i in np.flatnonzero(bad).tolist():
                rows[i].append(name)
    return pa.array(rows, pa.list_(pa.string()))
