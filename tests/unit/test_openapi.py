"""The OpenAPI document generated from the contract: field types, enums, nullability, required
fields, constraints that follow the validation policies, and an example the server accepts."""

from __future__ import annotations

import re

import numpy as np
import pytest

from raypipe.data.records import RequestError, RequestParser
from raypipe.data.schema import ColumnSpec, Contract, LabelSpec
from raypipe.model import format_predictions
from raypipe.serve.docs import DOC_ASSETS, docs_asset, docs_html
from raypipe.serve.openapi import openapi_document
from raypipe.serve.record_schema import record_schema

CONTRACT = Contract(
    features=[
        ColumnSpec("distance", "numeric", "int16", nullable=False, min=10, max=5000),
        ColumnSpec("fare", "numeric", "double", min=0.5, max=900.0),
        ColumnSpec("carrier", "categorical", "string", categories=["UA", "B6", "EV"]),
        ColumnSpec("store", "categorical", "int64", nullable=False, categories=["7", "12"]),
        ColumnSpec("weekend", "boolean", "bool"),
        ColumnSpec("departed", "timestamp", "timestamp[us]"),
        ColumnSpec("day", "timestamp", "string", format="%d-%b-%Y"),
    ],
    label=LabelSpec("delayed", "binary", "bool", classes=["false", "true"]),
)
STRICT = {"unknown_fields": "reject", "unseen_categories": "reject", "out_of_range": "reject"}
LENIENT = {"unknown_fields": "ignore", "unseen_categories": "missing", "out_of_range": "flag"}


def _props(policies: dict[str, str], contract: Contract = CONTRACT) -> dict:
    return record_schema(contract, RequestParser(contract, **policies))["properties"]


def test_each_kind_has_its_json_type() -> None:
    p = _props(LENIENT)
    assert {k: v["type"] for k, v in p.items()} == {
        "distance": "number",  # ints and floats are both accepted
        "fare": "number",
        "carrier": "string",
        "store": "integer",  # int-coded levels
        "weekend": "boolean",
        "departed": "string",
        "day": "string",
    }
    assert p["departed"]["format"] == "date-time"
    assert p["day"]["x-strptime-format"] == "%d-%b-%Y" and "format" not in p["day"]


def test_nullability_and_required_follow_the_contract() -> None:
    schema = record_schema(CONTRACT, RequestParser(CONTRACT))
    assert schema["required"] == CONTRACT.feature_names  # null is sent, never left out
    assert {k for k, v in schema["properties"].items() if v.get("nullable")} == {"fare", "carrier", "weekend",
                                                                                "departed", "day"}  # fmt: skip
    assert "null is a 422" in schema["properties"]["distance"]["description"]


def test_rejecting_policies_are_hard_constraints() -> None:
    schema = record_schema(CONTRACT, RequestParser(CONTRACT, **STRICT))
    p = schema["properties"]
    assert (p["distance"]["minimum"], p["distance"]["maximum"], p["distance"]["multipleOf"]) == (10, 5000, 1)
    assert "multipleOf" not in p["fare"]
    assert p["carrier"]["enum"] == ["UA", "B6", "EV", None]  # OpenAPI 3.0: a nullable enum lists null
    assert p["store"]["enum"] == [7, 12]
    assert schema["additionalProperties"] is False


def test_flagging_policies_describe_without_constraining() -> None:
    schema = record_schema(CONTRACT, RequestParser(CONTRACT, **LENIENT))
    p = schema["properties"]
    for name in ("distance", "fare"):
        assert not {"minimum", "maximum", "multipleOf"} & set(p[name])
    assert p["distance"]["x-training-range"] == {"min": 10, "max": 5000}
    assert "named in `warnings`" in p["distance"]["description"]
    assert "enum" not in p["carrier"] and p["carrier"]["x-categories"] == ["UA", "B6", "EV"]
    assert "scored as missing" in p["carrier"]["description"]
    assert schema["additionalProperties"] is True


@pytest.mark.parametrize("policies", [STRICT, LENIENT], ids=["strict", "lenient"])
def test_the_example_is_accepted_by_the_servers_own_parser(policies: dict[str, str]) -> None:
    parser = RequestParser(CONTRACT, **policies)
    schema = record_schema(CONTRACT, parser)
    table, warnings = parser.validate(schema["example"])
    assert table.num_rows == 1 and warnings == []
    for name, prop in schema["properties"].items():
        assert prop["example"] == schema["example"][name]


def test_a_saved_example_the_policies_reject_is_replaced() -> None:
    """A real row may hold a level outside the kept categories: under ``reject`` that is a 422."""
    row = {"distance": 700, "fare": 80.0, "carrier": "ZZ", "store": 7, "weekend": True,
           "departed": "2024-03-01T08:00:00", "day": "01-Mar-2024"}  # fmt: skip
    contract = Contract(CONTRACT.features, CONTRACT.label, example=row)
    assert record_schema(contract, RequestParser(contract, **LENIENT))["example"] == row
    strict = RequestParser(contract, **STRICT)
    with pytest.raises(RequestError):
        strict.validate(row)
    example = record_schema(contract, strict)["example"]
    assert example["carrier"] == "UA" and strict.validate(example)[0].num_rows == 1


def _doc(contract: Contract = CONTRACT, operations=(), **policies) -> dict:
    parser = RequestParser(contract, max_records=50, **policies)
    return openapi_document(contract, parser, model_name="tiny", model_version="3", operations=operations)


