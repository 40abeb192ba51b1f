"""Explanations: XGBoost contributions summed into the request's raw fields, adding up to the margin."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import xgboost

from raypipe.errors import ExplainError, SchemaError
from raypipe.explain import explain_table
from raypipe.features import Preprocessor
from raypipe.model import Bundle, Model, format_predictions

RAW = ["x", "z", "cat", "flag", "at"]
T0 = dt.datetime(2024, 3, 9, 17, 45)


def _table(n: int = 400, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x, z = rng.normal(size=n), rng.normal(size=n)
    cat = rng.choice(["a", "b", "c"], n)
    flag = rng.random(n) < 0.4
    at = [T0 + dt.timedelta(days=int(d), hours=int(h)) for d, h in zip(rng.integers(0, 400, n), rng.integers(0, 24, n))]
    signal = x - z + (cat == "a") * 1.5 - flag + np.array([t.month for t in at]) / 6 + rng.normal(0, 0.3, n)
    return pa.table(
        {
            "x": x,
            "z": z,
            "cat": cat,
            "flag": flag,
            "at": pa.array(at, pa.timestamp("us")),
            "bin": signal > 1,
            "multi": np.select([signal < 0, signal < 2], ["lo", "mid"], "hi"),
            "reg": signal,
        }
    )


_OBJECTIVES = {"bin": {"objective": "binary:logistic"}, "multi": {"objective": "multi:softprob"}, "reg": {}}


def _bundle(contract_for, label: str, encoding: str = "native", target: bool = False) -> Bundle:
    table = _table()
    contract = contract_for(table.drop_columns([c for c in ("bin", "multi", "reg") if c != label]), label)
    prep = Preprocessor.fit(contract, derived={"gap": "x - z"}, encoding=encoding)
    if target:
        from raypipe import target_encoding as te

        levels = {"cat": contract.feature("cat").categories}
        k = len(contract.label.classes) if label == "multi" else 1
        acc = te.partial(table, levels, prep.encode_label, k, te.fold_of(table, ["x"], 0))
        prep = prep.with_targets(te.finish(acc, levels), ["x"], 0)
    batch = prep.transform_batch(table)
    params = {"nthread": 1, "max_depth": 3, **_OBJECTIVES[label]}
    if label == "multi":
        params["num_class"] = len(contract.label.classes)
    dtrain = xgboost.DMatrix(batch["X"], batch["y"], feature_types=prep.feature_types, enable_categorical=True)
    return Bundle(xgboost.train(params, dtrain, 8), prep, contract, {})


def _margin(bundle: Bundle, rows: pa.Table) -> np.ndarray:
    prep = bundle.preprocessor
    dm = xgboost.DMatrix(prep.transform_features(rows), feature_types=prep.feature_types, enable_categorical=True)
    return np.asarray(bundle.model.predict(dm, output_margin=True), dtype=np.float64)


@pytest.mark.parametrize(
    ("label", "encoding", "target"),
    [("bin", "native", False), ("bin", "onehot", False), ("multi", "onehot", True), ("reg", "native", True)],
)
def test_contributions_add_up_to_the_models_margin(contract_for, label: str, encoding: str, target: bool) -> None:
    bundle = _bundle(contract_for, label, encoding, target)
    rows = _table(50, seed=1).select(RAW)
    ex = explain_table(bundle, rows)
    assert ex.fields == [*RAW, "gap"]  # raw fields in contract order, the derived feature by its name
    assert ex.contributions.shape == (50, 6) and ex.contributions.dtype == np.float64
    np.testing.assert_allclose(ex.base + ex.contributions.sum(axis=1), ex.margin, atol=1e-9)
    margin = _margin(bundle, rows)
    if label == "multi":
        # Each record's predicted class is the one explained: the argmax of the model's own answer.
        idx = margin.argmax(axis=1)
        margin = margin[np.arange(50), idx]
        predicted = format_predictions(bundle.preprocessor.label, bundle.predict_table(rows))["prediction"]
        assert ex.explained_class == predicted and len(set(predicted)) > 1
    np.testing.assert_allclose(ex.margin, margin, atol=1e-4)
    assert ex.units == ("value" if label == "reg" else "log-odds")
    assert ex.explained_class == {"bin": ["true"] * 50, "reg": [None] * 50}.get(label, ex.explained_class)
    # The multi-column fields and the derived one moved predictions (the sums did not drop their columns).
    moved = dict(zip(ex.fields, np.abs(ex.contributions).max(axis=0)))
    assert all(moved[f] > 0 for f in ("cat", "at", "gap")), moved


def test_engineered_columns_map_back_to_their_raw_field(contract_for) -> None:
    bundle = _bundle(contract_for, "multi", "onehot", target=True)
    prep = bundle.preprocessor
    sources = dict(zip(prep.feature_names, prep.feature_sources()))
    assert sources["cat__freq"] == sources["cat__te=lo"] == "cat"  # target encoding
    assert {sources[f"at__{p}"] for p in ("year", "month", "day", "day_of_week", "hour")} == {"at"}
    assert sources["gap"] == "gap" and sources["flag"] == "flag"
    onehot = _bundle(contract_for, "bin", "onehot").preprocessor
    assert [s for n, s in zip(onehot.feature_names, onehot.feature_sources()) if n.startswith("cat=")] == ["cat"] * 3

    # A field's contribution is the sum of its columns' contributions, by hand for one-hot and timestamp.
    rows = _table(20, seed=2).select(RAW)
    b = _bundle(contract_for, "bin", "onehot")
    dm = xgboost.DMatrix(b.preprocessor.transform_features(rows), feature_types=b.preprocessor.feature_types)
    raw = b.model.predict(dm, pred_contribs=True)
    names = b.preprocessor.feature_names
    ex = explain_table(b, rows)
    for field in ("cat", "at"):
        cols = [j for j, n in enumerate(names) if n.startswith((f"{field}=", f"{field}__"))]
        assert len(cols) > 1
        np.testing.assert_allclose(ex.contributions[:, ex.fields.index(field)], raw[:, cols].sum(axis=1), atol=1e-6)
    np.testing.assert_allclose(ex.base, raw[:, -1], atol=1e-7)


def test_records_and_columns_are_json_and_arrow_ready(contract_for) -> None:
    ex = explain_table(_bundle(contract_for, "bin"), _table(3, seed=3).select(RAW))
    first = ex.records()[0]
    assert set(first) == {"base", "contributions", "margin", "explained_class"}
    assert list(first["contributions"]) == [*RAW, "gap"] and isinstance(first["base"], float)
    assert first["margin"] == pytest.approx(first["base"] + sum(first["contributions"].values()), abs=1e-9)
    cols = ex.columns()
    assert list(cols) == [*(f"contribution__{f}" for f in (*RAW, "gap")), "contribution__base"]
    assert cols["contribution__x"].tolist() == ex.contributions[:, 0].tolist()


def test_model_explain_validates_like_predict_and_adds_explanations(contract_for) -> None:
    bundle = _bundle(contract_for, "bin")
    model = Model(bundle, uri="memory")
    records = _table(4, seed=4).select(RAW).to_pylist()
    out = model.explain(records)
    assert out["prediction"] == model.predict(records)["prediction"]
    assert out["explanation_units"] == "log-odds" and len(out["explanations"]) == 4
    p = np.array([r["True"] for r in out["probabilities"]])  # keyed by the label's own values
    margins = np.array([e["margin"] for e in out["explanations"]])
    np.testing.assert_allclose(1 / (1 + np.exp(-margins)), p, atol=1e-5)  # probabilities are rounded to 6
    with pytest.raises(SchemaError, match="record 1 field 'x'"):
        model.explain([records[0], {**records[1], "x": "far"}])


def test_a_scikit_learn_model_gets_a_clear_error(contract_for) -> None:
    from sklearn.dummy import DummyClassifier

    xgb = _bundle(contract_for, "bin")
    batch = xgb.preprocessor.transform_batch(_table(50))
    bundle = Bundle(DummyClassifier().fit(batch["X"], batch["y"]), xgb.preprocessor, xgb.contract, {})
    rows = _table(2).select(RAW)
    with pytest.raises(ExplainError, match="need an XGBoost model.*DummyClassifier") as err:
        explain_table(bundle, rows)
    assert err.value.context == {"model_class": "DummyClassifier"}
    with pytest.raises(ExplainError, match="DummyClassifier"):
        Model(bundle, uri="memory").explain(rows.to_pylist())


def test_a_value_past_float32s_range_is_explained_as_the_largest_value_not_a_crash(contract_for) -> None:
    # Accepted and flagged under out_of_range: flag; float32 turns it into inf, which a DMatrix refuses.
    bundle = _bundle(contract_for, "bin")
    rows = _table(2, seed=5).select(RAW)
    huge = rows.set_column(0, "x", pa.array([1e300, -1e300]))
    ex = explain_table(bundle, huge)
    assert np.isfinite(ex.contributions).all()
    # The explained margin is the one the prediction came from.
    np.testing.assert_allclose(1 / (1 + np.exp(-ex.margin)), bundle.predict_table(huge), atol=1e-5)
