"""CLI commands for serving: ``raypipe serve`` (deploy, --reload, --emit-config) and ``raypipe predict``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from raypipe.cli import _fail, _serve_until_stopped, _shutdown_local, _state, app, out
from raypipe.errors import RaypipeError


@app.command("serve")
def serve_cmd(
    target: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION, a bundle folder, or a config")
    ],
    host: Annotated[str | None, typer.Option(help="Bind address (default serve.host: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default serve.port: 8000).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")] = None,
    emit_config: Annotated[Path | None, typer.Option(help="Write a `serve deploy` YAML for this app and exit.")] = None,
    ingress: Annotated[
        str | None, typer.Option(help="proxy (default serve.ingress), haproxy or direct; for a Ray started here.")
    ] = None,
    reload: Annotated[
        bool,
        typer.Option(
            "--reload",
            help="Roll the running app over to the version the alias points at now (zero downtime), then exit.",
        ),
    ] = False,
) -> None:
    """Serve a registered model over HTTP until Ctrl-C (or write its `serve deploy` config, or --reload it)."""
    import yaml

    from raypipe import runtime
    from raypipe.config import ServeConfig, load_config
    from raypipe.serve.deploy import deploy, deploy_config, serve_settings
    from raypipe.serve.deploy import reload as reload_app

    try:
        if target.endswith((".yaml", ".yml")):
            cfg = load_config(target)
            serve_cfg = serve_settings(cfg)
            uri = f"models:/{cfg.register.model_name or cfg.name}@{cfg.register.alias}"
            tracking = tracking_uri or cfg.runtime.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
            tracking = tracking or f"sqlite:///{runtime.work_dir(cfg) / 'mlflow.db'}"
        else:
            serve_cfg, uri = ServeConfig(log_dir=str(Path(".raypipe/predictions").resolve())), target
            tracking = (
                tracking_uri
                or os.environ.get("MLFLOW_TRACKING_URI")
                or f"sqlite:///{Path('.raypipe').resolve() / 'mlflow.db'}"
            )
        overrides = {k: v for k, v in {"host": host, "port": port, "ingress": ingress}.items() if v is not None}
        serve_cfg = ServeConfig.model_validate(serve_cfg.model_dump() | overrides)  # validated: a bad --ingress
        if emit_config:
            emit_config.write_text(yaml.safe_dump(deploy_config(uri, tracking, serve_cfg), sort_keys=False))
            out.print(f"wrote {emit_config}: `serve deploy {emit_config}` deploys {uri}")
            return
        if not reload:
            from raypipe.serve.ingress import use_ingress

            use_ingress(serve_cfg, address)
        runtime.connect(address, log_to_driver=_state["debug"])
        if reload:
            result = reload_app(uri, tracking, serve_cfg)
            _shutdown_local()
            what = f"now serves {result.model_uri}" if result.changed else f"already serves {result.model_uri}"
            out.print(f"app '{serve_cfg.app_name}' {what} (was {result.previous_uri})", highlight=False)
            return
        endpoint = deploy(uri, tracking, serve_cfg)
    except (RaypipeError, Exception) as e:  # noqa: BLE001 - one line for everything
        _shutdown_local()
        _fail(e)
        return
    _serve_until_stopped(
        f"Serving {uri} on {endpoint} (POST /predict, /v1/models/<name>:predict, /invocations) — Ctrl-C to stop."
    )
    _shutdown_local()


@app.command()
def predict(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")],
    input_path: Annotated[str, typer.Option("--input", help="Parquet file or folder to score.")],
    output: Annotated[Path, typer.Option("--output", help="New folder for the scored, partitioned Parquet.")],
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")] = None,
    actors: Annotated[int, typer.Option(help="Scoring actors in the pool.")] = 2,
    cpus_per_actor: Annotated[float, typer.Option(help="CPUs each actor reserves.")] = 0.5,
    partition_by: Annotated[
        list[str] | None, typer.Option("--partition-by", help="Output partition column (default: the input's).")
    ] = None,
) -> None:
    """Batch-score Parquet with a registered model on Ray Data (actor pool; same preprocessor as serving)."""
    from raypipe import runtime
    from raypipe.serve.batch import score_parquet

    try:
        tracking = (
            tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{Path('.raypipe').resolve() / 'mlflow.db'}"
        )
        runtime.connect(address, log_to_driver=_state["debug"])
        result = score_parquet(
            model_uri,
            tracking,
            input_path,
            str(output),
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            partition_cols=partition_by,
        )
    except (RaypipeError, Exception) as e:  # noqa: BLE001 - one line for everything
        _shutdown_local()
        _fail(e)
        return
    _shutdown_local()
    out.print(
        f"scored {result.rows:,} rows with {result.model_uri} in {result.seconds:.1f}s "
        f"({result.rows_per_s:,.0f} rows/s) -> {result.output}",
        highlight=False,
    )
