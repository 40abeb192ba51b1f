"""The promotion gate: may a new model version take the champion alias?

``decide`` is pure: floors first (absolute), then the comparison with the
champion, whose score is recomputed on this run's test split (``rescore``) so
both versions are judged on the same rows. The reason is always a sentence.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from raypipe.evaluate import HIGHER_IS_BETTER, evaluate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    score: float
    champion_version: str | None = None
    champion_score: float | None = None
    champion_scored_on: str | None = None
    """``this test split`` or ``its own test split`` (recorded with it, when rescoring was impossible)."""
    champion_metrics: dict[str, float] | None = None
    """Every metric of the champion, on the split named by ``champion_scored_on``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    metrics: dict[str, float],
    metric: str,
    *,
    floors: dict[str, float],
    max_regression: float,
    champion_version: str | None = None,
    champion_score: float | None = None,
    champion_scored_on: str | None = None,
    champion_metrics: dict[str, float] | None = None,
    alias: str = "champion",
) -> GateDecision:
    """Apply the floors, then ``score >= champion - max_regression`` (direction-aware)."""
    score = metrics[metric]
    common = dict(
        metric=metric,
        score=score,
        champion_version=champion_version,
        champion_score=champion_score,
        champion_scored_on=champion_scored_on,
        champion_metrics=champion_metrics,
    )
    for name, bound in floors.items():
        value = metrics.get(name)
        higher = HIGHER_IS_BETTER.get(name, False)
        if value is None or not np.isfinite(value) or (value < bound if higher else value > bound):
            op = ">=" if higher else "<="
            return GateDecision(False, f"{name} {value} fails the floor {name} {op} {bound:g}", **common)
    if champion_version is None:
        return GateDecision(True, f"no {alias} yet: this version takes it", **common)
    if champion_score is None or not np.isfinite(champion_score):
        return GateDecision(True, f"{alias} v{champion_version} has no comparable {metric}: replaced", **common)
    higher = HIGHER_IS_BETTER.get(metric, False)
    delta = (score - champion_score) if higher else (champion_score - score)
    if delta >= -max_regression:
        return GateDecision(
            True,
            f"{metric} {score:.4f} vs {alias} v{champion_version} {champion_score:.4f} "
            f"({champion_scored_on}): promoted",
            **common,
        )
    return GateDecision(
        False,
        f"{metric} {score:.4f} is worse than {alias} v{champion_version} ({champion_score:.4f} on "
        f"{champion_scored_on}) by more than {max_regression:g}: {alias} stays on v{champion_version}",
        **common,
    )


def rescore(bundle, raw_test_batches, metric: str) -> dict[str, float] | None:
    """The champion bundle's metrics (``metric`` primary) on this run's raw test rows; ``None`` if it
    cannot score them.

    ``raw_test_batches()`` yields the test split's raw Arrow batches, label included.
    """
    from raypipe.model import score_labelled

    batches = raw_test_batches()
    first = next(batches, None)
    if first is None:
        return None
    missing = [c for c in bundle.preprocessor.input_columns if c not in first.schema.names]
    if missing:
        log.warning("champion needs columns this data lacks (%s); gate uses its recorded score", missing)
        return None
    scored = score_labelled(itertools.chain([first], batches), bundle.preprocessor, bundle.model)
    if scored is None:
        return None
    y, p, _ = scored
    return evaluate(bundle.contract.label.task, y, p, metric).metrics
