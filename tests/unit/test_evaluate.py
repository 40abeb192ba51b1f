"""Held-out metrics on tiny arrays where the right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from raypipe.errors import ConfigError
from raypipe.evaluate import PRIMARY, evaluate

Y_BIN = np.array([0, 0, 1, 1, 0, 1], dtype=np.float32)
Y_MULTI = np.array([0, 1, 2, 2, 1, 0], dtype=np.float32)
Y_REG = np.array([1.5, -2.0, 3.25, 0.0, 10.0], dtype=np.float32)


def _onehot(y: np.ndarray, k: int, p: float = 1.0) -> np.ndarray:
    out = np.full((len(y), k), (1 - p) / (k - 1))
    out[np.arange(len(y)), y.astype(int)] = p
    return out


def test_perfect_binary_classifier() -> None:
    r = evaluate("binary", Y_BIN, np.where(Y_BIN == 1, 0.9, 0.1))
    assert r.metrics["auc"] == 1.0 and r.metrics["pr_auc"] == 1.0
    assert r.metrics["accuracy"] == 1.0 and r.metrics["f1"] == 1.0
    assert r.metrics["logloss"] == pytest.approx(-math.log(0.9))
    assert r.metrics["positive_rate"] == pytest.approx(0.5)
    assert r.primary == "auc" and r.score == 1.0 and r.higher_is_better
    assert r.n_rows == 6
    assert r.prefixed()["test_auc"] == 1.0 and set(r.prefixed()) == {f"test_{k}" for k in r.metrics}


def test_inverted_and_uninformative_binary_classifiers() -> None:
    inverted = evaluate("binary", Y_BIN, np.where(Y_BIN == 1, 0.1, 0.9))
    assert inverted.metrics["auc"] == 0.0 and inverted.metrics["accuracy"] == 0.0
    constant = evaluate("binary", Y_BIN, np.full(6, 0.5))
    assert constant.metrics["auc"] == 0.5
    assert constant.metrics["logloss"] == pytest.approx(math.log(2))


@pytest.mark.filterwarnings("ignore:Only one class is present", "ignore:No positive class found")  # sklearn warns
def test_auc_with_one_class_is_nan_not_a_crash() -> None:
    r = evaluate("binary", np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]))
    assert math.isnan(r.metrics["auc"])
    assert r.metrics["accuracy"] == 1.0


def test_multiclass_metrics() -> None:
    perfect = evaluate("multiclass", Y_MULTI, _onehot(Y_MULTI, 3, p=0.98))
    assert perfect.metrics["accuracy"] == 1.0 and perfect.metrics["f1_macro"] == 1.0
    assert perfect.metrics["auc_ovr"] == 1.0
    assert perfect.metrics["logloss"] == pytest.approx(-math.log(0.98))
    uniform = evaluate("multiclass", Y_MULTI, np.full((6, 3), 1 / 3))
    assert uniform.metrics["logloss"] == pytest.approx(math.log(3))
    assert perfect.primary == "logloss" and not perfect.higher_is_better


def test_regression_metrics() -> None:
    perfect = evaluate("regression", Y_REG, Y_REG.copy())
    assert perfect.metrics["rmse"] == 0.0 and perfect.metrics["mae"] == 0.0 and perfect.metrics["r2"] == 1.0
    off = evaluate("regression", Y_REG, Y_REG + 2.0)
    assert off.metrics["rmse"] == pytest.approx(2.0) and off.metrics["mae"] == pytest.approx(2.0)
    errs = np.array([3.0, -4.0, 0.0, 0.0, 0.0])
    mixed = evaluate("regression", Y_REG, Y_REG + errs)
    assert mixed.metrics["rmse"] == pytest.approx(math.sqrt(25 / 5))
    assert mixed.metrics["mae"] == pytest.approx(7 / 5)
    mean = evaluate("regression", Y_REG, np.full(5, Y_REG.mean()))
    assert mean.metrics["r2"] == pytest.approx(0.0, abs=1e-6)
    assert perfect.primary == "rmse" and not perfect.higher_is_better


@pytest.mark.parametrize(
    "task, y, good, bad",
    [
        ("binary", Y_BIN, np.where(Y_BIN == 1, 0.8, 0.3), np.where(Y_BIN == 1, 0.3, 0.8)),
        ("multiclass", Y_MULTI, _onehot(Y_MULTI, 3, 0.8), _onehot((Y_MULTI + 1) % 3, 3, 0.8)),
        ("regression", Y_REG, Y_REG + 0.1, Y_REG[::-1].copy()),
    ],
)
def test_higher_is_better_matches_every_metric(task: str, y: np.ndarray, good: np.ndarray, bad: np.ndarray) -> None:
    # The registry gate trusts `higher_is_better` for whichever metric is primary: for every
    # metric a clearly better model must win in the direction the report declares.
    good_r = evaluate(task, y, good)
    quality_metrics = [m for m in good_r.metrics if m != "positive_rate"]  # a property of the labels
    for metric in quality_metrics:
        g = evaluate(task, y, good, primary=metric)
        b = evaluate(task, y, bad, primary=metric)
        assert g.score != b.score, metric
        assert (g.score > b.score) == g.higher_is_better, f"{task} {metric}: higher_is_better={g.higher_is_better}"


def test_primary_metric_choice() -> None:
    assert PRIMARY == {"binary": "auc", "multiclass": "logloss", "regression": "rmse"}
    r = evaluate("binary", Y_BIN, np.where(Y_BIN == 1, 0.9, 0.1), primary="logloss")
    assert r.primary == "logloss" and r.score == r.metrics["logloss"] and not r.higher_is_better
    with pytest.raises(ConfigError, match="'rmse'.*binary"):
        evaluate("binary", Y_BIN, np.full(6, 0.5), primary="rmse")