def test_the_document_has_every_protocol_and_the_error_body() -> None:
    doc = _doc()
    assert doc["openapi"] == "3.0.3" and doc["info"]["version"] == "3"
    assert set(doc["paths"]) == {"/predict", "/v1/models/{name}:predict", "/invocations", "/healthz", "/metadata"}
    schemas = doc["components"]["schemas"]
    assert schemas["Records"]["maxItems"] == 50 and schemas["Records"]["minItems"] == 1
    predict = doc["paths"]["/predict"]["post"]
    assert set(predict["responses"]) == {"200", "400", "413", "415", "422"}
    assert "404" in doc["paths"]["/v1/models/{name}:predict"]["post"]["responses"]
    # The error body is RequestError.body() plus the request id.
    assert set(RequestError(422, "m", []).body()) <= set(schemas["Error"]["properties"])
    assert schemas["Error"]["required"] == ["error", "detail"]
    assert schemas["KServeRequest"]["required"] == ["instances"]
    assert "dataframe_split" in schemas["MlflowRequest"]["example"]


def test_predictions_are_typed_by_the_label_and_probabilities_keyed_as_answered() -> None:
    schemas = _doc()["components"]["schemas"]
    answer = schemas["PredictResponse"]
    assert answer["properties"]["prediction"]["items"]["type"] == "boolean"
    keys = list(format_predictions(CONTRACT.label, np.array([0.3]))["probabilities"][0])
    assert answer["properties"]["probabilities"]["items"]["required"] == keys
    multi = Contract(CONTRACT.features, LabelSpec("grade", "multiclass", "string", classes=["a", "b", "c"]))
    items = _doc(multi)["components"]["schemas"]["PredictResponse"]["properties"]["prediction"]["items"]
    assert items["type"] == "string" and items["enum"] == ["a", "b", "c"]
    reg = Contract(CONTRACT.features, LabelSpec("minutes", "regression", "double"))
    answer = _doc(reg)["components"]["schemas"]["PredictResponse"]
    assert (
        answer["properties"]["prediction"]["items"]["type"] == "number" and "probabilities" not in answer["properties"]
    )


def test_explain_and_the_page_are_documented_only_when_routed() -> None:
    doc = _doc(operations={("post", "/explain"), ("get", "/")})
    assert {"/explain", "/"} <= set(doc["paths"])
    assert "text/html" in doc["paths"]["/"]["get"]["responses"]["200"]["content"]
    schemas = doc["components"]["schemas"]
    assert {"$ref": "#/components/schemas/ExplainRequest"} in schemas["PredictRequest"]["oneOf"]
    assert schemas["ExplainResponse"]["allOf"][1]["required"] == ["explanations", "explanation_units"]
    assert "explanations" not in _doc()["components"]["schemas"]["PredictResponse"]["properties"]


def test_the_docs_page_loads_only_its_own_assets() -> None:
    page = docs_html("/openapi.json", "/docs", "tiny </title>")
    assert not re.search(r"https?://", page)
    assert '"validatorUrl": null' in page and '"docExpansion": "full"' in page
    assert "tiny &lt;/title&gt;" in page
    for name in DOC_ASSETS:
        assert f"/docs/{name}" in page
        body, media = docs_asset(name)
        assert body and media == DOC_ASSETS[name]
    assert docs_asset("../__init__.py") is None and docs_asset("swagger-ui.js.map") is None


@pytest.mark.parametrize("policies", [STRICT, LENIENT], ids=["strict", "lenient"])
def test_every_body_the_document_allows_is_accepted_by_the_parser(policies: dict[str, str]) -> None:
    """Schemathesis generates ``POST /predict`` bodies from the document; the parser takes them all."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    parser = RequestParser(CONTRACT, max_records=5, **policies)
    doc = openapi_document(CONTRACT, parser, model_name="tiny", model_version="1")
    operation = schemathesis.openapi.from_dict(doc)["/predict"]["POST"]
    rejected = []

    @settings(max_examples=150, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy())
    def check(case) -> None:
        try:
            parser.validate(case.body)
        except RequestError as e:
            rejected.append((case.body, e.message))

    check()
    assert rejected == []


@pytest.mark.parametrize(
    "change", [{"distance": 5001}, {"distance": 10.5}, {"carrier": "ZZ"}, {"store": 8}, {"extra": 1}],
    ids=["above-maximum", "not-whole", "unseen-level", "unseen-int-level", "unknown-field"],
)  # fmt: skip
def test_a_hard_constraint_is_one_the_parser_rejects_and_a_described_one_is_not(change: dict) -> None:
    strict, lenient = RequestParser(CONTRACT, **STRICT), RequestParser(CONTRACT, **LENIENT)
    record = record_schema(CONTRACT, strict)["example"] | change
    with pytest.raises(RequestError) as e:
        strict.validate(record)
    assert e.value.status == 422
    assert lenient.validate(record)[0].num_rows == 1


def test_a_many_level_field_lists_its_most_frequent_levels_unless_they_are_an_enum() -> None:
    levels = [f"N{i:04d}" for i in range(120)]
    contract = Contract(
        features=[ColumnSpec("tailnum", "categorical", "string", categories=levels)],
        label=LabelSpec("y", "binary", "bool", classes=["false", "true"]),
    )
    described = record_schema(contract, RequestParser(contract))["properties"]["tailnum"]
    assert (
        described["x-categories"] == levels[:50]
        and "120 trained levels (the 50 most frequent" in described["description"]
    )
    strict = record_schema(contract, RequestParser(contract, unseen_categories="reject"))["properties"]["tailnum"]
    assert strict["enum"] == [*levels, None]  # a constraint lists every level (and null: nullable)
