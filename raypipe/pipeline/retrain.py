"""The closed loop: monitor -> (alert) retrain on a new window -> gate -> alias -> Serve reload.

Each step is the ordinary one (``run_monitor``, ``run_pipeline`` with its promotion
gate, ``serve.deploy.reload``), so the loop adds no second way to promote a model.
A retrained version that fails the gate leaves the champion and the served app alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from raypipe.config import PipelineConfig
from raypipe.monitor.job import MonitorResult, run_monitor
from raypipe.pipeline.run import run_pipeline
from raypipe.registry import audit
from raypipe.runtime import resolve_paths

log = logging.getLogger(__name__)


@dataclass
class LoopResult:
    monitor: MonitorResult
    retrained: Any = None
    """The retraining run's RunResult, when an alert triggered one."""
    reloaded: Any = None
    """serve.deploy.ReloadResult when the new champion was rolled out."""
    note: str = ""


def monitor_and_retrain(
    cfg: PipelineConfig,
    *,
    model_uri: str,
    tracking_uri: str | None = None,
    work_dir: str | None = None,
    report=None,
    **window,
) -> LoopResult:
    """Run the monitor; on an alert with ``monitor.retrain.enabled``, retrain, gate and reload.

    Args:
        cfg: the pipeline config (``monitor:`` thresholds, ``monitor.retrain`` window, ``register`` gate).
        model_uri: the served model (``models:/name@champion``) whose reference profile is used.
        tracking_uri, work_dir: the MLflow store holding the alias and the work folder (default: as
            every command resolves them).
        report: progress callback for the retraining run's stages.
        window: ``input_path``, ``since``, ``until``, ``labels``, ``out_dir``, ``send_alerts`` for ``run_monitor``.
    """
    paths = resolve_paths(cfg, work_dir=work_dir, tracking_uri=tracking_uri)
    tracking_uri, work = paths.tracking_uri, paths.work_dir
    result = run_monitor(cfg, model_uri=model_uri, tracking_uri=tracking_uri, work_dir=work, **window)
    if not result.alerts or not cfg.monitor.retrain.enabled:
        return LoopResult(result, note="no alert" if not result.alerts else "alerts; monitor.retrain is off")
    rt = cfg.monitor.retrain
    data = cfg.data.model_copy(
        update={"path": rt.data_path or cfg.data.path, "filter": rt.data_filter or cfg.data.filter}
    )
    new_cfg = cfg.model_copy(update={"data": data})
    audit.record(work, "retrain", model=result.model, reason="; ".join(a.describe() for a in result.alerts)[:500])
    summary = run_pipeline(new_cfg, tracking_uri=tracking_uri, work_dir=str(work), serve_model=False, report=report)
    out = LoopResult(result, retrained=summary)
    if not summary.champion:
        out.note = f"retrained v{summary.model_version} did not pass the gate: {summary.gate_reason}"
        return out
    from raypipe.errors import ServingError
    from raypipe.serve.deploy import reload, serve_settings

    try:
        out.reloaded = reload(summary.model_name, tracking_uri, serve_settings(cfg, paths), alias=cfg.register.alias)
        out.note = f"v{summary.model_version} is champion and served"
    except ServingError as e:  # nothing deployed on this Ray: the next deploy picks the champion up
        out.note = f"v{summary.model_version} is champion; no running app reloaded ({e})"
    audit.record(work, "reload", model=summary.model_name, version=summary.model_version, reason=out.note)
    return out
