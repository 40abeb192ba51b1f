"""``raypipe monitor``: drift, data quality and live performance over a window of prediction logs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from raypipe.cli._common import (
    AddressOption,
    SetOption,
    TrackingOption,
    WorkDirOption,
    app,
    fail,
    out,
    print_stage,
    shutdown_local,
)
from raypipe.errors import ConfigError


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
    set_: SetOption = None,
    no_alert: Annotated[bool, typer.Option("--no-alert", help="Do not POST to the webhook.")] = False,
    address: AddressOption = None,
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
) -> None:
    """Check a window of prediction logs for drift and live performance; exit monitor.alert_exit_code (8) on alerts."""
    from raypipe.config import load_config
    from raypipe.monitor.collect import parse_time
    from raypipe.monitor.job import run_monitor

    try:
        cfg = load_config(config, set_ or [])
        if (model is None) == (reference is None):
            raise ConfigError("pass exactly one of --model MODEL_URI and --reference reference.json")
        where = {"tracking_uri": tracking_uri, "work_dir": str(work_dir) if work_dir else None}
        window = dict(
            input_path=input_, since=parse_time(since), until=parse_time(until), labels=labels, out_dir=out_dir
        )
        loop = None
        if cfg.monitor.retrain.enabled and model:
            from raypipe.pipeline.retrain import monitor_and_retrain
            from raypipe.runtime import connect

            connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=False)
            loop = monitor_and_retrain(
                cfg, model_uri=model, **where, report=print_stage, send_alerts=not no_alert, **window
            )
            result = loop.monitor
        else:
            result = run_monitor(
                cfg, reference=reference, model_uri=model, **where, send_alerts=not no_alert, address=address, **window
            )
    except Exception as e:  # noqa: BLE001 - one line for everything
        shutdown_local()
        fail(e)
    shutdown_local()
    out.print(f"monitor {result.model}: {result.rows:,} rows, {len(result.alerts)} alert(s)", highlight=False)
    for a in result.alerts:
        out.print(f"[bold red]ALERT[/] {escape(a.describe())}", highlight=False, soft_wrap=True)
    if result.delivery is not None and not result.delivery.delivered:
        out.print(f"[yellow]webhook not delivered:[/] {escape(result.delivery.error or '')}", highlight=False)
    out.print(f"report: {result.report_html}\njson:   {result.report_json}", highlight=False, soft_wrap=True)
    if loop is not None:
        out.print(f"closed loop: {escape(loop.note)}", highlight=False, soft_wrap=True)
    raise typer.Exit(result.exit_code)
