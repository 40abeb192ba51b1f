"""The served API's OpenAPI document, built from the model's contract, and a self-contained ``/docs`` page.

The handlers read the raw ``Request`` (speed, and ``RequestParser``'s field-named 4xx), so FastAPI
sees no fields. The document is built here from the contract and from the parser's own validation
policies: what the server rejects is a hard constraint (``enum``, ``minimum``/``maximum``,
``multipleOf``, ``additionalProperties: false``); what it only flags or scores as missing is
described (``x-training-range``, ``x-categories``, the description) and constrains nothing.

OpenAPI 3.0.3, not FastAPI's 3.1: the Swagger UI that ``/docs`` serves (:mod:`raypipe.serve.docs`,
from ``swagger-ui-bundle``, 4.15) renders 3.0 only.

    openapi_document(contract, parser, ...)   the whole document, for ``GET /openapi.json``

One record's schema (a property per feature) comes from :mod:`raypipe.serve.record_schema`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np

from raypipe.data.records import RequestParser
from raypipe.data.schema import Contract
from raypipe.model import format_predictions
from raypipe.serve.record_schema import record_schema

__all__ = ["openapi_document"]

_JSON = "application/json"
_REF = "#/components/schemas/"
OPTIONAL_OPERATIONS = (("post", "/explain"), ("get", "/"))
"""Documented only when the app routes them (``operations``): they are added by other modules."""


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _label_schema(contract: Contract) -> dict[str, Any]:
    label = contract.label
    if label.task == "regression":
        return {"type": "number"}
    classes = label.classes or []
    if label.dtype == "bool":
        return {"type": "boolean"}
    if label.dtype.startswith(("int", "uint", "float", "double")):
        kind = "integer" if all(c.lstrip("-").isdigit() for c in classes) else "number"
        return {"type": kind, "enum": [int(c) if kind == "integer" else float(c) for c in classes]}
    return {"type": "string", "enum": list(classes)}


def _probability_keys(contract: Contract) -> list[str]:
    """The keys of one record's ``probabilities``, exactly as ``format_predictions`` writes them
    (a bool label's are ``False``/``True``, not the contract's ``false``/``true``)."""
    k = len(contract.label.classes or [])
    scores = np.zeros(1) if contract.label.task == "binary" else np.full((1, k), 1 / max(k, 1))
    return list(format_predictions(contract.label, scores)["probabilities"][0])


def _schemas(contract: Contract, parser: RequestParser, explain: bool) -> dict[str, dict[str, Any]]:
    record = record_schema(contract, parser)
    example = record["example"]
    records = {
        "type": "array",
        "items": _ref("Record"),
        "minItems": 1,
        "maxItems": parser.max_records,
        "description": f"1 to {parser.max_records} records (more is a 413).",
        "example": [example],
    }
    field_error = {
        "type": "object",
        "description": "One problem, or one flagged value, naming its record and field.",
        "properties": {
            "record": {"type": "integer", "description": "index of the record in the request"},
            "field": {"type": "string"},
            "msg": {"type": "string"},
            "type": {"type": "string", "example": "out_of_range"},
            "value": {"type": "number", "description": "the flagged value (warnings)"},
        },
        "required": ["field", "msg", "type"],
    }
    label = _label_schema(contract) | {"description": f"`{contract.label.name}` ({contract.label.task})"}
    predict = {
        "type": "object",
        "properties": {
            "prediction": {"type": "array", "items": label, "description": "one per record, in order"},
            "model_name": {"type": "string", "nullable": True},
            "model_version": {"type": "string", "nullable": True},
            "request_id": {"type": "string", "description": "the X-Request-Id header, or a generated one"},
            "latency_ms": {"type": "number"},
            "warnings": {
                "type": "array",
                "items": _ref("FieldError"),
                "description": "present only when a value was flagged (out_of_range: flag)",
            },
        },
        "required": ["prediction", "model_name", "model_version", "request_id", "latency_ms"],
    }
    if contract.label.task != "regression":
        names = _probability_keys(contract)
        per_class = {n: {"type": "number", "minimum": 0, "maximum": 1} for n in names}
        predict["properties"]["probabilities"] = {
            "type": "array",
            "description": "per record: the probability of each class",
            "items": {"type": "object", "properties": per_class, "required": names, "additionalProperties": False},
        }
        predict["required"].append("probabilities")
    schemas: dict[str, dict[str, Any]] = {
        "Record": record,
        "Records": records,
        "PredictRequest": {"oneOf": [_ref("Record"), _ref("Records")], "description": "a record or a list of them"},
        "PredictResponse": predict,
        "KServeRequest": {
            "type": "object",
            "properties": {"instances": _ref("Records")},
            "required": ["instances"],
            "example": {"instances": [example]},
        },
        "MlflowRequest": {
            "description": "MLflow's scoring protocol: `dataframe_records` (read first) or `dataframe_split`.",
            "anyOf": [
                {
                    "type": "object",
                    "properties": {"dataframe_records": _ref("Records")},
                    "required": ["dataframe_records"],
                },
                {
                    "type": "object",
                    "properties": {
                        "dataframe_split": {
                            "type": "object",
                            "properties": {
                                "columns": {"type": "array", "items": {"type": "string"}},
                                "data": {"type": "array", "items": {"type": "array", "items": {}}},
                            },
                            "required": ["columns", "data"],
                            "description": "each row of `data` has one value per column, fields as in Record",
                        }
                    },
                    "required": ["dataframe_split"],
                },
            ],
            "example": {"dataframe_split": {"columns": list(example), "data": [list(example.values())]}},
        },
        "PredictionsResponse": {
            "type": "object",
            "properties": {"predictions": predict["properties"]["prediction"], "warnings": _ref("Warnings")},
            "required": ["predictions"],
        },
        "Warnings": predict["properties"]["warnings"],
        "FieldError": field_error,
        "Error": {
            "type": "object",
            "properties": {
                "error": {"type": "string", "description": "every problem in one line"},
                "detail": {"type": "array", "items": _ref("FieldError")},
                "request_id": {"type": "string"},
            },
            "required": ["error", "detail"],
        },
        "NotFound": {
            "type": "object",
            "properties": {"detail": {"type": "string", "example": "Not Found"}},
            "required": ["detail"],
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "model_version": {"type": "string"},
                "prediction_log": {"type": "object", "properties": {"enabled": {"type": "boolean"}}},
                "batching": {
                    "type": "object",
                    "properties": {
                        "requests": {"type": "integer"},
                        "batches": {"type": "integer"},
                        "batch_sizes": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "max_batch_size": {"type": "integer"},
                    },
                },
            },
            "required": ["status", "model_version", "prediction_log", "batching"],
        },
        "Metadata": {
            "type": "object",
            "properties": {
                "model_name": {"type": "string", "nullable": True},
                "model_version": {"type": "string", "nullable": True},
                "model_uri": {"type": "string"},
                "run_id": {"type": "string", "nullable": True},
                "task": {"type": "string", "enum": ["binary", "multiclass", "regression"]},
                "classes": {"type": "array", "items": {"type": "string"}, "nullable": True},
                "schema": {"type": "object", "description": "the training contract"},
                "validation": {"type": "object", "additionalProperties": {"type": "string"}},
                "prediction_log": {"type": "object"},
            },
            "required": ["model_name", "model_version", "model_uri", "task", "schema", "validation"],
        },
    }
    if explain:
        _add_explain(schemas, contract)
    return schemas


def _add_explain(schemas: dict[str, dict[str, Any]], contract: Contract) -> None:
    """``POST /explain``'s answer, and ``/predict``'s ``{records, explain}`` wrapper (none for a
    contract with a field named ``records``: such a body is a record)."""
    schemas["Explanation"] = {
        "type": "object",
        "properties": {
            "base": {"type": "number", "description": "the margin before any field is known"},
            "contributions": {
                "type": "object",
                "properties": {f: {"type": "number"} for f in contract.feature_names},
                "additionalProperties": {"type": "number"},
                "description": "per field (a derived feature under its own name); they add up to margin - base",
            },
            "margin": {"type": "number"},
            "explained_class": {"type": "string", "nullable": True, "description": "null for regression"},
        },
        "required": ["base", "contributions", "margin", "explained_class"],
    }
    predict = schemas["PredictResponse"]
    predict["properties"] |= {
        "explanations": {"type": "array", "items": _ref("Explanation"), "description": "one per record, when asked"},
        "explanation_units": {"type": "string", "enum": ["log-odds", "value"], "description": "the margin's units"},
    }
    schemas["ExplainResponse"] = {
        "allOf": [_ref("PredictResponse"), {"required": ["explanations", "explanation_units"]}]
    }
    if "records" in contract.feature_names:
        return
    schemas["ExplainRequest"] = {
        "type": "object",
        "description": "records with an explain flag (another key is a 422)",
        "properties": {
            "records": {"oneOf": [_ref("Record"), _ref("Records")]},
            "explain": {"type": "boolean", "default": False, "description": "add `explanations` to the answer"},
        },
        "required": ["records"],
        "additionalProperties": False,
    }
    schemas["PredictRequest"]["oneOf"].append(_ref("ExplainRequest"))
    schemas["PredictRequest"]["description"] += ", or `{records, explain}`"


def _errors(*codes: int) -> dict[str, Any]:
    why = {
        400: "the body is not JSON",
        404: "another model name",
        413: "the body or the record count is over the limit",
        415: "the Content-Type is not JSON",
        422: "a record does not fit the contract: `detail` names each field",
    }
    out = {str(c): {"description": why[c], "content": {_JSON: {"schema": _ref("Error")}}} for c in codes}
    if 404 in codes:  # a name with "/" matches no route: FastAPI's own 404 answers it
        out["404"]["description"] += " (FastAPI's `{detail}` for a name no route matches, one with '/')"
        out["404"]["content"][_JSON]["schema"] = {"anyOf": [_ref("Error"), _ref("NotFound")]}
    return out


_REQUEST_ID = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "echoed as `request_id` (and in the prediction log)",
}


def _post(
    summary: str,
    request: str,
    response: str,
    examples: dict[str, Any],
    *codes: int,
    path: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [*path, _REQUEST_ID],
        "requestBody": {
            "required": True,
            "content": {_JSON: {"schema": _ref(request), "examples": {k: {"value": v} for k, v in examples.items()}}},
        },
        "responses": {"200": {"description": "scored", "content": {_JSON: {"schema": _ref(response)}}}}
        | _errors(400, 413, 415, 422, *codes),
    }


def _get(summary: str, schema: dict[str, Any], media: str = _JSON) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": {"description": summary, "content": {media: {"schema": schema}}}}}


def openapi_document(
    contract: Contract,
    parser: RequestParser,
    *,
    model_name: str,
    model_version: str,
    operations: Collection[tuple[str, str]] = (),
) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a replica serving ``contract`` under ``parser``'s policies.

    Args:
        contract: the served model's training contract.
        parser: the replica's request parser: its policies decide which constraints are hard.
        model_name: the served name (the KServe path's ``{name}``).
        model_version: shown in the document's ``info.version``.
        operations: ``(method, path)`` pairs the app routes; of ``OPTIONAL_OPERATIONS`` only these
            are documented (``POST /explain`` and the ``/predict`` explain wrapper, ``GET /``).

    Example:
        >>> parser = RequestParser(contract)  # doctest: +SKIP
        >>> doc = openapi_document(contract, parser, model_name="tiny", model_version="1")  # doctest: +SKIP
        >>> doc["components"]["schemas"]["Record"]["required"]  # doctest: +SKIP
        ['distance', 'carrier', 'weekend']
    """
    explain = ("post", "/explain") in operations
    schemas = _schemas(contract, parser, explain)
    example = schemas["Record"]["example"]
    examples = {"one record": example, "a list of records": [example, example]}
    paths: dict[str, Any] = {
        "/predict": {
            "post": _post("Predict: a record or a list of records", "PredictRequest", "PredictResponse", examples)
        },
        "/v1/models/{name}:predict": {
            "post": _post(
                "KServe v1: `{instances: [records]}`",
                "KServeRequest",
                "PredictionsResponse",
                {"instances": {"instances": [example]}},
                404,
                path=[
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                        "example": model_name,
                        "description": f"the served model: `{model_name}`",
                    }
                ],
            )  # fmt: skip
        },
        "/invocations": {
            "post": _post(
                "MLflow scoring: `dataframe_records` or `dataframe_split`",
                "MlflowRequest",
                "PredictionsResponse",
                {
                    "dataframe_records": {"dataframe_records": [example]},
                    "dataframe_split": {
                        "dataframe_split": {"columns": list(example), "data": [list(example.values())]}
                    },
                },
            )  # fmt: skip
        },
        "/healthz": {"get": _get("Liveness, prediction log and batching of this replica", _ref("Health"))},
        "/metadata": {"get": _get("The model, its contract and the validation policies", _ref("Metadata"))},
    }
    if explain:
        paths["/explain"] = {
            "post": _post("Predict and explain: per-field contributions", "PredictRequest", "ExplainResponse", examples)
        }
    if ("get", "/") in operations:
        paths["/"] = {"get": _get("The try-it page: a form built from the contract", {"type": "string"}, "text/html")}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"{model_name} (raypipe model server)",
            "version": str(model_version),
            "description": (
                f"Predicts `{contract.label.name}` ({contract.label.task}) from {len(contract.features)} fields. "
                f"Validation: unknown_fields={parser.unknown_fields}, unseen_categories={parser.unseen_categories}, "
                f"out_of_range={parser.out_of_range}."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
