"""``run_monitor``: compare a window of logged traffic with the reference, alert on crossings."""

from __future__ import annotations

import datetime as dt
import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.config import MonitorThresholds, PipelineConfig
from raypipe.errors import DataError
from raypipe.evaluate import HIGHER_IS_BETTER, PRIMARY
from raypipe.monitor import drift
from raypipe.monitor.alerts import Alert, Delivery, post_webhook, slack_payload
from raypipe.monitor.collect import LATENCY_EDGES_MS, Window, collect, list_files, log_columns, make_plan
from raypipe.monitor.reference import REFERENCE_FILE, ReferenceProfile

log = logging.getLogger("raypipe.monitor")


@dataclass
class FeatureDrift:
    name: str
    kind: str
    rows: int
    null_rate_ref: float
    null_rate_cur: float
    out_of_schema_rate: float
    psi: float | None = None
    ks: float | None = None
    category_shift: float | None = None
    chi2: float | None = None
    chi2_p: float | None = None
    missing_in_logs: bool = False
    flagged_by: list[str] = field(default_factory=list)
    plot: dict[str, Any] = field(default_factory=dict)
    """Reference vs current distribution for the HTML report (bins or levels, shares)."""

    @property
    def null_rate_change(self) -> float:
        return abs(self.null_rate_cur - self.null_rate_ref)


@dataclass
class MonitorResult:
    model: str
    window: dict[str, str | None]
    rows: int
    requests: int
    features: list[FeatureDrift]
    prediction: dict[str, Any]
    volume: dict[str, Any]
    performance: dict[str, Any] | None
    alerts: list[Alert]
    insufficient_data: bool
    alert_exit_code: int = 8
    delivery: Delivery | None = None
    report_json: str | None = None
    report_html: str | None = None

    @property
    def flagged_features(self) -> list[str]:
        return sorted({a.feature for a in self.alerts if a.feature})

    @property
    def exit_code(self) -> int:
        """0 when all checks pass, ``monitor.alert_exit_code`` (default 8) when an alert fired."""
        return self.alert_exit_code if self.alerts else 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flagged_features"] = self.flagged_features
        d["exit_code"] = self.exit_code
        for f, fd in zip(d["features"], self.features):
            f["null_rate_change"] = fd.null_rate_change
        return d


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
            "out_of_schema_rate": f.out_of_schema_rate,
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


def load_reference(model_uri: str, tracking_uri: str | None = None) -> ReferenceProfile:
    """The reference profile stored with a model: a bundle folder or ``models:/name@alias``.

    Raises:
        DataError: the model has no reference.json.
    """
    if not model_uri.startswith("models:/"):
        return ReferenceProfile.load(model_uri)
    import mlflow

    from raypipe.errors import RegistryError

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=model_uri, dst_path=tempfile.mkdtemp(prefix="raypipe-ref-")
        )
    except Exception as e:
        raise RegistryError(f"cannot load '{model_uri}' from {mlflow.get_tracking_uri()}: {e}".splitlines()[0]) from e
    found = next(Path(local).rglob(REFERENCE_FILE), None)
    if found is None:
        raise DataError(
            f"model '{model_uri}' has no {REFERENCE_FILE}; retrain it with this raypipe or pass --reference"
        )
    return ReferenceProfile.load(found)


