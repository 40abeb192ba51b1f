"""One record of the served API as a JSON Schema object, from the contract and the parser's policies.

What the server rejects is a hard constraint (``enum``, ``minimum``/``maximum``, ``multipleOf``,
``additionalProperties: false``); what it only flags or scores as missing is described
(``x-training-range``, ``x-categories``, the description) and constrains nothing. The example is
the contract's real row, or a valid one where the policies would reject that row.

    record_schema(contract, parser)   a property per feature, required fields, the example
"""

from __future__ import annotations

import dataclasses
from typing import Any

from raypipe.data.records import RequestError, RequestParser
from raypipe.data.schema import ColumnSpec, Contract

__all__ = ["DESCRIBED_LEVELS", "record_schema"]

DESCRIBED_LEVELS = 50
"""Levels listed in ``x-categories`` when unseen ones are accepted (an ``enum`` lists them all)."""


def _whole(dtype: str) -> bool:
    return dtype.startswith(("int", "uint"))


def _int_coded(spec: ColumnSpec) -> bool:
    return _whole(spec.dtype) and all(c.lstrip("-").isdigit() for c in spec.categories or [])


def _numeric(spec: ColumnSpec, reject: bool, notes: list[str]) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "number"}
    bounds = {k: v for k, v in (("min", spec.min), ("max", spec.max)) if v is not None}
    if bounds:
        span = f"{spec.min:g}..{spec.max:g}" if len(bounds) == 2 else ", ".join(f"{k} {v:g}" for k, v in bounds.items())
        if reject:
            s |= {"minimum": spec.min} if spec.min is not None else {}
            s |= {"maximum": spec.max} if spec.max is not None else {}
            notes.append(f"training range {span}: outside it is a 422")
        else:
            s["x-training-range"] = bounds
            notes.append(f"training range {span}: outside it is scored and named in `warnings`")
    if _whole(spec.dtype):
        if reject:
            s["multipleOf"] = 1
            notes.append("whole numbers only")
        else:
            notes.append("a fraction is named in `warnings`")
    return s


def _categorical(spec: ColumnSpec, reject: bool, notes: list[str]) -> dict[str, Any]:
    int_coded = _int_coded(spec)
    levels: list[Any] = [int(c) for c in spec.categories or []] if int_coded else list(spec.categories or [])
    s: dict[str, Any] = {"type": "integer" if int_coded else "string"}
    if int_coded:
        notes.append('int-coded: 7 or "7"')
    if reject and levels:
        # OpenAPI 3.0: a nullable enum lists null among its values.
        s["enum"] = levels + [None] if spec.nullable else levels
        notes.append(f"one of the {len(levels)} trained levels: another is a 422")
    else:
        # Described, not a constraint: the most frequent levels only (a 4,000-level id made /docs a wall).
        s["x-categories"] = levels[:DESCRIBED_LEVELS]
        more = (
            f" (the {DESCRIBED_LEVELS} most frequent listed; all in /metadata)"
            if len(levels) > DESCRIBED_LEVELS
            else ""
        )
        notes.append(
            f"{len(levels)} trained levels{more}; another is scored as missing (as rare levels were in training)"
        )
    return s


def _timestamp(spec: ColumnSpec, notes: list[str]) -> dict[str, Any]:
    if spec.format:  # trained on strings: sent as such a string, parsed with the training format
        notes.append(f"a date string in the training format {spec.format}")
        return {"type": "string", "x-strptime-format": spec.format}
    notes.append("ISO 8601 date-time")
    return {"type": "string", "format": "date-time"}


def _feature(spec: ColumnSpec, parser: RequestParser, example: Any) -> dict[str, Any]:
    notes: list[str] = [f"{spec.kind} ({spec.dtype} in training)"]
    if spec.kind == "numeric":
        s = _numeric(spec, parser.out_of_range == "reject", notes)
    elif spec.kind == "categorical":
        s = _categorical(spec, parser.unseen_categories == "reject", notes)
    elif spec.kind == "boolean":
        s = {"type": "boolean"}
    else:
        s = _timestamp(spec, notes)
    if spec.nullable:
        s["nullable"] = True
        notes.append("null: missing")
    else:
        notes.append("never null in training: null is a 422")
    s["description"] = "; ".join(notes)
    if example is not None:
        s["example"] = example
    return s


def _example(contract: Contract, parser: RequestParser) -> dict[str, Any]:
    """The contract's real row, unless the active policies reject it (an untrained level, say):
    then a record built from the specs, which they accept."""
    record = contract.example_record()
    try:
        parser.validate(record)
    except RequestError:
        record = dataclasses.replace(contract, example=None).example_record()
    return record


def record_schema(contract: Contract, parser: RequestParser) -> dict[str, Any]:
    """One record as a JSON Schema object: a property per feature, as ``parser`` validates it.

    Example:
        >>> record_schema(contract, RequestParser(contract))["properties"]["carrier"]  # doctest: +SKIP
        {'type': 'string', 'x-categories': ['UA', 'B6', 'EV'], 'description': '...', 'example': 'UA'}
    """
    example = _example(contract, parser)
    reject = parser.unknown_fields == "reject"
    return {
        "title": "Record",
        "type": "object",
        "description": "One row of features, as in training. "
        + ("A field not listed here is a 422." if reject else "A field not listed here is ignored."),
        "properties": {f.name: _feature(f, parser, example.get(f.name)) for f in contract.features},
        "required": contract.feature_names,
        "additionalProperties": not reject,
        "example": example,
    }
