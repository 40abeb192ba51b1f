"""Training without Ray: search-space config, default preprocessing per model, estimators,
one predict function for every model kind, and scikit-learn bundles (skops, verified)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xgboost

from raypipe.config import TuneConfig, load_config
from raypipe.errors import ConfigError, RegistryError
from raypipe.features import Preprocessor
from raypipe.model import BUNDLE_FILE, SKLEARN_FILE, Bundle, predict_matrix, write_bundle
from raypipe.runtime import CpuBudget
from raypipe.train import preprocessing_for
from raypipe.train.sklearn import build_estimator
from raypipe.train.tune import metric_and_mode, plan_concurrency

BASE = {"data": {"path": "d/", "label": "y"}}


def _cfg(**sections):
    return load_config(raw={**BASE, **sections})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"uniform": [1, 0]}, "low"),
        ({"loguniform": [0, 1]}, "> 0"),
        ({"uniform": [0, 1], "choice": [1]}, "exactly one"),
        ({}, "exactly one"),
        ({"choice": []}, "at least one"),
    ],
)
def test_bad_search_dimension_names_the_key(spec, message) -> None:
    with pytest.raises(ConfigError, match=rf"tune\.search_space\.eta.*{message}"):
        _cfg(tune={"enabled": True, "search_space": {"eta": spec}})


def test_search_space_and_models_are_exclusive_and_models_are_checked() -> None:
    space = {"eta": {"uniform": [0.1, 0.2]}}
    with pytest.raises(ConfigError, match="not both"):
        _cfg(tune={"enabled": True, "search_space": space, "models": {"xgboost": space}})
    with pytest.raises(ConfigError, match="tune.models.svm"):
        _cfg(tune={"enabled": True, "models": {"svm": space}})
    cfg = _cfg(
        tune={"enabled": True, "models": {"xgboost": space, "random_forest": {"max_depth": {"randint": [2, 8]}}}}
    )
    assert cfg.tune.models["random_forest"]["max_depth"].kind == "randint"


def test_metric_and_mode_default_from_task() -> None:
    assert metric_and_mode(TuneConfig(), "binary") == ("valid_auc", "max")
    assert metric_and_mode(TuneConfig(), "multiclass") == ("valid_logloss", "min")
    assert metric_and_mode(TuneConfig(), "regression") == ("valid_rmse", "min")
    assert metric_and_mode(TuneConfig(metric="f1"), "binary") == ("valid_f1", "max")


def test_concurrency_comes_from_the_training_cpu_share() -> None:
    budget = CpuBudget(total_cpus=16, num_workers=1, cpus_per_worker=14.5, data_cpus=1, serve_cpus=0.5)
    assert plan_concurrency(TuneConfig(), budget) == (1.0, 14)
    assert plan_concurrency(TuneConfig(cpus_per_trial=4), budget) == (4.0, 3)
    assert plan_concurrency(TuneConfig(max_concurrent=2), budget) == (1.0, 2)
    small = CpuBudget(total_cpus=1, num_workers=1, cpus_per_worker=0.5, data_cpus=0.5, serve_cpus=0)
    assert plan_concurrency(TuneConfig(), small) == (0.5, 1)


def test_linear_models_get_onehot_scaled_imputed_inputs_unless_set_explicitly() -> None:
    assert preprocessing_for(_cfg()) == {"encoding": "native", "scale": False, "impute": "none"}
    assert preprocessing_for(_cfg(train={"model": "random_forest"}))["encoding"] == "native"
    linear = _cfg(train={"model": "logistic_regression"})
    assert preprocessing_for(linear) == {"encoding": "onehot", "scale": True, "impute": "mean"}
    explicit = _cfg(train={"model": "logistic_regression"}, features={"encoding": "ordinal"})
    assert preprocessing_for(explicit)["encoding"] == "ordinal"
    # A search that may pick the linear model prepares inputs it can use.
    space = {"C": {"loguniform": [0.1, 10]}}
    mixed = _cfg(tune={"enabled": True, "models": {"xgboost": {}, "logistic_regression": space}})
    assert preprocessing_for(mixed)["encoding"] == "onehot"


def test_estimator_errors_name_the_model_and_the_fix() -> None:
    with pytest.raises(ConfigError, match="logistic_regression.*regression"):
        build_estimator("logistic_regression", "regression", {}, seed=0, n_jobs=1)
    with pytest.raises(ConfigError, match="train.params.*RandomForestClassifier"):
        build_estimator("random_forest", "binary", {"n_estimatorz": 5}, seed=0, n_jobs=1)
    with pytest.raises(ConfigError, match="train.params"):
        build_estimator("hist_gradient_boosting", "binary", {"max_iter": -3}, seed=0, n_jobs=1)


def _data(k: int = 2, n: int = 400):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (k > 2) * (X[:, 1] > 0.5).astype(int)
    return X, y


def test_predict_matrix_has_one_layout_for_xgboost_and_sklearn() -> None:
    X, y = _data()
    est = build_estimator("random_forest", "binary", {"n_estimators": 5}, seed=0, n_jobs=1).fit(X, y)
    bst = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(X, y), 5)
    for model in (est, bst):
        p = predict_matrix(model, X)
        assert p.shape == (len(X),) and ((p >= 0) & (p <= 1)).all()
    X3, y3 = _data(3)
    est3 = build_estimator("logistic_regression", "multiclass", {}, seed=0, n_jobs=1).fit(X3, y3)
    p3 = predict_matrix(est3, X3)
    assert p3.shape == (len(X3), 3) and np.allclose(p3.sum(axis=1), 1)
    # A class missing from the train sample still gets its column (probability 0).
    missing = build_estimator("random_forest", "multiclass", {"n_estimators": 3}, seed=0, n_jobs=1)
    missing.fit(X3[y3 != 1], y3[y3 != 1])
    pm = predict_matrix(missing, X3)
    assert pm.shape == (len(X3), 3) and (pm[:, 1] == 0).all()


@pytest.fixture
def prep(contract_for) -> Preprocessor:
    table = pa.table({"a": [0.1, 0.5, 0.9, 0.3] * 25, "c": ["x", "y", "x", "z"] * 25, "y": [0, 1, 1, 0] * 25})
    return Preprocessor.fit(contract_for(table, "y"), encoding="ordinal")


def test_sklearn_bundle_round_trips_with_skops_and_is_verified(tmp_path: Path, prep, contract_for) -> None:
    X, y = _data(n=100)
    X = X[:, : len(prep.feature_names)]
    est = build_estimator("hist_gradient_boosting", "binary", {"max_iter": 5}, seed=0, n_jobs=1).fit(X, y)
    contract = contract_for(pa.table({"a": [0.1, 0.5], "c": ["x", "y"], "y": [0, 1]}), "y")
    hashes = write_bundle(tmp_path / "b", est, prep, contract)
    assert SKLEARN_FILE in hashes and json.loads((tmp_path / "b" / BUNDLE_FILE).read_text())["model_kind"] == "sklearn"
    assert not list((tmp_path / "b").glob("*.pkl"))
    loaded = Bundle.load(tmp_path / "b", expected=hashes)
    assert np.allclose(predict_matrix(loaded.model, X), predict_matrix(est, X))
    table = pa.table({"a": [0.2, 0.8], "c": ["y", "nope"]})
    assert loaded.predict_table(table).shape == (2,)
    # Tampering with the model file is caught before anything is deserialised.
    with open(tmp_path / "b" / SKLEARN_FILE, "ab") as f:
        f.write(b"x")
    with pytest.raises(RegistryError, match="model.skops.*sha256"):
        Bundle.load(tmp_path / "b")


def test_skops_file_with_foreign_types_is_refused(tmp_path: Path, prep, contract_for, monkeypatch) -> None:
    import skops.io

    X, y = _data(n=50)
    est = build_estimator("random_forest", "binary", {"n_estimators": 2}, seed=0, n_jobs=1).fit(X[:, :2], y)
    contract = contract_for(pa.table({"a": [0.1, 0.5], "c": ["x", "y"], "y": [0, 1]}), "y")
    write_bundle(tmp_path / "b", est, prep, contract)
    monkeypatch.setattr(skops.io, "get_untrusted_types", lambda file: ["evil.module.Gadget"])
    with pytest.raises(RegistryError, match="evil.module.Gadget"):
        Bundle.load(tmp_path / "b")


def test_xgboost_bundle_still_loads_as_before(tmp_path: Path, prep, contract_for) -> None:
    X, y = _data(n=100)
    bst = xgboost.train({"objective": "binary:logistic"}, xgboost.DMatrix(X[:, :2], y), 3)
    contract = contract_for(pa.table({"a": [0.1, 0.5], "c": ["x", "y"], "y": [0, 1]}), "y")
    write_bundle(tmp_path / "b", bst, prep, contract)
    meta = json.loads((tmp_path / "b" / BUNDLE_FILE).read_text())
    del meta["model_kind"]  # a bundle written before scikit-learn support
    (tmp_path / "b" / BUNDLE_FILE).write_text(json.dumps(meta))
    loaded = Bundle.load(tmp_path / "b")
    assert isinstance(loaded.model, xgboost.Booster)
    assert np.allclose(predict_matrix(loaded.model, X[:, :2]), bst.inplace_predict(X[:, :2]))


def _plan(**kw):
    from raypipe.config import TrainConfig
    from raypipe.train.tune import TrialPlan

    base = dict(
        task="binary",
        num_classes=2,
        metric="valid_auc",
        mode="max",
        train=TrainConfig(num_boost_round=30, early_stopping_rounds=None),
        report_every_rounds=10,
        max_t_rounds=30,
        nthread=1,
        pos_weight=None,
        categorical_mask=None,
    )
    return TrialPlan(**{**base, **kw})


def test_trial_reports_the_valid_metric_every_n_rounds_for_the_scheduler() -> None:
    from raypipe.train.common import Arrays
    from raypipe.train.tune import train_model

    X, y = _data(n=600)
    train, valid = Arrays(X[:500], y[:500].astype(np.float32)), Arrays(X[500:], y[500:].astype(np.float32))
    reports: list[dict] = []
    bst, out = train_model(_plan(), "xgboost", {"max_depth": 3}, train, valid, report=reports.append)
    assert [r["rounds"] for r in reports] == [10, 20]  # the final result is the caller's report
    assert all(0.5 < r["valid_auc"] <= 1 for r in reports)
    assert out["rounds"] == 30 and out["best_iteration"] == 29 and out["valid_auc"] > 0.9
    # A refit without a valid split trains exactly the rounds it is given.
    bst, out = train_model(_plan(), "xgboost", {}, train, None, num_boost_round=7)
    assert bst.num_boosted_rounds() == 7 and "valid_auc" not in out
    for a in (train.X, train.y, valid.X, valid.y):
        a.setflags(write=False)  # as trials get them from the object store
    est, out = train_model(_plan(), "random_forest", {"n_estimators": 5}, train, valid)
    assert out["rounds"] == 30 and out["valid_auc"] > 0.8  # one report at the horizon: ASHA lets it finish
