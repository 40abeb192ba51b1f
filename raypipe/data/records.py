"""Records validated against the schema contract: the HTTP API's request parser, and
``Model.predict``'s.

Every problem is reported with its record index and field name, and never
reaches the model: bad input is a 4xx (a SchemaError in Python), not a crashed replica.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Annotated, Any, Literal

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictFloat,
    TypeAdapter,
    ValidationError,
    create_model,
)

from raypipe.config.serve import ServeConfig
from raypipe.data.domain import domain_warnings, out_of_domain
from raypipe.data.schema import Contract

_SERVE_DEFAULTS = ServeConfig.model_fields  # the policies' defaults live in the config, once


def _finite_category(v: Any) -> Any:
    # Coercing numbers to str would turn NaN/1e400 into "nan"/"inf", scored as missing.
    if isinstance(v, float) and not math.isfinite(v):
        raise ValueError(f"{v} is not a category (send null for missing)")
    return v


# Strict kinds: a bool is not a number, " 12 " is not a number, 1 is not a bool; a client
# sending them has a bug upstream that lax coercion would hide.
_PY_TYPES: dict[str, Any] = {
    "numeric": StrictFloat,  # ints are accepted as floats
    "categorical": Annotated[str, BeforeValidator(_finite_category)],  # 7 or "7" for int-coded levels
    "boolean": StrictBool,
    "timestamp": dt.datetime,
}
_ARROW_TYPES = {
    "numeric": pa.float64(),
    "categorical": pa.string(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us"),
}


def _py_type(spec) -> Any:
    # A timestamp the model was trained on as strings ("01-Jan-1995") arrives as such a string.
    t = str if spec.kind == "timestamp" and spec.format else _PY_TYPES[spec.kind]
    # Null is missing, except in a field the contract says was never null in training.
    return t | None if spec.nullable else t


class RequestError(Exception):
    """A client error: ``status`` is the HTTP code, ``errors`` name each field."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "detail": self.errors}


class RequestParser:
    """Validates JSON records against the contract and builds an Arrow table.

    Policies: ``unknown_fields`` ``reject`` (422 naming the field) or ``ignore``;
    ``unseen_categories`` ``missing`` (scored as missing, as training does with rare
    levels) or ``reject`` (422 naming the field and record); ``out_of_range`` ``flag``
    (scored, with a warning per field) or ``reject`` (422) for numbers outside the
    training range or not whole in an integer field. Wrong kinds are always a 422 naming
    the field: a bool or a string for a number, NaN or +/-Infinity anywhere (JSON has no
    such numbers; send ``null`` for missing), null in a field never null in training.
    """

    def __init__(
        self,
        contract: Contract,
        max_records: int = _SERVE_DEFAULTS["max_records"].default,
        unknown_fields: Literal["reject", "ignore"] = _SERVE_DEFAULTS["unknown_fields"].default,
        unseen_categories: Literal["reject", "missing"] = _SERVE_DEFAULTS["unseen_categories"].default,
        out_of_range: Literal["reject", "flag"] = _SERVE_DEFAULTS["out_of_range"].default,
    ) -> None:
        fields = {f.name: (_py_type(f), ...) for f in contract.features}
        extra = "forbid" if unknown_fields == "reject" else "ignore"
        record = create_model(
            "Record", __config__=ConfigDict(extra=extra, allow_inf_nan=False, coerce_numbers_to_str=True), **fields
        )
        # Unseen-category check: one vectorised is_in per categorical column.
        self._vocab = (
            {f.name: pa.array(f.categories or [], pa.string()) for f in contract.features if f.kind == "categorical"}
            if unseen_categories == "reject"
            else {}
        )
        self.unknown_fields = unknown_fields
        self.unseen_categories = unseen_categories
        self.out_of_range = out_of_range
        self._contract = contract
        self.record_model: type[BaseModel] = record
        self._one = TypeAdapter(record)
        self._many = TypeAdapter(list[record])
        self._schema = pa.schema(
            [(f.name, pa.string() if f.format else _ARROW_TYPES[f.kind]) for f in contract.features]
        )
        self.max_records = max_records

    def parse(self, body: bytes) -> pa.Table:
        """Raises RequestError (400 not JSON, 422 invalid fields)."""
        return self.parse_records(self.load_json(body))

    @staticmethod
    def load_json(body: bytes) -> Any:
        """Raises RequestError 400 for a body that is not JSON."""
        try:
            return orjson.loads(body)  # the fast path for valid JSON
        except orjson.JSONDecodeError:
            pass
        # orjson refuses NaN/Infinity; the stdlib parses them so the 422 can name the field.
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(400, f"body is not valid JSON: {e}") from None
        except RecursionError:
            raise RequestError(400, "body is not valid JSON: nested too deeply") from None

    def validate(self, payload: Any) -> tuple[pa.Table, list[dict[str, Any]]]:
        """``parse_records`` plus the range check: the table and its warnings (``out_of_range: flag``).

        Raises:
            RequestError: as ``parse_records``; 422 for out-of-range values under ``out_of_range: reject``.
        """
        table = self.parse_records(payload)
        masks = out_of_domain(table, self._contract)
        if not masks:
            return table, []
        warnings = domain_warnings(table, self._contract, masks)
        if self.out_of_range == "reject":
            raise RequestError(422, _summary(warnings), warnings)
        return table, warnings

    def parse_records(self, payload: Any) -> pa.Table:
        if isinstance(payload, list) and len(payload) > self.max_records:
            raise RequestError(413, f"{len(payload)} records in one request; the limit is {self.max_records}")
        is_list = isinstance(payload, list)
        if not is_list and not isinstance(payload, dict):
            raise RequestError(422, "body must be a JSON object (one record) or a list of records")
        try:
            parsed = (self._many if is_list else self._one).validate_python(payload)
        except ValidationError as e:
            errors = [_error(err, is_list) for err in e.errors()]
            raise RequestError(422, _summary(errors), errors) from None
        records = parsed if is_list else [parsed]
        if not records:
            raise RequestError(422, "no records in the request")
        try:
            table = pa.Table.from_pylist([r.model_dump() for r in records], schema=self._schema)
        except (pa.ArrowException, OverflowError, ValueError) as e:
            raise RequestError(422, f"a value cannot be represented: {e}") from None
        if self._vocab:
            self._check_categories(table)
        return table

    def _check_categories(self, table: pa.Table) -> None:
        errors = []
        for name, vocab in self._vocab.items():
            col = table.column(name)
            bad = pc.and_(pc.invert(pc.is_in(col, value_set=vocab)), pc.is_valid(col))
            if pc.any(bad).as_py():
                for i in pc.indices_nonzero(bad).to_pylist():  # error path only
                    msg = f"unseen category {col[i].as_py()!r} (not among the {len(vocab)} trained levels)"
                    errors.append({"record": i, "field": name, "msg": msg, "type": "unseen_category"})
        if errors:
            raise RequestError(422, _summary(errors), errors)


def _summary(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"record {x['record']} field '{x['field']}': {x['msg']}" for x in errors[:10])


def _error(err: dict[str, Any], is_list: bool) -> dict[str, Any]:
    loc = list(err["loc"])
    record = loc.pop(0) if is_list and loc and isinstance(loc[0], int) else 0
    field = ".".join(str(p) for p in loc) or "body"
    return {"record": record, "field": field, "msg": err["msg"], "type": err["type"]}
