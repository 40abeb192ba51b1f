"""Drift metrics on binned counts, and the streaming AUC, against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from raypipe.monitor import drift
from raypipe.monitor._binning import edges_from_sample, numeric_counts
from raypipe.monitor.checks import _auc


def _binned(ref: np.ndarray, cur: np.ndarray):
    fine, plot = edges_from_sample(ref, np.ones(len(ref)), 100, 40)
    return (np.asarray(numeric_counts(x, np.asarray(fine), np.asarray(plot))["counts"], float) for x in (ref, cur))


def test_identical_distributions_score_zero():
    c = np.array([10, 20, 30, 40.0])
    assert drift.psi(c, c) == 0 and drift.ks_from_counts(c, c) == 0 and drift.total_variation(c, c) == 0


def test_binned_ks_matches_scipy_for_a_shift():
    rng = np.random.default_rng(0)
    ref, cur = rng.normal(0, 1, 50_000), rng.normal(0.5, 1, 20_000)
    r, c = _binned(ref, cur)
    exact = stats.ks_2samp(ref, cur).statistic
    assert drift.ks_from_counts(r, c) == pytest.approx(exact, abs=0.01)
    groups = drift.psi_groups(r)
    assert groups.max() == 9 and np.bincount(groups, weights=r) / r.sum() == pytest.approx(np.full(10, 0.1), abs=0.02)
    # A half-sigma shift is a "significant" PSI (0.2-0.3 for a normal).
    assert 0.15 < drift.psi(drift.regroup(r, groups), drift.regroup(c, groups)) < 0.35


def test_same_distribution_samples_stay_far_below_thresholds():
    rng = np.random.default_rng(1)
    ref, cur = rng.lognormal(0, 1, 50_000), rng.lognormal(0, 1, 20_000)
    r, c = _binned(ref, cur)
    g = drift.psi_groups(r)
    assert drift.psi(drift.regroup(r, g), drift.regroup(c, g)) < 0.01 and drift.ks_from_counts(r, c) < 0.02


def test_category_shift_and_chi_square():
    ref = np.array([500, 300, 200, 0.0])
    cur = np.array([250, 150, 100, 500.0])  # half the mass moved to a new level
    assert drift.total_variation(ref, cur) == pytest.approx(0.5)
    stat, p = drift.chi_square(ref, cur)
    assert stat > 100 and p < 1e-10
    assert drift.chi_square(ref, ref)[1] == pytest.approx(1.0)
    assert np.isnan(drift.psi(ref, np.zeros(4)))  # no current rows: undefined, not 0


def test_streaming_auc_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.random(20_000) < 0.3
    s = np.clip(rng.normal(0.35 + 0.2 * y, 0.15), 0, 1)
    idx = np.clip((s * 1000).astype(int), 0, 999)
    pos, neg = np.bincount(idx[y], minlength=1000), np.bincount(idx[~y], minlength=1000)
    assert _auc(pos.astype(float), neg.astype(float)) == pytest.approx(roc_auc_score(y, s), abs=1e-3)


def test_sorted_binning_equals_per_value_binning_with_ties_and_nulls():
    rng = np.random.default_rng(4)
    v = np.round(rng.normal(0, 1, 50_000), 1)  # many ties, some exactly on an edge
    v[::9] = np.nan
    valid = v[~np.isnan(v)]
    edges = np.unique(np.quantile(valid, np.arange(1, 100) / 100))
    plot = np.linspace(-2, 2, 41)
    c = numeric_counts(v, edges, plot)
    assert c["counts"] == np.bincount(np.searchsorted(edges, valid, side="right"), minlength=len(edges) + 1).tolist()
    assert c["plot_counts"] == np.histogram(np.clip(valid, -2, 2), plot)[0].tolist()
    assert c["nulls"] == int(np.isnan(v).sum()) and c["count"] == len(v)
