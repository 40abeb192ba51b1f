"""The run report (self-contained HTML) and the model card (Markdown) of one training run.

Pure function of the evaluation outputs: no Ray, no MLflow. The pipeline calls
``write_run_report`` after evaluation and logs the returned files to MLflow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.config import ReportConfig
from raypipe.evaluate import evaluate
from raypipe.report import plots
from raypipe.report.html import esc, fmt, img, page, table

# Rows used for each bootstrap resample at most: bounds the report's cost on big test splits.
_MAX_BOOTSTRAP_ROWS = 50_000


@dataclass(frozen=True)
class RunReportPaths:
    html: Path
    model_card: Path
    plots: dict[str, Path]
    metrics: Path
    """JSON: metrics with confidence intervals and by slice."""


def bootstrap_metrics(
    task: str, y: np.ndarray, s: np.ndarray, n_boot: int, seed: int
) -> dict[str, tuple[float, float, float]]:
    """metric -> (value, 2.5% and 97.5% bootstrap percentiles)."""
    point = evaluate(task, y, s).metrics
    rng = np.random.default_rng(seed)
    n = min(len(y), _MAX_BOOTSTRAP_ROWS)
    draws: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), n)
        for k, v in evaluate(task, y[idx], s[idx]).metrics.items():
            draws[k].append(v)
    out = {}
    for k, v in point.items():
        d = np.asarray(draws[k], dtype=float)
        d = d[np.isfinite(d)]
        lo, hi = np.percentile(d, [2.5, 97.5]) if len(d) else (float("nan"), float("nan"))
        out[k] = (float(v), float(lo), float(hi))
    return out


def slice_metrics(
    task: str, y: np.ndarray, s: np.ndarray, slices: dict[str, np.ndarray], max_slices: int
) -> dict[str, list[dict[str, Any]]]:
    """column -> one row per value (most frequent first): n and the task's metrics."""
    out: dict[str, list[dict[str, Any]]] = {}
    for col, values in slices.items():
        values = np.asarray(values, dtype=object)
        if len(values) != len(y):
            raise ValueError(f"slice column '{col}' has {len(values)} values for {len(y)} test rows")
        keys = np.array(["(null)" if v is None or v != v else str(v) for v in values], dtype=object)
        uniq, counts = np.unique(keys, return_counts=True)
        rows = []
        for k in uniq[np.argsort(-counts)][:max_slices]:
            m = keys == k
            metrics = evaluate(task, y[m], s[m]).metrics
            rows.append({"value": str(k), "n": int(m.sum()), **metrics})
        out[col] = rows
    return out


def _plots(
    task: str, y: np.ndarray, s: np.ndarray, class_names: list[str], fi: dict[str, float], m
) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    if task == "binary":
        yi = y.astype(int)
        out["roc"] = plots.roc(yi, s, m["auc"][0])
        out["pr"] = plots.pr(yi, s, m["pr_auc"][0])
        out["calibration"] = plots.calibration(yi, s)
        hard = (s >= 0.5).astype(int)
        out["confusion"] = plots.confusion(_confusion(yi, hard, 2), class_names)
    elif task == "multiclass":
        yi = y.astype(int)
        out["confusion"] = plots.confusion(_confusion(yi, s.argmax(axis=1), s.shape[1]), class_names)
        out["calibration"] = plots.calibration((s.argmax(axis=1) == yi).astype(float), s.max(axis=1))
    else:
        out["residuals"] = plots.residuals(y.astype(float), s.astype(float))
    if fi:
        out["importance"] = plots.importance(fi)
    return out


