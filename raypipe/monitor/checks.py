"""Per-feature and model-level checks: metrics from the collected counts, then thresholds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raypipe.config import MonitorThresholds
from raypipe.evaluate import HIGHER_IS_BETTER, PRIMARY
from raypipe.monitor import drift
from raypipe.monitor.alerts import Alert
from raypipe.monitor.collect import LATENCY_EDGES_MS
from raypipe.monitor.reference import ReferenceProfile


@dataclass
class FeatureDrift:
    name: str
    kind: str
    rows: int
    null_rate_ref: float
    null_rate_cur: float
    out_of_schema_rate: float
    """Share of non-null values outside the contract's range or kept categories."""
    psi: float | None = None
    ks: float | None = None
    category_shift: float | None = None
    chi2: float | None = None
    chi2_p: float | None = None
    out_of_schema_rate_ref: float = 0.0
    """The same share in the train split: non-zero for categoricals with more levels than
    ``features.max_categories``; the threshold applies to the increase over it."""
    missing_in_logs: bool = False
    flagged_by: list[str] = field(default_factory=list)
    plot: dict[str, Any] = field(default_factory=dict)
    """Reference vs current distribution for the HTML report (bins or levels, shares)."""

    @property
    def null_rate_change(self) -> float:
        return abs(self.null_rate_cur - self.null_rate_ref)


def compare(ref: ReferenceProfile, cur: dict[str, Any]) -> list[FeatureDrift]:
    """Per-feature drift metrics from the reference and the collected current counts."""
    out = []
    for name, r in ref.numeric.items():
        c = cur["num"].get(name)
        if c is None:
            out.append(_missing(name, "numeric", cur, r.null_rate))
            continue
        rc, cc = np.asarray(r.counts, float), np.asarray(c["counts"], float)
        groups = drift.psi_groups(rc)
        valid = c["count"] - c["nulls"]
        out.append(
            FeatureDrift(
                name=name,
                kind="numeric",
                rows=c["count"],
                null_rate_ref=r.null_rate,
                null_rate_cur=c["nulls"] / c["count"] if c["count"] else 0.0,
                out_of_schema_rate=c.get("out_of_schema", 0) / valid if valid else 0.0,
                psi=drift.psi(drift.regroup(rc, groups), drift.regroup(cc, groups)),
                ks=drift.ks_from_counts(rc, cc),
                plot={"edges": r.plot_edges, "ref": r.plot_counts, "cur": c["plot_counts"]},
            )
        )
    for name, r in ref.categorical.items():
        c = cur["cat"].get(name)
        if c is None:
            out.append(_missing(name, "categorical", cur, r.null_rate))
            continue
        # The "other" bucket (levels outside the contract) takes part in every metric.
        rc = np.asarray(r.counts + [r.other], float)
        cc = np.asarray(c["counts"] + [c["other"]], float)
        valid = c["count"] - c["nulls"]
        stat, p = drift.chi_square(rc, cc)
        top = np.argsort(-(rc / max(rc.sum(), 1) + cc / max(cc.sum(), 1)))[:25]
        labels = r.levels + ["(other)"]
        out.append(
            FeatureDrift(
                name=name,
                kind="categorical",
                rows=c["count"],
                null_rate_ref=r.null_rate,
                null_rate_cur=c["nulls"] / c["count"] if c["count"] else 0.0,
                out_of_schema_rate=c["other"] / valid if valid else 0.0,
                out_of_schema_rate_ref=r.other / (r.count - r.nulls) if r.count > r.nulls else 0.0,
                psi=drift.psi(rc, cc),
                category_shift=drift.total_variation(rc, cc),
                chi2=stat,
                chi2_p=p,
                plot={
                    "levels": [labels[i] for i in top],
                    "ref": [float(rc[i]) for i in top],
                    "cur": [float(cc[i]) for i in top],
                    "new_levels": dict(list(c.get("new_levels", {}).items())[:10]),
                },
            )
        )
    return out


def _missing(name: str, kind: str, cur: dict[str, Any], ref_null: float) -> FeatureDrift:
    # A feature absent from the logs reaches the model as all-missing: report it as such.
    return FeatureDrift(
        name=name,
        kind=kind,
        rows=cur["rows"],
        null_rate_ref=ref_null,
        null_rate_cur=1.0,
        out_of_schema_rate=0.0,
        missing_in_logs=True,
    )


