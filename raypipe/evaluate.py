"""Held-out metrics as pure functions (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIMARY = {"binary": "auc", "multiclass": "logloss", "regression": "rmse"}
DESCRIPTIVE = frozenset({"positive_rate"})
"""Metrics that describe the split, not the model: neither better nor worse when they change."""
HIGHER_IS_BETTER = {
    "auc": True,
    "pr_auc": True,
    "accuracy": True,
    "f1": True,
    "r2": True,
    "f1_macro": True,
    "auc_ovr": True,
}


@dataclass(frozen=True)
class EvalReport:
    task: str
    metrics: dict[str, float]
    """Test-split metrics, unprefixed (``auc``, ``rmse``)."""
    primary: str
    n_rows: int

    @property
    def score(self) -> float:
        return self.metrics[self.primary]

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER.get(self.primary, False)

    def prefixed(self, prefix: str = "test_") -> dict[str, float]:
        return {prefix + k: v for k, v in self.metrics.items()}


def evaluate(task: str, y_true: np.ndarray, y_pred: np.ndarray, primary: str | None = None) -> EvalReport:
    """Compute metrics for ``task``.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        y_true: class indices or targets.
        y_pred: P(positive) for binary, (n, classes) probabilities for multiclass,
            predictions for regression.
        primary: the metric the registry gate compares; default per task.

    Example:
        >>> evaluate("binary", np.array([0, 1]), np.array([0.2, 0.9])).metrics["auc"]
        1.0
    """
    # Here, not at the top: the monitor's Ray Data workers import this module for its constants,
    # and scikit-learn (with SciPy) costs each new worker process a second.
    from sklearn import metrics as skm

    y_true = np.asarray(y_true)
    if task == "binary":
        labels = y_true.astype(int)
        hard = (y_pred >= 0.5).astype(int)
        m = {
            "auc": _safe(skm.roc_auc_score, labels, y_pred),
            "pr_auc": _safe(skm.average_precision_score, labels, y_pred),
            "logloss": float(skm.log_loss(labels, np.clip(y_pred, 1e-7, 1 - 1e-7), labels=[0, 1])),
            "accuracy": float(skm.accuracy_score(labels, hard)),
            "f1": float(skm.f1_score(labels, hard, zero_division=0)),
            "positive_rate": float(labels.mean()) if len(labels) else float("nan"),
        }
    elif task == "multiclass":
        labels = y_true.astype(int)
        k = y_pred.shape[1]
        hard = y_pred.argmax(axis=1)
        m = {
            "logloss": float(skm.log_loss(labels, np.clip(y_pred, 1e-7, 1), labels=list(range(k)))),
            "accuracy": float(skm.accuracy_score(labels, hard)),
            "f1_macro": float(skm.f1_score(labels, hard, average="macro", zero_division=0)),
            "auc_ovr": _auc_ovr(labels, y_pred),
        }
    else:
        err = y_pred - y_true
        m = {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "mae": float(np.mean(np.abs(err))),
            "r2": float(skm.r2_score(y_true, y_pred)),
        }
    primary = primary or PRIMARY[task]
    if primary not in m:
        from raypipe.errors import ConfigError

        raise ConfigError(f"evaluate.primary_metric '{primary}' is not computed for {task}; choose one of {sorted(m)}")
    return EvalReport(task=task, metrics=m, primary=primary, n_rows=int(len(y_true)))


def _auc_ovr(labels: np.ndarray, y_pred: np.ndarray) -> float:
    """One-vs-rest AUC averaged over the classes present in ``labels`` (a class absent from the
    split has no AUC there); NaN when fewer than two classes are present."""
    from sklearn import metrics as skm

    present = [c for c in np.unique(labels) if 0 < (labels == c).sum() < len(labels)]
    if len(present) < 2:
        return float("nan")
    return float(np.mean([skm.roc_auc_score(labels == c, y_pred[:, c]) for c in present]))


def _safe(fn, *args, **kwargs) -> float:
    """AUC-type metrics are undefined with one class present: NaN, not a crash."""
    try:
        return float(fn(*args, **kwargs))
    except ValueError:
        return float("nan")
