"""The ``raypipe`` command line. Errors become one line and an exit code;
``--debug`` shows the traceback."""

from __future__ import annotations

import json
import logging
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from raypipe.errors import RaypipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Partitioned Parquet to a served model, on Ray.")

out = Console()
err = Console(stderr=True)

_state = {"debug": False}


def _fail(e: BaseException) -> None:
    if _state["debug"]:
        err.print_exception(show_locals=False)
    if isinstance(e, RaypipeError):
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        raise typer.Exit(e.exit_code)
    err.print(
        f"[bold red]error:[/] unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
        "(rerun with --debug for the traceback)",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and Ray's worker logs.")] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        warnings.filterwarnings("ignore", module=r"mlflow\..*")
        warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*dataset source can be interpreted.*")
        for noisy in ("ray", "mlflow", "alembic", "urllib3", "filelock"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")


def _print_stage(name: str, seconds: float, detail: str) -> None:
    mark = "[cyan]↺[/]" if detail.startswith("cached") else "[green]✓[/]"
    out.print(f"{mark} [bold]{name:<10}[/] {seconds:7.1f}s  {escape(detail)}", highlight=False, soft_wrap=True)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML, e.g. jobs/flights.yaml")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a value: section.key=value")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary as JSON here.")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="Keep serving until Ctrl-C.")] = False,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Skip deploying to Ray Serve.")] = False,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute every stage.")] = False,
    from_stage: Annotated[
        str | None, typer.Option("--from", help="Recompute this stage and the ones after it (e.g. train).")
    ] = None,
) -> None:
    """Run the pipeline: ingest, split, preprocess, train, evaluate, register, serve.

    Finished stages are cached: a rerun reuses every stage whose code, config and
    inputs did not change, and a killed run resumes from the last finished stage.
    """
    from raypipe.config import load_config

    try:
        cfg = load_config(config, set_ or [])
        from raypipe.pipeline import run_pipeline

        out.print(f"[bold]raypipe run[/] {config} ({cfg.name})", highlight=False)
        summary = run_pipeline(
            cfg,
            config_text=config.read_text(),
            address=address,
            tracking_uri=tracking_uri,
            serve_model=False if no_serve else None,
            report=_print_stage,
            verbose=_state["debug"],
            use_cache=not no_cache,
            rerun_from=from_stage,
        )
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (_on_sigterm); Typer would exit silently
        _shutdown_local()
        finished = getattr(e, "raypipe_finished_stages", [])
        what, code = _interrupt_exit()
        done = f"{', '.join(finished)} finished and cached" if finished else "no stage finished"
        err.print(f"{what}: {done}; resume with: raypipe run {shlex.quote(str(config))}")
        raise typer.Exit(code) from None
    except (RaypipeError, Exception) as e:  # noqa: BLE001 - one line for everything
        _shutdown_local()
        from raypipe.errors import ConfigError, DataError

        # Input errors need a fix first; after any other failure the same command resumes.
        finished = getattr(e, "raypipe_finished_stages", [])
        if finished and not isinstance(e, (ConfigError, DataError)):
            err.print(f"[dim]{', '.join(finished)} cached; resume with: raypipe run {shlex.quote(str(config))}[/]")
        _fail(e)
        return
    _print_summary(summary, keep_serving=serve)
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    if serve and summary.endpoint:
        _serve_until_stopped(f"Serving on {summary.endpoint} — Ctrl-C to stop.")
    _shutdown_local()


