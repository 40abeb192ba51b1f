"""Distinct-value counts that merge across batches: a k-minimum-values (KMV) sketch.

Each batch keeps the ``K`` smallest distinct 64-bit hashes of a column; merging keeps the ``K``
smallest of the union. Fewer than ``K`` hashes is an exact count; otherwise the estimate is
``(K - 1) / (K-th smallest hash / 2**64)``, with a relative standard error of about
``1 / sqrt(K - 2)`` (3 % at K = 1024). Used to tell a row identifier (nearly one value per row)
from a repeated key such as a customer id, whatever the columns are called.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

K = 1024
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _finalize(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads hashes whose low or high bits are regular (small integers)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * _MIX1
        h = (h ^ (h >> np.uint64(27))) * _MIX2
        return h ^ (h >> np.uint64(31))


def sketch(hashes: np.ndarray, k: int = K) -> list[int]:
    """The ``k`` smallest distinct mixed hashes, ascending (JSON-ready ints)."""
    h = _finalize(np.asarray(hashes, dtype=np.uint64))
    if len(h) > 4 * k:
        head = np.unique(np.partition(h, 4 * k)[: 4 * k])
        # Fewer than k distinct among the 4k smallest: heavy repeats, look at every value.
        h = head if len(head) >= k else np.unique(h)
    else:
        h = np.unique(h)
    return [int(v) for v in h[:k]]


def merge(sketches: Iterable[list[int]], k: int = K) -> list[int]:
    union = sorted(set().union(*map(set, sketches)))
    return union[:k]


def estimate(s: list[int], k: int = K) -> float:
    """Estimated number of distinct values behind sketch ``s``."""
    if len(s) < k:
        return float(len(s))
    return (k - 1) / (s[k - 1] / 2.0**64)
