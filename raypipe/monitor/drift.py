"""Drift metrics from binned counts (pure numpy; no I/O, no Ray).

All metrics compare two count vectors over the same bins: the reference's
(training data) and the current window's (logged traffic).
"""

from __future__ import annotations

import numpy as np

# Floor for empty bins, so PSI stays finite when a bin is empty on one side.
_EPS = 1e-4
PSI_BINS = 10


def psi(ref: np.ndarray, cur: np.ndarray) -> float:
    """Population stability index: sum((q - p) * ln(q / p)) over bins."""
    p = _shares(ref)
    q = _shares(cur)
    if p is None or q is None:
        return float("nan")
    p, q = np.maximum(p, _EPS), np.maximum(q, _EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_groups(ref_counts: np.ndarray, n_groups: int = PSI_BINS) -> np.ndarray:
    """Group id per fine bin so that each group holds ~1/n_groups of the reference."""
    total = ref_counts.sum()
    if total == 0:
        return np.zeros(len(ref_counts), dtype=int)
    mid = (np.cumsum(ref_counts) - 0.5 * ref_counts) / total
    return np.minimum((mid * n_groups).astype(int), n_groups - 1)


def regroup(counts: np.ndarray, groups: np.ndarray) -> np.ndarray:
    return np.bincount(groups, weights=counts, minlength=int(groups.max()) + 1 if len(groups) else 0)


def ks_from_counts(ref: np.ndarray, cur: np.ndarray) -> float:
    """Kolmogorov-Smirnov statistic on the shared bin edges (the largest CDF gap)."""
    p, q = _shares(ref), _shares(cur)
    if p is None or q is None:
        return float("nan")
    return float(np.max(np.abs(np.cumsum(p) - np.cumsum(q))))


def total_variation(ref: np.ndarray, cur: np.ndarray) -> float:
    """Half the L1 distance of the frequency vectors: the share of mass that moved."""
    p, q = _shares(ref), _shares(cur)
    if p is None or q is None:
        return float("nan")
    return float(0.5 * np.abs(p - q).sum())


def chi_square(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Chi-square test of homogeneity (statistic, p-value) on the levels seen on either side."""
    from scipy.stats import chi2_contingency

    table = np.vstack([ref, cur]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return float("nan"), float("nan")
    stat, p, _, _ = chi2_contingency(table, correction=False)
    return float(stat), float(p)


def _shares(counts: np.ndarray) -> np.ndarray | None:
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return counts / total if total > 0 else None
