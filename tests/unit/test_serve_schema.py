"""HTTP request validation generated from the contract: good bodies -> Arrow, bad -> 4xx naming the field."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from raypipe.data.records import RequestError, RequestParser
from raypipe.data.schema import ColumnSpec, Contract, LabelSpec
from raypipe.features import Preprocessor
from raypipe.model import format_predictions

CONTRACT = Contract(
    features=[
        ColumnSpec("distance", "numeric", "int16", min=17, max=4983),
        ColumnSpec("carrier", "categorical", "string", categories=["UA", "B6", "EV"]),
        ColumnSpec("weekend", "boolean", "bool"),
        ColumnSpec("sched", "timestamp", "timestamp[us]"),
        ColumnSpec("gate", "categorical", "int32", categories=["7", "12"]),
    ],
    label=LabelSpec("delayed", "binary", "bool", classes=["false", "true"]),
)
RECORD = {"distance": 1400, "carrier": "UA", "weekend": False, "sched": "2013-01-01T05:15:00", "gate": 7}


@pytest.fixture(scope="module")
def parser() -> RequestParser:
    return RequestParser(CONTRACT, max_records=100)


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


def _error(parser: RequestParser, body: bytes) -> RequestError:
    with pytest.raises(RequestError) as exc:
        parser.parse(body)
    return exc.value


def test_one_record_becomes_a_one_row_table(parser: RequestParser) -> None:
    table = parser.parse(_body(RECORD))
    assert table.num_rows == 1
    assert table.schema == pa.schema(
        [
            ("distance", pa.float64()),
            ("carrier", pa.string()),
            ("weekend", pa.bool_()),
            ("sched", pa.timestamp("us")),
            ("gate", pa.string()),
        ]
    )
    row = table.to_pylist()[0]
    assert row == {
        "distance": 1400.0,
        "carrier": "UA",
        "weekend": False,
        "sched": dt.datetime(2013, 1, 1, 5, 15),
        "gate": "7",  # integer-coded categories arrive as numbers or strings
    }


def test_a_list_of_records_and_nulls(parser: RequestParser) -> None:
    second = {"distance": None, "carrier": "ZZ", "weekend": None, "sched": None, "gate": "12"}
    table = parser.parse(_body([RECORD, second]))
    assert table.num_rows == 2
    assert table.column("carrier").to_pylist() == ["UA", "ZZ"]
    assert table.column("distance").to_pylist() == [1400.0, None]
    # The parsed table feeds the training preprocessor as is: unseen and null become missing.
    X = Preprocessor.fit(CONTRACT).transform_features(table)
    assert X[0, :3].tolist() == [1400.0, 0.0, 0.0]
    assert np.isnan(X[1, :3]).all()
    assert X[1, -1] == 1.0  # "12" is the second category


def test_field_order_does_not_matter(parser: RequestParser) -> None:
    shuffled = dict(reversed(list(RECORD.items())))
    assert parser.parse(_body(shuffled)).equals(parser.parse(_body(RECORD)))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"distance": "far"}, "distance"),
        ({"weekend": "sometimes"}, "weekend"),
        ({"sched": "yesterday-ish"}, "sched"),
        ({"carrier": ["UA"]}, "carrier"),
        ({"distance": {"km": 3}}, "distance"),
    ],
)
def test_wrong_type_is_422_naming_the_field(parser: RequestParser, change: dict, field: str) -> None:
    err = _error(parser, _body({**RECORD, **change}))
    assert err.status == 422
    assert [(e["record"], e["field"]) for e in err.errors] == [(0, field)]
    assert f"record 0 field '{field}'" in err.message
    body = err.body()
    assert body["error"] == err.message and body["detail"][0]["field"] == field


def test_missing_field_is_422(parser: RequestParser) -> None:
    record = {k: v for k, v in RECORD.items() if k != "carrier"}
    err = _error(parser, _body(record))
    assert err.status == 422
    assert err.errors[0]["field"] == "carrier" and err.errors[0]["type"] == "missing"


def test_unknown_field_is_422(parser: RequestParser) -> None:
    err = _error(parser, _body({**RECORD, "arr_delay": 12}))
    assert err.status == 422
    assert err.errors[0]["field"] == "arr_delay" and err.errors[0]["type"] == "extra_forbidden"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_422(parser: RequestParser, literal: str) -> None:
    body = _body(RECORD).replace(b'"distance": 1400', f'"distance": {literal}'.encode())
    assert literal.encode() in body
    err = _error(parser, body)
    assert err.status == 422 and err.errors[0]["field"] == "distance"


def test_errors_in_a_list_name_the_record_index(parser: RequestParser) -> None:
    bad = [RECORD, RECORD, {**RECORD, "distance": "x"}, {k: v for k, v in RECORD.items() if k != "gate"}]
    err = _error(parser, _body(bad))
    assert err.status == 422
    assert sorted((e["record"], e["field"]) for e in err.errors) == [(2, "distance"), (3, "gate")]
    assert "record 2 field 'distance'" in err.message and "record 3 field 'gate'" in err.message


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b'{"distance": 1'])
def test_non_json_is_400(parser: RequestParser, body: bytes) -> None:
    err = _error(parser, body)
    assert err.status == 400 and "not valid JSON" in err.message


@pytest.mark.parametrize("payload", [42, "a string", None, True])
def test_non_object_body_is_422(parser: RequestParser, payload) -> None:
    err = _error(parser, _body(payload))
    assert err.status == 422 and "JSON object" in err.message


def test_list_of_non_objects_is_422(parser: RequestParser) -> None:
    err = _error(parser, _body([RECORD, 5]))
    assert err.status == 422 and err.errors[0]["record"] == 1


def test_empty_list_is_422(parser: RequestParser) -> None:
    err = _error(parser, _body([]))
    assert err.status == 422 and "no records" in err.message


def test_too_many_records_is_413(parser: RequestParser) -> None:
    err = _error(parser, _body([RECORD] * 101))
    assert err.status == 413 and "100" in err.message
    assert parser.parse(_body([RECORD] * 100)).num_rows == 100


# --- response formatting -----------------------------------------------------


def test_binary_predictions_use_the_labels_own_type() -> None:
    out = format_predictions(CONTRACT.label, np.array([0.2, 0.9]))
    assert out["prediction"] == [False, True]
    assert out["probabilities"][0] == pytest.approx({"False": 0.8, "True": 0.2})
    assert all(sum(p.values()) == pytest.approx(1.0) for p in out["probabilities"])


def test_multiclass_and_regression_predictions() -> None:
    label = LabelSpec("grade", "multiclass", "int64", classes=["1", "10", "2"])
    out = format_predictions(label, np.array([[0.1, 0.7, 0.2], [0.6, 0.1, 0.3]]))
    assert out["prediction"] == [10, 1]
    reg = format_predictions(LabelSpec("y", "regression", "double"), np.array([1.5, -2.0], np.float32))
    assert reg == {"prediction": [1.5, -2.0]}


def test_the_example_record_is_the_saved_row_or_a_valid_one_built_from_the_specs(parser: RequestParser) -> None:
    built = CONTRACT.example_record()
    table, warnings = parser.validate(built)  # every kind, a string timestamp and an int-coded category
    assert table.num_rows == 1 and warnings == []
    assert built["carrier"] == "UA" and built["gate"] == 7 and 17 <= built["distance"] <= 4983
    saved = Contract.from_dict(CONTRACT.to_dict() | {"example": RECORD})
    assert saved.example_record() == RECORD
    assert Contract.from_dict(json.loads(json.dumps(saved.to_dict()))).example == RECORD
