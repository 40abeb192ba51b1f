"""Quality rules, declared contracts, derived columns and the time split (no Ray)."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from raypipe.config import DataConfig, FeaturesConfig, QualityConfig, SplitConfig
from raypipe.data import quality
from raypipe.data.expressions import check_expression, evaluate_expression
from raypipe.data.profile import ColumnStats, profile_batch
from raypipe.data.schema import ColumnSpec, Contract, LabelSpec, infer_contract
from raypipe.data.split import TEST, TRAIN, VALID, assign
from raypipe.errors import ConfigError, SchemaError
from raypipe.features import Preprocessor


def _stats(table: pa.Table) -> dict[str, ColumnStats]:
    import json

    out = profile_batch(table, None)["profile"][0]
    merged = {}
    for col, s in json.loads(out)["all"].items():
        merged.setdefault(col, ColumnStats()).merge(s)
    return merged


@pytest.fixture
def table() -> pa.Table:
    rng = np.random.default_rng(0)
    n = 200
    return pa.table(
        {
            "x": pa.array(rng.normal(size=n)),
            "mostly_null": pa.array([None] * (n - 5) + [1.0] * 5, pa.float64()),
            "const": pa.array([7] * n),
            "color": pa.array(rng.choice(["red", "green", "blue"], n)),
            "y": pa.array(rng.integers(0, 2, n).astype(bool)),
        }
    )


def _contract(table, declared=None, **features):
    stats = _stats(table)
    return infer_contract(
        table.schema, stats, stats, DataConfig(path="x", label="y"), FeaturesConfig(**features), declared
    ), stats


def test_rules_flag_null_rate_and_constant_columns(table):
    contract, stats = _contract(table)
    report = quality.check(stats, contract, None, QualityConfig())
    rules = {(f.rule, f.column) for f in report.findings}
    assert ("null_rate", "mostly_null") in rules
    assert ("constant", "const") in rules
    assert ("null_rate", "x") not in rules
    assert all(f.action == "warn" for f in report.findings)
    assert "mostly_null" in report.to_text()


def test_declared_ranges_and_categories_are_checked(table):
    declared = Contract(
        features=[
            ColumnSpec("x", "numeric", "double", min=-0.5, max=0.5),
            ColumnSpec("color", "categorical", "string", categories=["red", "green"]),
        ],
        label=LabelSpec("y", "binary", "bool", ["false", "true"]),
    )
    contract, stats = _contract(table, declared)
    assert contract.feature_names == ["x", "color"]  # the declared contract picks the features
    assert contract.feature("color").categories == ["red", "green"]
    report = quality.check(stats, contract, declared, QualityConfig())
    by_rule = {f.rule: f for f in report.findings}
    assert by_rule["out_of_range"].action == "fail"
    assert by_rule["unseen_categories"].examples == ["blue"]
    assert by_rule["unseen_categories"].count == table.column("color").to_pylist().count("blue")
    off = quality.check(stats, contract, declared, QualityConfig(out_of_range="off", unseen_categories="off"))
    assert not [f for f in off.findings if f.rule in ("out_of_range", "unseen_categories")]


def test_duplicate_ids_finding(table):
    contract, stats = _contract(table)
    report = quality.check(stats, contract, None, QualityConfig(), duplicate_ids=(2, [4, 9]))
    dup = next(f for f in report.findings if f.rule == "duplicate_ids")
    assert dup.action == "fail" and dup.examples == [4, 9]


def test_contract_yaml_round_trip(tmp_path, table):
    contract, _ = _contract(table)
    contract.save(tmp_path / "c.yaml")
    assert Contract.load(tmp_path / "c.yaml") == contract
    (tmp_path / "bad.yaml").write_text("features: 3\n")
    with pytest.raises(SchemaError, match="bad.yaml"):
        Contract.load(tmp_path / "bad.yaml")


def test_derived_columns_are_safe_and_vectorised(table):
    assert evaluate_expression("x * 2 - 1", table).to_pylist()[:3] == [
        v * 2 - 1 for v in table.column("x").to_pylist()[:3]
    ]
    for bad in ("__import__('os')", "x.real", "open('f')", "x if x else 1", "nope + 1"):
        with pytest.raises(ConfigError):
            check_expression("d", bad, {"x"})
    contract, stats = _contract(table)
    prep = Preprocessor.fit(contract, stats, derived={"ratio": "x / const"})
    X = prep.transform_features(table)
    assert prep.feature_names[-1] == "ratio" and prep.feature_types[-1] == "q"
    np.testing.assert_allclose(X[:, -1], (np.asarray(table.column("x")) / 7).astype(np.float32), rtol=1e-6)
    again = Preprocessor.from_dict(prep.to_dict())
    np.testing.assert_array_equal(again.transform_features(table), X)


def test_mean_imputation_uses_train_statistics(table):
    contract, stats = _contract(table)
    prep = Preprocessor.fit(contract, stats, impute="mean")
    X = prep.transform_features(table)
    j = prep.feature_names.index("mostly_null")
    assert not np.isnan(X[:, j]).any()
    assert X[0, j] == pytest.approx(1.0)  # the mean of the five non-null 1.0 values
    assert np.isnan(Preprocessor.fit(contract, stats).transform_features(table)[:, j]).sum() == 195


def test_time_split_boundaries():
    ts = pa.array([dt.datetime(2013, 1, 1), dt.datetime(2013, 11, 1), dt.datetime(2013, 12, 31), None])
    cfg = SplitConfig(method="time", time_column="t", valid_after="2013-11-01", test_after="2013-12-01")
    assert assign(pa.table({"t": ts}), [], cfg).tolist() == [TRAIN, VALID, TEST, TRAIN]
    as_text = pa.array(["2013-01-01T00:00:00", "2013-12-02T10:00:00"])
    assert assign(pa.table({"t": as_text}), [], cfg).tolist() == [TRAIN, TEST]
    with pytest.raises(SchemaError, match="time_column 't'"):
        assign(pa.table({"t": pa.array([1.5])}), [], cfg)
    with pytest.raises(ValueError, match="test_after"):
        SplitConfig(method="time", time_column="t")


def test_onehot_ordinal_and_scaling_for_models_without_native_categoricals(table):
    contract, stats = _contract(table)
    colors = contract.feature("color").categories
    onehot = Preprocessor.fit(contract, stats, encoding="onehot", scale=True)
    X = onehot.transform_features(table)
    cols = [f"color={c}" for c in colors]
    assert [n for n in onehot.feature_names if n.startswith("color=")] == cols
    assert "c" not in onehot.feature_types
    block = X[:, [onehot.feature_names.index(c) for c in cols]]
    truth = np.array([[v == c for c in colors] for v in table.column("color").to_pylist()], dtype=np.float32)
    np.testing.assert_array_equal(block, truth)
    unseen = table.slice(0, 1).set_column(3, "color", pa.array(["purple"]))
    assert onehot.transform_features(unseen)[0, [onehot.feature_names.index(c) for c in cols]].sum() == 0
    x = X[:, onehot.feature_names.index("x")]
    assert abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1.0, rel=1e-3)

    ordinal = Preprocessor.fit(contract, stats, encoding="ordinal")
    j = ordinal.feature_names.index("color")
    assert ordinal.feature_types[j] == "q"
    codes = ordinal.transform_features(table)[:, j]
    assert sorted(set(codes.tolist())) == [0.0, 1.0, 2.0]

    again = Preprocessor.from_dict(onehot.to_dict())
    np.testing.assert_array_equal(again.transform_features(table), X)
