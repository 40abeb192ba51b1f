"""What every trainer returns, and the in-memory (sampled) view of a split that scikit-learn models
and Tune trials train on. Scoring any model kind is :func:`raypipe.model.predict_matrix`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raypipe.model import SCORING_BATCH_ROWS

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    """A trained model and how it was trained.

    ``model`` is an ``xgboost.Booster`` (``kind == "xgboost"``) or a fitted scikit-learn
    estimator; :func:`raypipe.model.predict_matrix` scores either.
    """

    model: Any
    kind: str
    params: dict[str, Any]
    best_iteration: int
    rounds: int
    wall_s: float
    valid_metric: str | None = None
    valid_score: float | None = None
    checkpoint_path: str | None = None
    sampling: str | None = None
    """How the train split was sampled to fit in memory; None when every row was used."""
    tune: dict[str, Any] | None = None
    """The search's summary (best config, trials) when the model came from Ray Tune."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Extra training metrics to log (sampled rows, trial counts...)."""


@dataclass
class Arrays:
    """A split held in memory as NumPy (label as float, class index for classification)."""

    X: np.ndarray
    y: np.ndarray
    w: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return len(self.y)


def collect(ds, max_rows: int | None = None, seed: int = 0, what: str = "train") -> tuple[Arrays, str | None]:
    """Read a (materialised) split into NumPy, sampling uniformly above ``max_rows``.

    The sample is a seeded Bernoulli draw per batch with probability ``max_rows / rows``, so
    memory stays near ``max_rows`` rows however large the split is.

    Returns:
        The arrays and a one-line note on the sampling (None when every row was kept).
    """
    total = ds.count()
    frac = 1.0 if not max_rows or total <= max_rows else max_rows / total
    rng = np.random.default_rng(seed)
    xs, ys, ws = [], [], []
    for b in ds.iter_batches(batch_size=SCORING_BATCH_ROWS, batch_format="numpy"):
        if not len(b["y"]):
            continue
        keep = slice(None) if frac >= 1.0 else rng.random(len(b["y"])) < frac
        xs.append(b["X"][keep])
        ys.append(b["y"][keep])
        if "w" in b:
            ws.append(b["w"][keep])
    if not xs:
        return Arrays(np.empty((0, 0), np.float32), np.empty(0, np.float32)), None
    arrays = Arrays(np.concatenate(xs), np.concatenate(ys), np.concatenate(ws) if ws else None)
    note = None
    if frac < 1.0:
        note = (
            f"{what} split sampled to {arrays.rows:,} of {total:,} rows (uniform Bernoulli, p={frac:.4f}, "
            f"seed {seed}) to fit train.max_rows_in_memory={max_rows:,}"
        )
        log.warning(note)
    return arrays, note
