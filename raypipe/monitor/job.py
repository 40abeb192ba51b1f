"""``run_monitor``: compare a window of logged traffic with the reference, alert on crossings."""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.config import PipelineConfig
from raypipe.errors import DataError
from raypipe.monitor.alerts import Alert, Delivery, post_webhook, slack_payload
from raypipe.monitor.checks import FeatureDrift, _performance, _prediction, _volume, check, compare
from raypipe.monitor.collect import Window, collect, list_files, log_columns, make_plan
from raypipe.monitor.reference import REFERENCE_FILE, ReferenceProfile

log = logging.getLogger("raypipe.monitor")


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


def load_reference(model_uri: str, tracking_uri: str | None = None) -> ReferenceProfile:
    """The reference profile stored with a model: a bundle folder, ``models:/name@alias`` or ``models:/name/3``.

    When the model version carries a sha256 tag for ``reference.json`` (as for the other bundle
    files), the downloaded file must match it.

    Raises:
        DataError: the model has no reference.json.
        RegistryError: the model is not in the registry, or reference.json fails verification.
    """
    if not model_uri.startswith("models:/"):
        return ReferenceProfile.load(model_uri)
    from raypipe.registry import load_file
    from raypipe.runtime import resolve_paths

    found = load_file(model_uri, tracking_uri or resolve_paths(create=False).tracking_uri, REFERENCE_FILE)
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
    work_dir: str | Path | None = None,
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
        tracking_uri, work_dir: where ``models:/`` URIs and the default log folder live (flag > config >
            environment > default, as for every command).
        send_alerts: POST alerts to ``monitor.webhook_url`` (when set).
        address: Ray cluster to join when Ray is not connected yet.

    Returns:
        The result; ``result.exit_code`` is non-zero when an alert fired.

    Raises:
        DataError: no reference, no input files, or unreadable input.
    """
    from raypipe import runtime

    mc = cfg.monitor
    paths = runtime.resolve_paths(cfg, work_dir=work_dir, tracking_uri=tracking_uri)
    work = paths.work_dir
    if isinstance(reference, ReferenceProfile):
        ref = reference
    elif reference is not None:
        ref = ReferenceProfile.load(reference)
    elif model_uri is not None:
        ref = load_reference(model_uri, paths.tracking_uri)
    else:
        raise DataError("monitor needs a reference: pass --reference reference.json or --model MODEL_URI")
    model = cfg.register.model_name or cfg.name
    root = input_path or mc.log_dir or str(paths.predictions)
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
