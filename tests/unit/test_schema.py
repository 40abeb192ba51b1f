"""Task inference and the schema contract, from statistics computed by the real profile step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raypipe.data.schema import Contract, infer_task
from raypipe.errors import DataError, SchemaError

rng = np.random.default_rng(0)


def _task(column_stats, values: pa.Array, max_classes: int = 20, batches: int = 1) -> str:
    table = pa.table({"y": values})
    step = -(-len(table) // batches)
    stats = column_stats(*(table.slice(i, step) for i in range(0, len(table), step)))
    return infer_task("y", values.type, stats["y"], max_classes)


@pytest.mark.parametrize(
    "values, task",
    [
        (pa.array(["yes", "no", "yes", None]), "binary"),
        (pa.array(["a", "b", "c", "a"]), "multiclass"),
        (pa.array(["a", "b", "c"]).dictionary_encode(), "multiclass"),
        (pa.array([True, False, None, True]), "binary"),
        (pa.array([0, 1, 1, 0, 1], pa.int8()), "binary"),
        (pa.array([1, 2, 3, 4, 5, 2, 3], pa.int64()), "multiclass"),
        (pa.array([0.0, 1.0, 1.0, None, 0.0]), "binary"),  # integer-valued floats are classes
        (pa.array([0.5, 1.25, 3.0, 2.0]), "regression"),  # any fractional value: regression
        (pa.array(rng.normal(size=500).astype(np.float32)), "regression"),
        (pa.array(rng.integers(0, 1000, 500)), "regression"),  # many integer levels
    ],
)
def test_infer_task(column_stats, values: pa.Array, task: str) -> None:
    assert _task(column_stats, values) == task


def test_integer_label_levels_vs_max_classes(column_stats) -> None:
    values = pa.array(np.tile(np.arange(12), 10))
    assert _task(column_stats, values, max_classes=12) == "multiclass"
    assert _task(column_stats, values, max_classes=11) == "regression"
    # Levels are merged across batches, not decided per batch.
    assert _task(column_stats, values, max_classes=11, batches=4) == "regression"


def test_too_many_string_label_values_is_a_data_error(column_stats) -> None:
    values = pa.array([f"user-{i}" for i in range(1500)])
    with pytest.raises(DataError, match="'y'.*more than 1000"):
        _task(column_stats, values)


def _table(n: int = 200) -> pa.Table:
    return pa.table(
        {
            "x": rng.normal(size=n),
            "k": pa.array(rng.choice(["p", "q", "r"], n)),
            "on": pa.array(rng.random(n) < 0.3),
            "label": pa.array(rng.random(n) < 0.5),
        }
    )


def test_contract_kinds_ranges_and_label(contract_for) -> None:
    table = _table()
    contract = contract_for(table, "label")
    assert contract.feature_names == ["x", "k", "on"]
    assert [f.kind for f in contract.features] == ["numeric", "categorical", "boolean"]
    x = contract.feature("x")
    assert x.min == pytest.approx(min(table["x"].to_pylist())) and x.max == pytest.approx(max(table["x"].to_pylist()))
    assert sorted(contract.feature("k").categories) == ["p", "q", "r"]
    assert contract.label.task == "binary" and contract.label.classes == ["false", "true"]


def test_contract_json_round_trip(contract_for, tmp_path: Path) -> None:
    contract = contract_for(_table(), "label")
    contract.save(tmp_path / "contract.json")
    assert Contract.load(tmp_path / "contract.json") == contract


def test_features_include_exclude_and_reserved_columns(contract_for) -> None:
    table = _table().append_column("wt", pa.array(np.ones(200)))
    contract = contract_for(table, "label", data={"weight_column": "wt"}, features={"exclude": ["on"]})
    assert contract.feature_names == ["x", "k"]
    contract = contract_for(table, "label", features={"include": ["on", "x"]})
    assert contract.feature_names == ["on", "x"]


@pytest.mark.parametrize("null_type", [pa.float64(), pa.string(), pa.null()])
def test_all_null_feature_is_a_data_error_naming_the_column(contract_for, null_type: pa.DataType) -> None:
    table = _table().append_column("sensor_7", pa.nulls(200, null_type))
    with pytest.raises(DataError) as exc:
        contract_for(table, "label")
    assert "sensor_7" in str(exc.value)
    assert "features.exclude" in str(exc.value)  # says how to fix it
    # ... and excluding it, as told, works.
    assert "sensor_7" not in contract_for(table, "label", features={"exclude": ["sensor_7"]}).feature_names


def test_all_nan_feature_counts_as_all_null(contract_for) -> None:
    table = _table().append_column("gauge", pa.array(np.full(200, np.nan)))
    with pytest.raises(DataError, match="gauge"):
        contract_for(table, "label")


def test_label_not_a_column_is_a_schema_error(contract_for) -> None:
    with pytest.raises(SchemaError) as exc:
        contract_for(_table(), "target")
    msg = str(exc.value)
    assert "data.label 'target' is not a column" in msg
    assert all(c in msg for c in ("x", "k", "on", "label"))  # lists what is available


@pytest.mark.parametrize(
    "data, features, needle",
    [
        ({"id_column": "row_id"}, {}, "data.id_column 'row_id'"),
        ({"weight_column": "w"}, {}, "data.weight_column 'w'"),
        ({}, {"categorical": ["kk"]}, "feature 'kk'"),
        ({}, {"include": ["x", "nope"]}, "feature 'nope'"),
    ],
)
def test_named_columns_must_exist(contract_for, data: dict, features: dict, needle: str) -> None:
    with pytest.raises(SchemaError, match=needle):
        contract_for(_table(), "label", data=data, features=features)


def test_single_valued_label_is_a_data_error(contract_for) -> None:
    table = _table().set_column(3, "label", pa.array(np.ones(200, bool)))
    with pytest.raises(DataError, match="single value"):
        contract_for(table, "label")


def test_declared_binary_with_three_classes_is_a_data_error(contract_for) -> None:
    table = _table().set_column(3, "label", pa.array(rng.choice(["a", "b", "c"], 200)))
    with pytest.raises(DataError, match="3 classes"):
        contract_for(table, "label", data={"task": "binary"})


def test_unsupported_feature_type_is_a_schema_error_naming_the_column(contract_for) -> None:
    table = _table().append_column("tags", pa.array([["a", "b"]] * 200))
    with pytest.raises(SchemaError, match="'tags'.*features.exclude"):
        contract_for(table, "label")
    # ... and excluding it, as told, works (profiling a nested column must not crash).
    assert contract_for(table, "label", features={"exclude": ["tags"]}).feature_names == ["x", "k", "on"]