def check(
    features: list[FeatureDrift], prediction: dict, performance: dict | None, volume: dict, t: MonitorThresholds
) -> list[Alert]:
    """Every threshold crossing; also records on each feature which checks flagged it."""
    alerts: list[Alert] = []
    for f in features:
        values = {
            "psi": f.psi,
            "ks": f.ks,
            "category_shift": f.category_shift,
            "null_rate_change": f.null_rate_change,
            "out_of_schema_rate": f.out_of_schema_rate - f.out_of_schema_rate_ref,
        }
        for metric, value in values.items():
            limit = getattr(t, metric)
            if limit is not None and value is not None and np.isfinite(value) and value > limit:
                f.flagged_by.append(metric)
                alerts.append(Alert(metric, float(value), limit, f.name))
    model_checks = {
        "prediction_psi": prediction.get("psi"),
        "performance_drop": (performance or {}).get("drop"),
        "latency_p95_ms": volume.get("latency_ms", {}).get("p95"),
    }
    for metric, value in model_checks.items():
        limit = getattr(t, metric)
        if limit is not None and value is not None and np.isfinite(value) and value > limit:
            alerts.append(Alert(metric, float(value), limit))
    return alerts


def _prediction(ref: ReferenceProfile, cur: dict[str, Any]) -> dict[str, Any]:
    c = cur.get("score")
    if ref.scores is None or c is None:
        return {}
    rc, cc = np.asarray(ref.scores.counts, float), np.asarray(c["counts"], float)
    groups = drift.psi_groups(rc)
    valid = c["count"] - c["nulls"]
    return {
        "psi": drift.psi(drift.regroup(rc, groups), drift.regroup(cc, groups)),
        "ks": drift.ks_from_counts(rc, cc),
        "mean_ref": ref.scores.mean,
        "mean_cur": c["sum"] / valid if valid else None,
        "plot": {"edges": ref.scores.plot_edges, "ref": ref.scores.plot_counts, "cur": c["plot_counts"]},
    }


def _volume(cur: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": cur["rows"], "requests": cur.get("requests", 0)}
    out["rows_by_date"] = dict(sorted(cur.get("rows_by_date", {}).items()))
    if "ts_min" in cur:
        out["first_ts"], out["last_ts"] = (
            dt.datetime.fromtimestamp(cur[k][0] / 1000, dt.UTC).isoformat() for k in ("ts_min", "ts_max")
        )
    lat = np.asarray(cur.get("latency_counts", []), float)
    if lat.sum() > 0:
        cum = np.cumsum(lat) / lat.sum()
        upper = np.append(LATENCY_EDGES_MS, np.inf)
        out["latency_ms"] = {f"p{q}": float(upper[np.searchsorted(cum, q / 100)]) for q in (50, 95, 99)}
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    tp = np.concatenate([[0], np.cumsum(pos[::-1])]) / pos.sum()
    fp = np.concatenate([[0], np.cumsum(neg[::-1])]) / neg.sum()
    return float(np.trapezoid(tp, fp))


def _performance(ref: ReferenceProfile, cur: dict[str, Any], task: str) -> dict[str, Any] | None:
    p = cur.get("perf")
    if not p or not p.get("n"):
        return None if p is None else {"n": 0}
    n = p["n"]
    live: dict[str, float] = {}
    if task == "regression":
        live["rmse"], live["mae"] = float(np.sqrt(p["sq_err"] / n)), p["abs_err"] / n
    else:
        live["error_rate"] = p["errors"] / n
        live["accuracy"] = 1.0 - live["error_rate"]
        if "auc_pos" in p:
            live["auc"] = _auc(np.asarray(p["auc_pos"], float), np.asarray(p["auc_neg"], float))
    metric = ref.primary_metric or PRIMARY[task]
    if metric not in live:
        metric = "auc" if "auc" in live else ("accuracy" if task != "regression" else "rmse")
    out: dict[str, Any] = {"n": n, "live": live, "metric": metric, "test": ref.test_metrics.get(metric)}
    test = out["test"]
    if test is not None and np.isfinite(live[metric]):
        higher = HIGHER_IS_BETTER.get(metric, False)
        out["drop"] = float(test - live[metric]) if higher else float((live[metric] - test) / max(abs(test), 1e-12))
        out["drop_kind"] = "absolute" if higher else "relative"
    return out
