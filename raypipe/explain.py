"""Explanations: how much each raw field moved one prediction, from XGBoost's ``pred_contribs``.

XGBoost gives one contribution (a SHAP value, exact for trees) per engineered column plus a
bias, in margin units, and they add up to the margin. The preprocessor knows which field each
column came from (:meth:`~raypipe.features.Preprocessor.feature_sources`), so the columns of one
field (one-hot indicators, timestamp parts, target encodings) are summed into it; a derived
feature reads several fields and keeps its own name. The sum still equals the margin.

    explain_table(bundle, table) -> Explanations      per record: base, {field: value}, margin
    Explanations.records()                            what ``/explain`` returns per record
    Explanations.columns()                            ``contribution__<field>`` for batch output
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raypipe.errors import ExplainError

if TYPE_CHECKING:
    from raypipe.model import Bundle

COLUMN_PREFIX = "contribution__"


@dataclass(frozen=True)
class Explanations:
    """Contributions of ``fields`` for ``n`` records, in ``units`` (the model's margin)."""

    fields: list[str]
    base: np.ndarray
    """(n,) float64: the bias, the margin before any field is known."""
    contributions: np.ndarray
    """(n, fields) float64."""
    explained_class: list[str | None]
    """Per record: the class whose margin is explained (None for regression)."""
    units: str
    """``log-odds`` for classifiers (multiclass: the class's softmax logit), ``value`` for regression."""

    @property
    def margin(self) -> np.ndarray:
        return self.base + self.contributions.sum(axis=1)

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per record: base, contributions by field, margin, explained class."""
        margin = self.margin.tolist()
        return [
            {"base": b, "contributions": dict(zip(self.fields, row)), "margin": m, "explained_class": k}
            for b, row, m, k in zip(self.base.tolist(), self.contributions.tolist(), margin, self.explained_class)
        ]

    def columns(self) -> dict[str, np.ndarray]:
        """``contribution__<field>`` per field and ``contribution__base``, float64 (batch scoring's columns)."""
        out = {COLUMN_PREFIX + f: self.contributions[:, j] for j, f in enumerate(self.fields)}
        return out | {COLUMN_PREFIX + "base": self.base}


def check_explainable(model: Any) -> None:
    """Raise unless ``model`` is an XGBoost booster (the only kind with exact tree contributions here).

    Raises:
        ExplainError: naming the model's class and the fix.
    """
    if not type(model).__module__.startswith("xgboost"):
        raise ExplainError(
            f"explanations need an XGBoost model; this one is a scikit-learn {type(model).__name__}: "
            "train with train.model=xgboost to explain predictions",
            model_class=type(model).__name__,
        )


def explain_table(bundle: Bundle, table: pa.Table) -> Explanations:
    """Per-field contributions for validated raw records (the rows ``/predict`` would score).

    Binary classifiers: the positive class's log-odds; multiclass: each record's predicted class;
    regression: the predicted value.

    Raises:
        ExplainError: the model is not an XGBoost booster.

    Example:
        >>> ex = explain_table(bundle, table)  # doctest: +SKIP
        >>> ex.records()[0]  # doctest: +SKIP
        {'base': -0.4, 'contributions': {'distance': 1.2, 'carrier': -0.3}, 'margin': 0.5, ...}
    """
    import xgboost

    check_explainable(bundle.model)
    prep = bundle.preprocessor
    X = prep.transform_features(table)
    # A value past float32's range (flagged, still scored) is inf here: inplace_predict scores it as
    # the largest value, but a DMatrix refuses inf, so it gets that largest value explicitly.
    top = np.finfo(np.float32).max
    np.nan_to_num(X, copy=False, nan=np.nan, posinf=top, neginf=-top)
    # DMatrix, not inplace_predict: pred_contribs needs it; categorical codes stay categorical. One
    # thread: building it is one copy of X, and its thread pool cost more than that on a request's rows.
    dm = xgboost.DMatrix(X, feature_types=prep.feature_types, enable_categorical=True, nthread=1)
    raw = np.asarray(bundle.model.predict(dm, pred_contribs=True, validate_features=False), dtype=np.float64)
    task, classes = prep.label.task, prep.label.classes or []
    if raw.ndim == 3:  # multiclass: (n, classes, features + 1); explain each record's predicted class
        idx = raw.sum(axis=2).argmax(axis=1)
        raw = raw[np.arange(len(raw)), idx]
        explained: list[str | None] = [classes[i] for i in idx.tolist()]
    else:
        explained = [classes[-1] if task == "binary" and classes else None] * len(raw)
    fields, group = _grouping(prep.feature_sources())
    contributions = raw[:, :-1] @ group  # one matrix product sums each field's columns
    units = "value" if task == "regression" else "log-odds"
    return Explanations(fields, raw[:, -1].copy(), contributions, explained, units)


def _grouping(sources: list[str]) -> tuple[list[str], np.ndarray]:
    """Fields in first-seen order and the (columns, fields) 0/1 matrix summing columns into them."""
    fields = list(dict.fromkeys(sources))
    group = np.zeros((len(sources), len(fields)))
    group[np.arange(len(sources)), [fields.index(s) for s in sources]] = 1.0
    return fields, group
