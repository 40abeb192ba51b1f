"""What every command shares: the Typer app, the consoles, one-line errors, progress lines,
stopping a Ray this process started, the options that name the work folder and store, and
running the pipeline as a command (``run``, ``tune``, ``ci``)."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
import warnings
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from raypipe.errors import ConfigError, DataError, RaypipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Partitioned Parquet to a served model, on Ray.")
out = Console()
err = Console(stderr=True)
state = {"debug": False, "terminated": False}

SetOption = Annotated[list[str] | None, typer.Option("--set", help="Override a value: section.key=value")]
WorkDirOption = Annotated[
    Path | None, typer.Option("--work-dir", help="raypipe work folder (default: config, RAYPIPE_HOME or .raypipe).")
]
TrackingOption = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI (default: config, MLFLOW_TRACKING_URI or the work folder's SQLite)."),
]
AddressOption = Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")]


def fail(e: BaseException) -> NoReturn:
    """Print ``e`` as one line (the traceback with ``--debug``) and exit with its code."""
    if state["debug"]:
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
    state["debug"] = debug
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        warnings.filterwarnings("ignore", module=r"mlflow\..*")
        warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        warnings.filterwarnings("ignore", category=UserWarning, message=".*dataset source can be interpreted.*")
        for noisy in ("ray", "mlflow", "alembic", "urllib3", "filelock"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("RAY_TRAIN_ENABLE_STATE_TRACKING", "0")


def print_stage(name: str, seconds: float, detail: str) -> None:
    mark = "[cyan]↺[/]" if detail.startswith("cached") else "[green]✓[/]"
    out.print(f"{mark} [bold]{name:<10}[/] {seconds:7.1f}s  {escape(detail)}", highlight=False, soft_wrap=True)


def serve_until_stopped(message: str) -> None:
    """Block until Ctrl-C or SIGTERM."""
    out.print(message)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


def shutdown_local() -> None:
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


def on_sigterm(signum, frame) -> None:
    # Without a handler SIGTERM (`ray job stop`, a pod being deleted) ends the process on the spot:
    # the MLflow run stays RUNNING forever and the audit trail never hears of it. Raised in the main
    # thread, it takes Ctrl-C's path (libraries such as Ray Train re-raise their own interrupt, so
    # which signal it was is remembered here).
    state["terminated"] = True
    raise KeyboardInterrupt("SIGTERM")


def interrupt_exit() -> tuple[str, int]:
    return ("terminated", 143) if state["terminated"] else ("interrupted", 130)


def run_pipeline_command(
    command, config, overrides, address, tracking_uri, work_dir, serve_model, no_cache, from_stage, wait_lock
):
    """Load the config and run the pipeline (``run``, ``tune``, ``ci``); every failure ends as one
    line and its exit code."""
    from raypipe.config import load_config

    try:
        cfg = load_config(config, overrides)
        from raypipe.pipeline.run import run_pipeline

        out.print(f"[bold]raypipe {command}[/] {config} ({cfg.name})", highlight=False)
        return run_pipeline(
            cfg,
            config_text=config.read_text(),
            address=address,
            tracking_uri=tracking_uri,
            work_dir=str(work_dir) if work_dir else None,
            serve_model=serve_model,
            report=print_stage,
            verbose=state["debug"],
            use_cache=not no_cache,
            rerun_from=from_stage,
            wait_lock=wait_lock,
        )
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (on_sigterm); Typer would exit silently
        shutdown_local()
        finished = getattr(e, "raypipe_finished_stages", [])
        what, code = interrupt_exit()
        done = f"{', '.join(finished)} finished and cached" if finished else "no stage finished"
        err.print(f"{what}: {done}; resume with: raypipe {command} {shlex.quote(str(config))}")
        raise typer.Exit(code) from None
    except Exception as e:  # noqa: BLE001 - one line for everything
        shutdown_local()
        # Input errors need a fix first; after any other failure the same command resumes.
        finished = getattr(e, "raypipe_finished_stages", [])
        if finished and not isinstance(e, (ConfigError, DataError)):
            err.print(
                f"[dim]{', '.join(finished)} cached; resume with: raypipe {command} {shlex.quote(str(config))}[/]"
            )
        fail(e)
