"""``raypipe submit``: run a pipeline config on a Ray cluster as a Ray Job."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from raypipe.cli._common import app, fail, state
from raypipe.errors import RaypipeError


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
    ci: Annotated[
        bool,
        typer.Option("--ci", help="Run `raypipe ci` (no serving; exit 1 when the gate keeps the champion)."),
    ] = False,
) -> None:
    """Run CONFIG on a Ray cluster as a Ray Job; stream its logs and exit with its status.

    Token auth: the token is read from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token,
    and RAY_AUTH_MODE=token is set for you when a token exists and RAY_AUTH_MODE is unset.
    """
    from raypipe.runtime.submit import submit as submit_job

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
            debug=state["debug"],
            submission_id=submission_id,
            wait=wait,
            timeout_s=timeout,
            echo=echo,
            command="ci" if ci else "run",
        )
    except Exception as e:  # noqa: BLE001 - one line for everything
        fail(e)
    raise typer.Exit(result.exit_code)