def _confusion(y: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def write_run_report(
    out_dir: str | Path,
    *,
    task: str,
    y_true: np.ndarray,
    scores: np.ndarray,
    class_names: list[str] | None,
    feature_importance: dict[str, float],
    slices: dict[str, np.ndarray],
    quality: dict[str, Any],
    data_summary: dict[str, Any],
    manifest: dict[str, Any],
    gate: dict[str, Any],
    card: ReportConfig,
) -> RunReportPaths:
    """Write ``report.html``, ``model_card.md``, ``plots/*.png`` and ``metrics.json`` to ``out_dir``.

    Args:
        task: ``binary``, ``multiclass`` or ``regression``.
        y_true: test labels as class indices (classification) or values (regression).
        scores: P(positive) (binary), (n, k) probabilities (multiclass) or predictions.
        class_names: class names by index (classification).
        feature_importance: feature -> gain (``booster.get_score(importance_type="gain")``).
        slices: raw column -> its test-row values (aligned with ``y_true``).
        quality, data_summary, manifest, gate: JSON-able dicts shown as given.
        card: the ``report:`` config (intended use, limitations, bootstrap settings).

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    y, s = np.asarray(y_true), np.asarray(scores)
    names = list(class_names or (["0", "1"] if task == "binary" else []))
    m = bootstrap_metrics(task, y, s, card.bootstrap_samples, card.seed)
    by_slice = slice_metrics(task, y, s, slices, card.max_slices)
    pngs = _plots(task, y, s, names, feature_importance, m)
    paths = {}
    for name, png in pngs.items():
        paths[name] = out / "plots" / f"{name}.png"
        paths[name].write_bytes(png)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(
        json.dumps(
            {"metrics": {k: {"value": v, "ci95": [lo, hi]} for k, (v, lo, hi) in m.items()}, "slices": by_slice},
            indent=1,
            default=str,
        )  # fmt: skip
    )
    metric_rows = [(k, v, f"[{fmt(lo)}, {fmt(hi)}]") for k, (v, lo, hi) in m.items()]
    html_sections = [
        f"<p>Task: <b>{esc(task)}</b>. Model {esc(manifest.get('model_name', '-'))} "
        f"version {esc(manifest.get('model_version', '-'))}</p>",
        "<h2>Intended use</h2><p>" + esc(card.intended_use) + "</p>",
        "<h2>Limitations</h2><p>" + esc(card.limitations) + "</p>",
        "<h2>Data summary</h2>" + table(["", "value"], _flat(data_summary)),
        "<h2>Data quality</h2>" + table(["", "value"], _flat(quality)),
        f"<h2>Test metrics (95% bootstrap CI, {card.bootstrap_samples} resamples)</h2>"
        + table(["metric", "value", "95% CI"], metric_rows),
        "<h2>Plots</h2><div class='grid'>"
        + "".join(f"<figure>{img(p, k)}<figcaption>{esc(k)}</figcaption></figure>" for k, p in pngs.items())
        + "</div>",
    ]
    for col, rows in by_slice.items():
        keys = list(rows[0]) if rows else ["value", "n"]
        html_sections.append(f"<h2>Metrics by {esc(col)}</h2>" + table(keys, [[r[k] for k in keys] for r in rows]))
    html_sections.append("<h2>Promotion gate</h2>" + table(["", "value"], _flat(gate)))
    html_sections.append("<h2>Manifest</h2><pre>" + esc(json.dumps(manifest, indent=2, default=str)) + "</pre>")
    html_path = out / "report.html"
    html_path.write_text(page(f"raypipe run report: {manifest.get('name', task)}", html_sections))
    card_path = out / "model_card.md"
    card_path.write_text(_model_card(task, m, by_slice, paths, quality, data_summary, manifest, gate, card))
    return RunReportPaths(html=html_path, model_card=card_path, plots=paths, metrics=metrics_path)


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            rows.extend(_flat(v, f"{prefix}{k}."))
        else:
            rows.append((f"{prefix}{k}", json.dumps(v, default=str) if isinstance(v, list | dict) else v))
    return rows


def _md_table(headers: list[str], rows: list[list[Any]]) -> str:
    line = "| " + " | ".join(headers) + " |\n| " + " | ".join("---" for _ in headers) + " |\n"
    return line + "".join("| " + " | ".join(fmt(c).replace("|", "\\|") for c in r) + " |\n" for r in rows)


def _model_card(task, m, by_slice, plot_paths, quality, data_summary, manifest, gate, card: ReportConfig) -> str:
    name = manifest.get("model_name") or manifest.get("name") or "model"
    parts = [
        f"# Model card: {name}",
        "",
        f"- Task: {task}",
        f"- Version: {manifest.get('model_version', 'unregistered')}",
        f"- Owners: {', '.join(card.owners) or 'not set (report.owners)'}",
        "",
        "## Intended use",
        card.intended_use,
        "",
        "## Limitations",
        card.limitations,
        "",
        "## Data",
        _md_table(["", "value"], [list(r) for r in _flat(data_summary)]),
        "## Data quality",
        _md_table(["", "value"], [list(r) for r in _flat(quality)]),
        "## Test metrics (95% bootstrap confidence intervals)",
        _md_table(["metric", "value", "95% CI"], [[k, v, f"[{fmt(lo)}, {fmt(hi)}]"] for k, (v, lo, hi) in m.items()]),
    ]
    for col, rows in by_slice.items():
        keys = list(rows[0]) if rows else ["value", "n"]
        parts += [f"## Metrics by {col}", _md_table(keys, [[r[k] for k in keys] for r in rows])]
    parts += ["## Promotion gate", _md_table(["", "value"], [list(r) for r in _flat(gate)]), "## Plots", ""]
    parts += [f"![{k}](plots/{p.name})" for k, p in plot_paths.items()]
    parts += ["", "## Manifest", "```json", json.dumps(manifest, indent=2, default=str), "```", ""]
    return "\n".join(parts)
