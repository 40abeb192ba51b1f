"""The Preprocessor: Arrow table -> float32 matrix, label encoding, JSON round trip."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raypipe.features import Preprocessor

NAN = float("nan")
T0 = dt.datetime(2024, 3, 9, 17, 45)  # a Saturday


def _train_table() -> pa.Table:
    return pa.table(
        {
            "num": pa.array([1.5, None, NAN, -2.0, 0.0, 10.0], pa.float64()),
            "count": pa.array([1, 2, None, 4, 5, 6], pa.int32()),
            "cat": pa.array(["b", "a", "b", None, "c", "b"]),
            "flag": pa.array([True, False, None, True, False, True]),
            "ts": pa.array(
                [T0, T0 + dt.timedelta(days=1, hours=8), None, T0 - dt.timedelta(days=70), T0, T0],
                pa.timestamp("us"),
            ),
            "label": pa.array(["yes", "no", "yes", "no", "no", "yes"]),
        }
    )


@pytest.fixture
def prep(contract_for) -> Preprocessor:
    return Preprocessor.fit(contract_for(_train_table(), "label"))


def test_layout_of_the_model_inputs(prep: Preprocessor) -> None:
    parts = ["year", "month", "day", "day_of_week", "hour"]
    assert prep.input_columns == ["num", "count", "cat", "flag", "ts"]
    assert prep.feature_names == ["num", "count", "cat", "flag", *(f"ts__{p}" for p in parts)]
    assert prep.feature_types == ["q", "q", "c", "q", *["q"] * 5]
    # Categories come from the (train) data, most frequent first: b (3), then a and c (1 each, by name).
    assert next(c for c in prep.columns if c.name == "cat").categories == ["b", "a", "c"]


def test_transform_numeric_categorical_bool_and_timestamp(prep: Preprocessor) -> None:
    rows = pa.table(
        {
            "num": pa.array([3.25, None, NAN, 1e6], pa.float64()),
            "count": pa.array([7, None, 0, -3], pa.int64()),
            "cat": pa.array(["a", "c", "never-seen", None]),
            "flag": pa.array([True, None, False, True]),
            "ts": pa.array([T0, None, dt.datetime(2023, 12, 31, 23, 0), dt.datetime(2024, 1, 1)], pa.timestamp("us")),
        }
    )
    X = prep.transform_features(rows)
    assert X.dtype == np.float32 and X.shape == (4, len(prep.feature_names))
    col = {name: X[:, j] for j, name in enumerate(prep.feature_names)}

    np.testing.assert_array_equal(col["num"][[0, 3]], [3.25, 1e6])
    assert np.isnan(col["num"][1]) and np.isnan(col["num"][2])  # null and NaN are both missing
    np.testing.assert_array_equal(col["count"][[0, 2, 3]], [7, 0, -3])
    assert np.isnan(col["count"][1])
    # Category codes index the train vocabulary ["b", "a", "c"]; unseen and null are missing.
    assert col["cat"][0] == 1 and col["cat"][1] == 2
    assert np.isnan(col["cat"][2]) and np.isnan(col["cat"][3])
    assert col["flag"][0] == 1 and col["flag"][2] == 0 and np.isnan(col["flag"][1])
    for i, ts in ((0, T0), (2, dt.datetime(2023, 12, 31, 23, 0)), (3, dt.datetime(2024, 1, 1))):
        assert col["ts__year"][i] == ts.year
        assert col["ts__month"][i] == ts.month
        assert col["ts__day"][i] == ts.day
        assert col["ts__day_of_week"][i] == ts.weekday()  # Monday = 0
        assert col["ts__hour"][i] == ts.hour
    assert all(np.isnan(col[f"ts__{p}"][1]) for p in ("year", "month", "day", "day_of_week", "hour"))


def test_transform_accepts_chunked_dictionary_and_reordered_columns(prep: Preprocessor) -> None:
    base = _train_table()
    expected = prep.transform_features(base)
    chunked = pa.concat_tables([base.slice(0, 2), base.slice(2)])
    reordered = chunked.select(list(reversed(base.column_names)))
    as_dict = reordered.set_column(
        reordered.schema.get_field_index("cat"), "cat", reordered.column("cat").dictionary_encode()
    )
    np.testing.assert_array_equal(prep.transform_features(as_dict), expected)


def test_date_column_gets_date_parts(contract_for) -> None:
    table = pa.table(
        {
            "d": pa.array([dt.date(2024, 2, 29), dt.date(2023, 7, 4), None], pa.date32()),
            "y": pa.array([0.5, 1.5, 2.5]),
        }
    )
    prep = Preprocessor.fit(contract_for(table, "y"))
    X = prep.transform_features(table)
    assert prep.feature_names[0] == "d__year"
    np.testing.assert_array_equal(X[0], [2024, 2, 29, dt.date(2024, 2, 29).weekday(), 0])
    np.testing.assert_array_equal(X[1], [2023, 7, 4, dt.date(2023, 7, 4).weekday(), 0])
    assert np.isnan(X[2]).all()


def test_integer_codes_declared_categorical(contract_for) -> None:
    table = pa.table({"code": pa.array([7, 7, 3, 7, 3, 12], pa.int16()), "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    prep = Preprocessor.fit(contract_for(table, "y", features={"categorical": ["code"]}))
    assert prep.feature_types == ["c"]
    assert prep.columns[0].categories == ["7", "3", "12"]
    X = prep.transform_features(pa.table({"code": pa.array([3, 12, 99, None], pa.int64())}))
    np.testing.assert_array_equal(X[:2, 0], [1, 2])
    assert np.isnan(X[2:, 0]).all()


def test_json_round_trip_gives_identical_output(prep: Preprocessor, tmp_path: Path) -> None:
    path = tmp_path / "preprocessor.json"
    prep.save(path)
    json.loads(path.read_text())  # plain JSON, no pickle
    loaded = Preprocessor.load(path)
    assert loaded == prep
    table = _train_table()
    np.testing.assert_array_equal(loaded.transform_features(table), prep.transform_features(table))
    np.testing.assert_array_equal(loaded.encode_label(table), prep.encode_label(table))
    assert loaded.feature_names == prep.feature_names and loaded.feature_types == prep.feature_types
    assert Preprocessor.from_dict(json.loads(json.dumps(prep.to_dict()))) == prep


# --- labels ------------------------------------------------------------------


def test_string_yes_no_label(prep: Preprocessor) -> None:
    assert prep.label.task == "binary"
    assert prep.label.classes == ["no", "yes"]  # sorted: the last one is the positive class
    y = prep.encode_label(pa.table({"label": ["yes", "no", "no", "maybe", None]}))
    np.testing.assert_array_equal(y[:3], [1, 0, 0])
    assert np.isnan(y[3]) and np.isnan(y[4])  # unknown or missing labels are dropped later
    assert prep.decode_classes(np.array([1, 0])) == ["yes", "no"]


def test_bool_label(contract_for) -> None:
    table = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "label": [True, False, True, None]})
    prep = Preprocessor.fit(contract_for(table, "label"))
    assert prep.label.task == "binary" and prep.label.classes == ["false", "true"]
    y = prep.encode_label(table)
    np.testing.assert_array_equal(y[:3], [1, 0, 1])
    assert np.isnan(y[3])


def test_multiclass_string_label(contract_for) -> None:
    table = pa.table({"x": [1.0, 2.0, 3.0, 4.0, 5.0], "label": ["c", "a", "b", "a", "c"]})
    prep = Preprocessor.fit(contract_for(table, "label"))
    assert prep.label.task == "multiclass" and prep.label.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(prep.encode_label(table), [2, 0, 1, 0, 2])


def test_multiclass_integer_label_encoded_by_value_not_position(contract_for) -> None:
    table = pa.table({"x": np.arange(6, dtype=np.float64), "label": pa.array([3, 1, 2, 3, 1, 2], pa.int8())})
    prep = Preprocessor.fit(contract_for(table, "label"))
    assert prep.label.task == "multiclass" and prep.label.classes == ["1", "2", "3"]
    np.testing.assert_array_equal(prep.encode_label(table), [2, 0, 1, 2, 0, 1])
    # Integer-valued floats (e.g. a label read back as double) map to the same classes.
    as_float = pa.table({"label": pa.array([3.0, 1.0, None], pa.float64())})
    y = prep.encode_label(as_float)
    np.testing.assert_array_equal(y[:2], [2, 0])
    assert np.isnan(y[2])


def test_regression_label(contract_for) -> None:
    values = [0.25, -1.5, 3.75, 1e3, 2.125, None]
    table = pa.table({"x": np.arange(6, dtype=np.float64), "label": pa.array(values, pa.float64())})
    prep = Preprocessor.fit(contract_for(table, "label"))
    assert prep.label.task == "regression" and prep.label.classes is None
    y = prep.encode_label(table)
    np.testing.assert_array_equal(y[:5], np.asarray(values[:5], dtype=np.float32))
    assert np.isnan(y[5])


def test_transform_batch_drops_unlabelled_rows_and_keeps_passthrough(prep: Preprocessor) -> None:
    table = _train_table().append_column("__split", pa.array([0, 1, 2, 0, 1, 2], pa.int8()))
    table = table.set_column(
        table.schema.get_field_index("label"), "label", pa.array(["yes", None, "no", "no", "bogus", "yes"])
    )
    out = prep.transform_batch(table, passthrough=("__split",))
    keep = [0, 2, 3, 5]
    np.testing.assert_array_equal(out["y"], [1, 0, 0, 1])
    np.testing.assert_array_equal(out["X"], prep.transform_features(table.take(keep)))
    np.testing.assert_array_equal(out["__split"], [0, 2, 0, 2])
    assert "w" not in out


def test_weight_column_is_carried_not_used_as_a_feature(contract_for) -> None:
    table = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "wt": [1.0, 2.0, 0.5, 1.0], "label": [True, False, True, False]})
    prep = Preprocessor.fit(contract_for(table, "label", data={"weight_column": "wt"}))
    assert prep.feature_names == ["x"]
    out = prep.transform_batch(table)
    np.testing.assert_array_equal(out["w"], [1.0, 2.0, 0.5, 1.0])
    assert not math.isnan(out["X"][0, 0])