def run_monitor(
    cfg: PipelineConfig,
    *,
    reference: ReferenceProfile | str | Path | None = None,
    model_uri: str | None = None,
    input_path: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    labels: str | None = None,
    out_dir: str | Path | None = None,
    tracking_uri: str | None = None,
    send_alerts: bool = True,
    address: str | None = None,
) -> MonitorResult:
    """Check one window of logged traffic against the model's reference profile.

    The work runs as Ray Data tasks; when Ray is not connected yet it joins
    ``address`` (or ``runtime.address`` / ``RAY_ADDRESS``) or starts a local Ray,
    after the reference and the input files have been checked.

    Args:
        cfg: pipeline config (its ``monitor:`` section holds thresholds and the webhook).
        reference: a ReferenceProfile or the path of a reference.json; or give ``model_uri``.
        model_uri: a bundle folder or ``models:/name@alias`` whose reference.json is used.
        input_path: prediction logs (any Parquet of features); default ``monitor.log_dir``.
        since, until: the window ``[since, until)`` on ``ts`` (and ``date=`` folders).
        labels: Parquet with ``request_id``, ``row``, ``label`` for live performance.
        out_dir: where ``monitor-<stamp>.json`` and ``.html`` go; default ``monitor.out_dir``.
        send_alerts: POST alerts to ``monitor.webhook_url`` (when set).
        address: Ray cluster to join when Ray is not connected yet.

    Returns:
        The result; ``result.exit_code`` is non-zero when an alert fired.

    Raises:
        DataError: no reference, no input files, or unreadable input.
    """
    from raypipe import runtime

    mc = cfg.monitor
    work = runtime.work_dir(cfg)
    if isinstance(reference, ReferenceProfile):
        ref = reference
    elif reference is not None:
        ref = ReferenceProfile.load(reference)
    elif model_uri is not None:
        ref = load_reference(model_uri, tracking_uri)
    else:
        raise DataError("monitor needs a reference: pass --reference reference.json or --model MODEL_URI")
    model = cfg.register.model_name or cfg.name
    root = input_path or mc.log_dir or str(work / "predictions")
    if input_path is None and (Path(root) / f"model={model}").is_dir():
        root = str(Path(root) / f"model={model}")
    window = Window(since, until)
    files = list_files(root, window)
    task = ref.contract_obj.label.task
    if labels is not None and not Path(labels).exists() and "://" not in labels:
        raise DataError(f"labels table '{labels}' not found; pass a Parquet file with request_id, row, label")
    import ray

    if not ray.is_initialized():
        runtime.connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=False)
    cur = collect(files, log_columns(ref), make_plan(ref, window, labels))
    features = compare(ref, cur)
    prediction = _prediction(ref, cur)
    volume = _volume(cur)
    performance = _performance(ref, cur, task) if labels else None
    insufficient = cur["rows"] < mc.min_rows
    if insufficient:
        log.warning(
            "monitor: only %d rows in the window (< monitor.min_rows=%d): no drift verdict", cur["rows"], mc.min_rows
        )
        alerts = []
    else:
        alerts = check(features, prediction, performance, volume, mc.thresholds)
    win = {"since": since.isoformat() if since else None, "until": until.isoformat() if until else None}
    result = MonitorResult(
        model=model,
        window=win,
        rows=cur["rows"],
        requests=cur.get("requests", 0),
        features=features,
        prediction=prediction,
        volume=volume,
        performance=performance,
        alerts=alerts,
        insufficient_data=insufficient,
        alert_exit_code=mc.alert_exit_code,
    )
    out = Path(out_dir or mc.out_dir or work / "monitor")
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    from raypipe.report.drift_report import write_drift_report

    result.report_html = str(write_drift_report(result, out / f"monitor-{stamp}.html"))
    result.report_json = str(out / f"monitor-{stamp}.json")
    for a in alerts:
        log.warning("ALERT %s %s", model, a.describe())
    if alerts and send_alerts and mc.webhook_url:
        window_text = f"{win['since'] or 'start'} .. {win['until'] or 'now'}"
        result.delivery = post_webhook(
            mc.webhook_url,
            slack_payload(model, alerts, result.report_html, window_text),
            timeout_s=mc.webhook_timeout_s,
            attempts=mc.webhook_attempts,
            backoff_s=mc.webhook_backoff_s,
        )
    Path(result.report_json).write_text(json.dumps(_clean(result.to_dict()), indent=1))
    return result


def _clean(o: Any) -> Any:
    """JSON has no NaN: undefined metrics (AUC with one class, empty windows) become null."""
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_clean(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o