@app.command()
def tune(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML with a tune: section (search_space or models)")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a value: section.key=value")] = None,
    summary_json: Annotated[Path | None, typer.Option(help="Also write the summary (with the search) as JSON.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
) -> None:
    """Search hyperparameters with Ray Tune, refit the best, evaluate it on test and register it.

    Running the same config again resumes an interrupted search (finished trials are kept).
    """
    from raypipe.config import load_config

    try:
        cfg = load_config(config, [*(set_ or []), "tune.enabled=true"])
        from raypipe.pipeline import run_pipeline

        out.print(f"[bold]raypipe tune[/] {config} ({cfg.name})", highlight=False)
        summary = run_pipeline(
            cfg,
            config_text=config.read_text(),
            address=address,
            tracking_uri=tracking_uri,
            serve_model=False,
            report=_print_stage,
            verbose=_state["debug"],
        )
    except (RaypipeError, Exception) as e:  # noqa: BLE001 - one line for everything
        _shutdown_local()
        _fail(e)
        return
    _print_summary(summary)
    t = summary.tune or {}
    if t:
        out.print(
            f"[bold]best of {t['num_trials']} trials:[/] {t['best_model']} {escape(json.dumps(t['best_params']))} "
            f"({t['metric']}={t['best_score']:.4f}{', resumed' if t['resumed'] else ''}); "
            f"trials in {t['experiment_path']}",
            highlight=False,
            soft_wrap=True,
        )
    if summary_json:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    _shutdown_local()


def _serve_until_stopped(message: str) -> None:
    """Block until Ctrl-C or SIGTERM, then stop a Ray this process started."""
    out.print(message)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


def _shutdown_local() -> None:
    """Stop Serve and Ray if this process started them; a cluster keeps its app."""
    import ray

    from raypipe.runtime import owns_ray

    # Joined by RAY_ADDRESS, --address or runtime.address (a Ray Job too): Serve stays up.
    if not owns_ray():
        return
    # ray.shutdown() takes the Serve app with it; serve.shutdown() first only adds
    # raylet noise about the controller it kills.
    ray.shutdown()
    from raypipe.serve.ingress import stop_haproxy

    stop_haproxy()  # HAProxy mode: Ray leaves its haproxy running


def _print_summary(s, keep_serving: bool = False) -> None:
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


@app.command()
def submit(
    config: Annotated[str, typer.Argument(help="Pipeline YAML inside the working dir, e.g. jobs/flights.yaml")],
    address: Annotated[
        str | None,
        typer.Option(help="Jobs API (dashboard) URL; default RAY_API_SERVER_ADDRESS or http://127.0.0.1:8265."),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a value: section.key=value")] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI for the job (it runs in a temporary copy of the dir).")
    ] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Skip deploying to Ray Serve.")] = False,
    runtime_env: Annotated[
        Path | None, typer.Option(help="runtime_env template; default jobs/runtime_env.yaml in the working dir.")
    ] = None,
    working_dir: Annotated[Path, typer.Option(help="Folder uploaded as the job's working dir.")] = Path("."),
    pip: Annotated[
        bool, typer.Option("--pip/--no-pip", help="Install the template's pinned pip deps (skip if nodes have them).")
    ] = True,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="NAME (copied from this shell) or NAME=VALUE, set in the job's environment."),
    ] = None,
    submission_id: Annotated[str | None, typer.Option(help="Job submission id (default: Ray picks one).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Stream the logs until the job ends.")] = True,
    timeout: Annotated[
        float | None, typer.Option(help="Stop following after this many seconds (the job keeps running).")
    ] = None,
) -> None:
    """Run CONFIG on a Ray cluster as a Ray Job; stream its logs and exit with its status.

    Token auth: the token is read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token,
    and RAY_AUTH_MODE=token is set for you when a token exists and RAY_AUTH_MODE is unset.
    """
    from raypipe.submit import submit as submit_job

    def echo(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        env_vars = {}
        for item in env or []:
            name, sep, value = item.partition("=")
            if not sep:
                if name not in os.environ:
                    raise RaypipeError(f"--env {name}: {name} is not set in this shell")
                value = os.environ[name]
            env_vars[name] = value
        result = submit_job(
            config,
            address=address,
            overrides=set_ or [],
            runtime_env_file=runtime_env,
            working_dir=working_dir,
            pip=pip,
            env_vars=env_vars,
            tracking_uri=tracking_uri,
            no_serve=no_serve,
            debug=_state["debug"],
            submission_id=submission_id,
            wait=wait,
            timeout_s=timeout,
            echo=echo,
        )
    except (RaypipeError, Exception) as e:  # noqa: BLE001 - one line for everything
        _fail(e)
        return
    raise typer.Exit(result.exit_code)


# Serving and model-management commands live in their own modules; importing them registers them.
from raypipe import cli_data, cli_models, cli_serve  # noqa: E402, F401


def _on_sigterm(signum, frame) -> None:
    # Without a handler SIGTERM (`ray job stop`, a pod being deleted) ends the process on the spot:
    # the MLflow run stays RUNNING forever and the audit trail never hears of it. Raised in the main
    # thread, it takes Ctrl-C's path (libraries such as Ray Train re-raise their own interrupt, so
    # which signal it was is remembered here).
    _state["terminated"] = True
    raise KeyboardInterrupt("SIGTERM")


def _interrupt_exit() -> tuple[str, int]:
    return ("terminated", 143) if _state.get("terminated") else ("interrupted", 130)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app()
    except KeyboardInterrupt:
        what, code = _interrupt_exit()
        err.print(f"{what}: finished stages are cached, so the same command resumes")
        sys.exit(code)


if __name__ == "__main__":
    main()
