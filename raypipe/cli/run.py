"""``raypipe run``, ``raypipe tune`` and ``raypipe plan``: the pipeline, a search, and what a run would do."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from raypipe.cli._common import (
    AddressOption,
    SetOption,
    TrackingOption,
    WorkDirOption,
    app,
    fail,
    out,
    run_pipeline_command,
    serve_until_stopped,
    shutdown_local,
)

ConfigArg = Annotated[Path, typer.Argument(help="Pipeline YAML, e.g. jobs/flights.yaml")]
SummaryOption = Annotated[Path | None, typer.Option(help="Also write the result as JSON here.")]
FromOption = Annotated[
    str | None, typer.Option("--from", help="Recompute this stage and the ones after it (e.g. train).")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Recompute every stage.")]
WaitLockOption = Annotated[
    bool, typer.Option("--wait-lock", help="If another run is using the work folder, wait for it (default: fail).")
]


@app.command()
def run(
    config: ConfigArg,
    set_: SetOption = None,
    summary_json: SummaryOption = None,
    serve: Annotated[bool, typer.Option("--serve", help="Keep serving until Ctrl-C.")] = False,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Skip deploying to Ray Serve.")] = False,
    address: AddressOption = None,
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
    no_cache: NoCacheOption = False,
    from_stage: FromOption = None,
    preset: Annotated[
        str | None, typer.Option(help="best: a time-budgeted hyperparameter search (train.preset); default: none.")
    ] = None,
    wait_lock: WaitLockOption = False,
) -> None:
    """Run the pipeline: ingest, split, preprocess, train, evaluate, register, serve.

    Finished stages are cached: a rerun reuses every stage whose code, config and
    inputs did not change, and a killed run resumes from the last finished stage.
    """
    overrides = [*(set_ or []), *([f"train.preset={preset}"] if preset else [])]
    serve_model = False if no_serve else None
    result = run_pipeline_command(
        "run", config, overrides, address, tracking_uri, work_dir, serve_model, no_cache, from_stage, wait_lock
    )
    _print_result(result, keep_serving=serve)
    _write_json(summary_json, result)
    if serve and result.endpoint:
        serve_until_stopped(f"Serving on {result.endpoint} — Ctrl-C to stop.")
    shutdown_local()


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML with a tune: section (search_space or models)")],
    set_: SetOption = None,
    summary_json: SummaryOption = None,
    address: AddressOption = None,
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
    wait_lock: WaitLockOption = False,
) -> None:
    """Search hyperparameters with Ray Tune, refit the best, evaluate it on test and register it.

    Running the same config again resumes an interrupted search (finished trials are kept).
    """
    result = run_pipeline_command(
        "tune",
        config,
        [*(set_ or []), "tune.enabled=true"],
        address,
        tracking_uri,
        work_dir,
        False,
        False,
        None,
        wait_lock,
    )
    _print_result(result)
    t = result.tune or {}
    if t:
        out.print(
            f"[bold]best of {t['num_trials']} trials:[/] {t['best_model']} {escape(json.dumps(t['best_params']))} "
            f"({t['metric']}={t['best_score']:.4f}{', resumed' if t['resumed'] else ''}); "
            f"trials in {t['experiment_path']}",
            highlight=False,
            soft_wrap=True,
        )
    _write_json(summary_json, result)
    shutdown_local()


@app.command()
def plan(
    config: ConfigArg,
    set_: SetOption = None,
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Plan a run without serving.")] = False,
    no_cache: NoCacheOption = False,
    from_stage: FromOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="The plan as JSON.")] = False,
) -> None:
    """Say, for each stage, whether `raypipe run` would reuse its cached result or run it, and why.

    Starts no Ray and runs nothing: it reads file metadata, the config and the cache.
    """
    from raypipe.config import load_config
    from raypipe.pipeline.plan import plan_run

    try:
        cfg = load_config(config, set_ or [])
        result = plan_run(
            cfg,
            tracking_uri=tracking_uri,
            work_dir=str(work_dir) if work_dir else None,
            serve_model=False if no_serve else None,
            use_cache=not no_cache,
            rerun_from=from_stage,
        )
    except Exception as e:  # noqa: BLE001 - one line for everything
        fail(e)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    out.print(f"[bold]raypipe plan[/] {config} ({cfg.name})", highlight=False)
    for s in result.stages:
        style = {"cached": "cyan", "will run": "yellow"}.get(s.status, "dim")
        why = "; ".join(s.reasons)
        out.print(f"  [bold]{s.stage:<10}[/] [{style}]{s.status:<8}[/]  {escape(why)}", highlight=False, soft_wrap=True)


def _write_json(path: Path | None, result) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result.to_dict(), indent=2, default=str))


def _print_result(s, keep_serving: bool = False) -> None:
    t = Table(title="raypipe run summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("task", s.task)
    t.add_row("rows (train/valid/test)", f"{s.rows['train']:,} / {s.rows['valid']:,} / {s.rows['test']:,}")
    for k, v in s.metrics.items():
        t.add_row(k, f"{v:.4f}")
    if s.run_id:
        t.add_row("mlflow run", s.run_id)
        t.add_row("model", f"{s.model_name} v{s.model_version}")
        t.add_row("champion", f"{'yes' if s.champion else 'no'}: {s.gate_reason}")
    if s.endpoint:
        t.add_row("endpoint", f"{s.endpoint}/predict")
    t.add_row("wall time", f"{sum(s.stage_seconds.values()):.1f}s")
    out.print(t)
    for note in s.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if s.prediction:
        pred = {k: s.prediction[k] for k in ("prediction", "probabilities", "model_version") if k in s.prediction}
        out.print("[bold]HTTP prediction:[/] " + escape(json.dumps(pred)), highlight=False, soft_wrap=True)
    if s.endpoint and s.example:
        body = shlex.quote(json.dumps(s.example))
        out.print("[bold]Try it:[/]", highlight=False)
        out.print(
            escape(f"  curl -s -X POST {s.endpoint}/predict -H 'Content-Type: application/json' -d {body}"),
            highlight=False,
            soft_wrap=True,
        )
        from raypipe.runtime import owns_ray

        if not owns_ray():
            out.print("  (the app stays deployed on the cluster after this run; `serve shutdown` removes it)")
        elif not keep_serving:
            out.print("  (the endpoint lives while this process runs: use `raypipe run --serve` to keep it up)")
    if s.tracking_uri:
        out.print(
            f"[bold]MLflow UI:[/] mlflow ui --backend-store-uri {s.tracking_uri} --host 127.0.0.1 --port 5000",
            highlight=False,
            soft_wrap=True,
        )
