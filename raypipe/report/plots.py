"""Matplotlib figures as PNG bytes (Agg backend: no display, thread-safe enough for one process)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

_REF, _CUR = "#4c72b0", "#dd8452"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def roc(y: np.ndarray, s: np.ndarray, auc: float) -> bytes:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, color=_REF, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "--", color="#999")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    ax.legend(loc="lower right")
    return _png(fig)


def pr(y: np.ndarray, s: np.ndarray, ap: float) -> bytes:
    from sklearn.metrics import precision_recall_curve

    prec, rec, _ = precision_recall_curve(y, s)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(rec, prec, color=_REF, label=f"AP {ap:.3f}")
    ax.axhline(y.mean(), ls="--", color="#999", label=f"base rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve", ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return _png(fig)


def calibration(y: np.ndarray, s: np.ndarray, bins: int = 10) -> bytes:
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(s, edges) - 1, 0, bins - 1)
    n = np.bincount(idx, minlength=bins)
    keep = n > 0
    mean_s = np.bincount(idx, weights=s, minlength=bins)[keep] / n[keep]
    frac = np.bincount(idx, weights=y, minlength=bins)[keep] / n[keep]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "--", color="#999", label="perfect")
    ax.plot(mean_s, frac, "o-", color=_REF, label="model")
    ax.set(xlabel="mean predicted probability", ylabel="observed positive rate", title="Calibration")
    ax.legend(loc="upper left")
    return _png(fig)


def confusion(matrix: np.ndarray, names: Sequence[str]) -> bytes:
    k = len(names)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.6 * k + 2.5), max(3.2, 0.6 * k + 2)))
    ax.imshow(matrix, cmap="Blues")
    for i in range(k):
        for j in range(k):
            color = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0)
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion matrix")
    return _png(fig)


def importance(values: dict[str, float], top: int = 20) -> bytes:
    items = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig, ax = plt.subplots(figsize=(5.5, max(2.5, 0.25 * len(items) + 1)))
    ax.barh([k for k, _ in items], [v for _, v in items], color=_REF)
    ax.set(xlabel="gain", title="Feature importance (gain)")
    return _png(fig)


def residuals(y: np.ndarray, pred: np.ndarray, max_points: int = 5000) -> bytes:
    if len(y) > max_points:
        pick = np.random.default_rng(0).choice(len(y), max_points, replace=False)
        y, pred = y[pick], pred[pick]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(pred, y - pred, s=4, alpha=0.4, color=_REF)
    ax.axhline(0, color="#999", ls="--")
    ax.set(xlabel="prediction", ylabel="residual (actual - prediction)", title="Residuals")
    return _png(fig)


def numeric_drift(name: str, edges: Sequence[float], ref: Sequence[float], cur: Sequence[float]) -> bytes:
    e = np.asarray(edges)
    r, c = _share(ref), _share(cur)
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    ax.stairs(r, e, color=_REF, fill=True, alpha=0.45, label="reference")
    ax.stairs(c, e, color=_CUR, lw=1.8, label="current")
    ax.set(title=name, ylabel="share")
    ax.legend(fontsize=8)
    return _png(fig)


def categorical_drift(name: str, levels: Sequence[str], ref: Sequence[float], cur: Sequence[float]) -> bytes:
    r, c = _share(ref), _share(cur)
    x = np.arange(len(levels))
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    ax.bar(x - 0.2, r, 0.4, color=_REF, label="reference")
    ax.bar(x + 0.2, c, 0.4, color=_CUR, label="current")
    ax.set_xticks(x, [str(v)[:12] for v in levels], rotation=60, fontsize=7)
    ax.set(title=name, ylabel="share")
    ax.legend(fontsize=8)
    return _png(fig)


def _share(v: Sequence[float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / a.sum() if a.sum() > 0 else a
