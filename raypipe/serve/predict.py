"""Turning raw model scores into the response users see (shared by every entry point)."""

from __future__ import annotations

from typing import Any

import numpy as np

from raypipe.data.schema import LabelSpec


def _class_values(label: LabelSpec) -> list[Any]:
    """Class names back in the label's own type (bool stays bool, 1 stays int)."""
    classes = label.classes or []
    if label.dtype == "bool":
        return [c == "true" for c in classes]
    if label.dtype.startswith(("int", "uint", "float", "double")):
        return [int(c) if c.lstrip("-").isdigit() else float(c) for c in classes]
    return list(classes)


def format_predictions(label: LabelSpec, scores: np.ndarray) -> dict[str, list[Any]]:
    """Predictions (and class probabilities for classifiers) as JSON-ready lists."""
    if label.task == "regression":
        return {"prediction": scores.astype(float).tolist()}
    values = _class_values(label)
    if label.task == "binary":
        probs = np.column_stack([1.0 - scores, scores])
    else:
        probs = scores.reshape(len(scores), -1)
    idx = probs.argmax(axis=1)
    names = [str(c) for c in values]
    return {
        "prediction": [values[i] for i in idx],
        "probabilities": [dict(zip(names, row)) for row in np.round(probs, 6).tolist()],
    }
