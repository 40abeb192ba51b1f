"""The out-of-contract policy without Ray: wrong kinds are 422s naming the field, out-of-range
values are flagged or rejected, batch scoring writes the same verdict to a ``warnings`` column,
and the monitor counts flagged values the log's dtype could not hold."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest
from _serving import CONTRACT, RECORD, write_tiny_bundle

from raypipe.data.records import RequestError, RequestParser
from raypipe.data.schema import Contract

# weekend was never null in training: null there is a client bug, not a missing value.
STRICT = Contract(features=[replace(f, nullable=f.name != "weekend") for f in CONTRACT.features], label=CONTRACT.label)


def _field_of_422(parser: RequestParser, body: bytes) -> str:
    with pytest.raises(RequestError) as err:
        parser.validate(parser.load_json(body))
    assert err.value.status == 422, err.value.message
    return err.value.errors[0]["field"]


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("distance", "true"),  # a bool is not a number (lax pydantic made it 1.0)
        ("distance", '" 12 "'),  # nor a padded string
        ("distance", '"12"'),
        ("distance", "NaN"),
        ("distance", "1e400"),  # parses as inf
        ("distance", "1" + "0" * 400),  # an int no float holds
        ("carrier", "NaN"),  # was the string "nan", scored as missing
        ("carrier", "1e400"),  # was "inf"
        ("carrier", "true"),
        ("weekend", "null"),  # never null in training
        ("weekend", "1"),
        ("weekend", '"yes"'),
    ],
)
def test_wrong_kinds_are_a_422_naming_the_field(field: str, raw: str) -> None:
    parser = RequestParser(STRICT)
    body = json.dumps({**RECORD, field: "__V__"}).replace('"__V__"', raw).encode()
    assert _field_of_422(parser, body) == field


def test_an_all_null_record_names_the_never_null_field_and_others_score_as_missing() -> None:
    parser = RequestParser(STRICT)
    assert _field_of_422(parser, json.dumps(dict.fromkeys(RECORD)).encode()) == "weekend"
    table, warnings = parser.validate({"distance": None, "carrier": None, "weekend": True})
    assert table.num_rows == 1 and warnings == []


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (5001, "above the training maximum 5000"),
        (9, "below the training minimum 10"),
        (2**70, "above the training maximum"),
        (1e308, "above the training maximum"),
        (14.5, "not a whole number"),  # distance was int16 in training
    ],
)
def test_out_of_range_is_flagged_by_default_and_rejected_on_request(value: float, why: str) -> None:
    record = {**RECORD, "distance": value}
    table, warnings = RequestParser(STRICT).validate([RECORD, record])
    assert table.num_rows == 2
    assert [(w["record"], w["field"], w["type"]) for w in warnings] == [(1, "distance", "out_of_range")]
    assert why in warnings[0]["msg"] and math.isclose(warnings[0]["value"], float(value))
    with pytest.raises(RequestError) as err:
        RequestParser(STRICT, out_of_range="reject").validate([RECORD, record])
    assert err.value.status == 422 and err.value.errors[0]["field"] == "distance" and why in err.value.message


def test_in_range_values_and_nulls_are_not_flagged() -> None:
    rows = [RECORD, {**RECORD, "distance": 10}, {**RECORD, "distance": 5000.0}, {**RECORD, "distance": None}]
    assert RequestParser(STRICT, out_of_range="reject").validate(rows)[1] == []


def test_model_predict_returns_the_same_warnings(tmp_path: Path) -> None:
    from raypipe.model import Bundle, Model

    write_tiny_bundle(tmp_path / "b", rounds=3, contract=STRICT)
    model = Model(Bundle.load(tmp_path / "b"), uri=str(tmp_path / "b"))
    assert "warnings" not in model.predict(RECORD)
    out = model.predict([RECORD, {**RECORD, "distance": 9000}])
    assert len(out["prediction"]) == 2 and [w["field"] for w in out["warnings"]] == ["distance"]


def test_batch_scoring_writes_warnings_and_refuses_wrong_kinds(tmp_path: Path) -> None:
    from raypipe.model import Bundle
    from raypipe.serve.batch import score_table

    write_tiny_bundle(tmp_path / "b", rounds=3, contract=STRICT)
    bundle = Bundle.load(tmp_path / "b")
    table = pa.table(
        {
            "distance": pa.array([1400.0, 9000.0, float("nan"), 14.5, None], pa.float64()),
            "carrier": ["UA", "UA", "UA", "UA", "UA"],
            "weekend": pa.array([False, False, False, None, True]),
        }
    )
    flagged = score_table(bundle, table)
    assert flagged.column("warnings").to_pylist() == [[], ["distance"], ["distance"], ["weekend", "distance"], []]
    # NaN and a null weekend are wrong kinds (a request would get a 422): no prediction; 9000 is scored.
    assert [p is None for p in flagged.column("prediction").to_pylist()] == [False, False, True, True, False]
    rejected = score_table(bundle, table, "reject")
    assert [p is None for p in rejected.column("score").to_pylist()] == [False, True, True, True, False]
    assert rejected.column("warnings").equals(flagged.column("warnings"))


def test_the_monitor_counts_values_the_server_flagged_even_when_the_log_dtype_lost_them() -> None:
    from raypipe.monitor.collect import Plan, summarize

    # distance is logged as int16: 1e308 and 14.5 cannot be held and arrive as null, flagged.
    batch = pa.table(
        {
            "distance": pa.array([1400, None, None, 6000, 100], pa.int16()),
            "warnings": pa.array([[], ["distance"], ["distance"], ["distance"], []], pa.list_(pa.string())),
        }
    )
    plan = Plan(numeric={"distance": ([10.0, 2500.0, 5000.0], [10.0, 5000.0], 10.0, 5000.0)})
    summary = json.loads(summarize(batch, plan)["summary"][0])
    assert summary["num"]["distance"]["out_of_schema"] == 3  # 6000 counted once, not twice
    no_flags = json.loads(summarize(batch.drop_columns(["warnings"]), plan)["summary"][0])
    assert no_flags["num"]["distance"]["out_of_schema"] == 1
