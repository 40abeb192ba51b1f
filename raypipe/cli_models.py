"""CLI commands for people running models: promote, rollback, audit, reproduce, monitor."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from raypipe.cli import _fail, _print_stage, _shutdown_local, app, err, out
from raypipe.errors import RaypipeError

_WORK = Annotated[Path, typer.Option("--work-dir", help="raypipe work dir (audit log, default MLflow store).")]
_TRACKING = Annotated[str | None, typer.Option(help="MLflow tracking URI (default: the work dir's SQLite store).")]


def _tracking(work_dir: Path, tracking_uri: str | None) -> str:
    import mlflow

    from raypipe.registry import default_tracking_uri

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(work_dir.resolve())
    mlflow.set_tracking_uri(uri)
    return uri


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to give the alias.")],
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    work_dir: _WORK = Path(".raypipe"),
    tracking_uri: _TRACKING = None,
) -> None:
    """Point MODEL@ALIAS at VERSION (recorded in the audit log; `rollback` undoes it)."""
    from raypipe.publish import promote as do_promote

    try:
        _tracking(work_dir, tracking_uri)
        prev = do_promote(work_dir, model, version, alias)
    except Exception as e:  # noqa: BLE001 - one line for everything
        _fail(e)
        return
    out.print(f"{model}@{alias}: v{prev or '-'} -> v{version}")


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="The alias to move back.")] = "champion",
    work_dir: _WORK = Path(".raypipe"),
    tracking_uri: _TRACKING = None,
) -> None:
    """Give MODEL@ALIAS back to the version that held it before."""
    from raypipe.publish import rollback as do_rollback

    try:
        _tracking(work_dir, tracking_uri)
        old, new = do_rollback(work_dir, model, alias)
    except Exception as e:  # noqa: BLE001
        _fail(e)
        return
    out.print(f"{model}@{alias}: v{old} -> v{new}")


@app.command()
def audit(
    model: Annotated[str | None, typer.Option(help="Only events about this model.")] = None,
    since: Annotated[str | None, typer.Option(help="From: 2026-11-24, 2026-11-24T10:00, or 6h / 7d ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (same formats).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table.")] = False,
    work_dir: _WORK = Path(".raypipe"),
) -> None:
    """Show the audit trail: runs, registrations, gate decisions and alias moves."""
    from raypipe import audit as trail

    try:
        events = trail.read(
            work_dir,
            model=model,
            since=trail.parse_when(since) if since else None,
            until=trail.parse_when(until) if until else None,
        )
    except Exception as e:  # noqa: BLE001
        _fail(e)
        return
    if as_json:
        for e in events:
            out.print(json.dumps(e, default=str), highlight=False, soft_wrap=True)
        return
    t = Table(title=f"audit trail ({len(events)} events)", title_justify="left")
    for c in ("when (UTC)", "event", "who", "model", "detail"):
        t.add_column(c)
    for e in events:
        model_ref = f"{e.get('model', '')} v{e['version']}" if e.get("version") else e.get("model", "")
        detail = e.get("reason") or e.get("error") or e.get("config_hash") or ""
        if e["event"] == "alias_move":
            detail = f"{e.get('alias')}: v{e.get('previous') or '-'} -> v{e.get('version')} ({e.get('reason')})"
        t.add_row(str(e.get("ts", ""))[:19], e["event"], f"{e.get('user')}@{e.get('host')}", model_ref, escape(detail))
    out.print(t)


@app.command()
def reproduce(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a finished raypipe run.")],
    tolerance: Annotated[float, typer.Option(help="Largest accepted |metric difference|.")] = 1e-3,
    tracking_uri: _TRACKING = None,
    work_dir: _WORK = Path(".raypipe"),
    address: Annotated[str | None, typer.Option(help="Ray cluster address.")] = None,
) -> None:
    """Re-execute RUN_ID from its manifest (cache off, nothing registered) and compare test metrics.

    Exits 0 when every metric is within --tolerance, 1 when not.
    """
    from raypipe.reproduce import reproduce as do_reproduce

    def warn(text: str) -> None:
        err.print(f"[bold yellow]WARNING:[/] {escape(text)}", highlight=False, soft_wrap=True)

    try:
        res = do_reproduce(
            run_id,
            tracking_uri=_tracking(work_dir, tracking_uri),
            address=address,
            tolerance=tolerance,
            report=_print_stage,
            warn=warn,
        )
    except Exception as e:  # noqa: BLE001
        _shutdown_local()
        _fail(e)
        return
    _shutdown_local()
    if not res.changes:
        out.print("code, packages and data are unchanged since the run")
    t = Table(title=f"reproduce {run_id}", title_justify="left")
    for c in ("metric", "original", "reproduced", "difference"):
        t.add_column(c)
    for k, v in res.original.items():
        if k in res.reproduced:
            t.add_row(k, f"{v:.6f}", f"{res.reproduced[k]:.6f}", f"{res.deltas[k]:+.2e}")
    out.print(t)
    verdict = "within" if res.within_tolerance else "OUTSIDE"
    out.print(f"metrics {verdict} tolerance {tolerance:g}")
    if not res.within_tolerance:
        raise typer.Exit(1)


@app.command("monitor")
def monitor_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML (its monitor: section: thresholds, webhook).")],
    model: Annotated[
        str | None, typer.Option(help="Model whose reference.json is used: models:/NAME@ALIAS or a bundle folder.")
    ] = None,
    reference: Annotated[Path | None, typer.Option(help="A reference.json instead of --model.")] = None,
    input_: Annotated[
        str | None, typer.Option("--input", help="Prediction-log folder (default monitor.log_dir).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Window start: ISO time or an age like 24h, 7d.")] = None,
    until: Annotated[str | None, typer.Option(help="Window end (exclusive); default now.")] = None,
    labels: Annotated[str | None, typer.Option(help="Parquet of request_id, row, label: live performance.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Report folder (default monitor.out_dir).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a value: section.key=value")] = None,
    no_alert: Annotated[bool, typer.Option("--no-alert", help="Do not POST to the webhook.")] = False,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI (for models:/ URIs).")] = None,
) -> None:
    """Check a window of prediction logs for drift and live performance; exit monitor.alert_exit_code (8) on alerts."""
    from raypipe.config import load_config
    from raypipe.monitor.collect import parse_time
    from raypipe.monitor.job import run_monitor

    try:
        cfg = load_config(config, set_ or [])
        if (model is None) == (reference is None):
            raise RaypipeError("pass exactly one of --model MODEL_URI and --reference reference.json")
        start, end = parse_time(since), parse_time(until)
        uri = tracking_uri or cfg.runtime.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        window = dict(input_path=input_, since=start, until=end, labels=labels, out_dir=out_dir)
        loop = None
        if cfg.monitor.retrain.enabled and model:
            from raypipe.monitor.loop import monitor_and_retrain
            from raypipe.runtime import connect

            connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=False)
            loop = monitor_and_retrain(
                cfg, model_uri=model, tracking_uri=uri, report=_print_stage, send_alerts=not no_alert, **window
            )
            result = loop.monitor
        else:
            result = run_monitor(
                cfg,
                reference=reference,
                model_uri=model,
                tracking_uri=uri,
                send_alerts=not no_alert,
                address=address,
                **window,
            )
    except (RaypipeError, Exception) as e:  # noqa: BLE001 - one line for everything
        _shutdown_local()
        _fail(e)
        return
    _shutdown_local()
    out.print(f"monitor {result.model}: {result.rows:,} rows, {len(result.alerts)} alert(s)", highlight=False)
    for a in result.alerts:
        out.print(f"[bold red]ALERT[/] {escape(a.describe())}", highlight=False, soft_wrap=True)
    if result.delivery is not None and not result.delivery.delivered:
        out.print(f"[yellow]webhook not delivered:[/] {escape(result.delivery.error or '')}", highlight=False)
    out.print(f"report: {result.report_html}\njson:   {result.report_json}", highlight=False, soft_wrap=True)
    if loop is not None:
        out.print(f"closed loop: {escape(loop.note)}", highlight=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)
