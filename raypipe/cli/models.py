"""Commands for people running models: ``promote``, ``rollback``, ``audit``, ``reproduce``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from raypipe.cli._common import (
    AddressOption,
    TrackingOption,
    WorkDirOption,
    app,
    err,
    fail,
    out,
    print_stage,
    shutdown_local,
)
from raypipe.runtime.paths import resolve_paths


@app.command()
def promote(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version to give the alias.")],
    alias: Annotated[str, typer.Option(help="The alias to move.")] = "champion",
    work_dir: WorkDirOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Point MODEL@ALIAS at VERSION (recorded in the audit log; `rollback` undoes it)."""
    from raypipe.registry.publish import promote as do_promote

    try:
        paths = resolve_paths(work_dir=work_dir, tracking_uri=tracking_uri)
        prev = do_promote(paths.tracking_uri, paths.work_dir, model, version, alias)
    except Exception as e:  # noqa: BLE001 - one line for everything
        fail(e)
    out.print(f"{model}@{alias}: v{prev or '-'} -> v{version}")


@app.command()
def rollback(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="The alias to move back.")] = "champion",
    work_dir: WorkDirOption = None,
    tracking_uri: TrackingOption = None,
) -> None:
    """Give MODEL@ALIAS back to the version that held it before."""
    from raypipe.registry.publish import rollback as do_rollback

    try:
        paths = resolve_paths(work_dir=work_dir, tracking_uri=tracking_uri)
        old, new = do_rollback(paths.tracking_uri, paths.work_dir, model, alias)
    except Exception as e:  # noqa: BLE001
        fail(e)
    out.print(f"{model}@{alias}: v{old} -> v{new}")


@app.command()
def audit(
    model: Annotated[str | None, typer.Option(help="Only events about this model.")] = None,
    since: Annotated[str | None, typer.Option(help="From: 2026-11-24, 2026-11-24T10:00, or 6h / 7d ago.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (same formats).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON Lines instead of a table.")] = False,
    work_dir: WorkDirOption = None,
) -> None:
    """Show the audit trail: runs, registrations, gate decisions and alias moves."""
    from raypipe.registry import audit as trail

    try:
        events = trail.read(
            resolve_paths(work_dir=work_dir, create=False).work_dir,
            model=model,
            since=trail.parse_when(since) if since else None,
            until=trail.parse_when(until) if until else None,
        )
    except Exception as e:  # noqa: BLE001
        fail(e)
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
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
    address: AddressOption = None,
) -> None:
    """Re-execute RUN_ID from its manifest (cache off, nothing registered) and compare test metrics.

    Exits 0 when every metric is within --tolerance, 1 when not.
    """
    from raypipe.pipeline.reproduce import reproduce as do_reproduce

    def warn(text: str) -> None:
        err.print(f"[bold yellow]WARNING:[/] {escape(text)}", highlight=False, soft_wrap=True)

    try:
        res = do_reproduce(
            run_id,
            tracking_uri=tracking_uri,
            work_dir=str(work_dir) if work_dir else None,
            address=address,
            tolerance=tolerance,
            report=print_stage,
            warn=warn,
        )
    except Exception as e:  # noqa: BLE001
        shutdown_local()
        fail(e)
    shutdown_local()
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
