"""``raypipe serve`` (deploy, ``--reload``, ``--emit-config``) and ``raypipe predict`` (batch scoring)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raypipe.cli._common import (
    AddressOption,
    TrackingOption,
    WorkDirOption,
    app,
    fail,
    out,
    serve_until_stopped,
    shutdown_local,
    state,
)


@app.command("serve")
def serve_cmd(
    target: Annotated[
        str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION, a bundle folder, or a config")
    ],
    host: Annotated[str | None, typer.Option(help="Bind address (default serve.host: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default serve.port: 8000).")] = None,
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
    address: AddressOption = None,
    emit_config: Annotated[Path | None, typer.Option(help="Write a `serve deploy` YAML for this app and exit.")] = None,
    ingress: Annotated[
        str | None, typer.Option(help="auto (default serve.ingress), haproxy, proxy or direct; for a Ray started here.")
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
    from raypipe.errors import ServingError
    from raypipe.serve.deploy import deploy, deploy_config, pin_model_uri, serve_settings
    from raypipe.serve.deploy import reload as reload_app

    try:
        cfg = load_config(target) if target.endswith((".yaml", ".yml")) else None
        paths = runtime.resolve_paths(cfg, work_dir=work_dir, tracking_uri=tracking_uri)
        if cfg is not None:
            serve_cfg, uri = (
                serve_settings(cfg, paths),
                f"models:/{cfg.register.model_name or cfg.name}@{cfg.register.alias}",
            )
        else:
            serve_cfg, uri = ServeConfig(log_dir=str(paths.predictions)), target
        overrides = {k: v for k, v in {"host": host, "port": port, "ingress": ingress}.items() if v is not None}
        serve_cfg = ServeConfig.model_validate(serve_cfg.model_dump() | overrides)  # validated: a bad --ingress
        if emit_config:
            emit_config.write_text(yaml.safe_dump(deploy_config(uri, paths.tracking_uri, serve_cfg), sort_keys=False))
            out.print(f"wrote {emit_config}: `serve deploy {emit_config}` deploys {uri}")
            return
        # A missing model, alias or folder fails before Ray starts.
        pinned = pin_model_uri(uri, paths.tracking_uri)
        if not pinned.startswith("models:/") and not Path(pinned, "bundle.json").is_file():
            raise ServingError(f"'{pinned}' is neither a models:/ URI nor a model bundle folder (no bundle.json)")
        if not reload:
            from raypipe.serve.ingress import use_ingress

            use_ingress(serve_cfg, address)
        session = runtime.connect(address, log_to_driver=state["debug"])
        if reload:
            result = reload_app(uri, paths.tracking_uri, serve_cfg)
            shutdown_local()
            what = f"now serves {result.model_uri}" if result.changed else f"already serves {result.model_uri}"
            out.print(f"app '{serve_cfg.app_name}' {what} (was {result.previous_uri})", highlight=False)
            return
        endpoint = deploy(uri, paths.tracking_uri, serve_cfg)
    except Exception as e:  # noqa: BLE001 - one line for everything
        shutdown_local()
        fail(e)
    gcs = session.address or _gcs_address()
    out.print(
        f"Roll it to a new {uri.rpartition('@')[2] or 'version'} with: raypipe serve {target} --reload --address {gcs}"
    )
    serve_until_stopped(
        f"Serving {pinned} on {endpoint} (POST /predict, /explain, /v1/models/<name>:predict, /invocations) "
        "— Ctrl-C to stop."
    )
    shutdown_local()


@app.command()
def predict(
    model_uri: Annotated[str, typer.Argument(help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")],
    input_path: Annotated[
        str,
        typer.Option(
            "--input",
            help="Parquet file or folder, a SQL URL (with --input-table/--input-query) or "
            "iceberg:NS.TABLE (with --catalog).",
        ),
    ],  # fmt: skip
    output: Annotated[
        Path | None, typer.Option("--output", help="New folder for the scored, partitioned Parquet.")
    ] = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Also write the scores to a SQL URL (with --to-table) or iceberg:NS.TABLE."),
    ] = None,
    input_table: Annotated[str | None, typer.Option(help="The table of a SQL --input.")] = None,
    input_query: Annotated[str | None, typer.Option(help="The query of a SQL --input.")] = None,
    to_table: Annotated[str | None, typer.Option(help="The table a SQL --to writes (created if missing).")] = None,
    catalog: Annotated[
        list[str] | None, typer.Option("--catalog", help="An Iceberg catalog property KEY=VALUE (repeat).")
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Run id on every scored row; scoring again with it replaces its rows.")
    ] = None,
    tracking_uri: TrackingOption = None,
    work_dir: WorkDirOption = None,
    address: AddressOption = None,
    actors: Annotated[int, typer.Option(help="Scoring actors in the pool.")] = 2,
    cpus_per_actor: Annotated[float, typer.Option(help="CPUs each actor reserves.")] = 0.5,
    partition_by: Annotated[
        list[str] | None, typer.Option("--partition-by", help="Output partition column (default: the input's).")
    ] = None,
    out_of_range: Annotated[
        str | None,
        typer.Option(
            "--out-of-range",
            help="Values outside the training range: flag (score, name the field in 'warnings') or reject "
            "(null prediction). Default: serve.out_of_range's.",
        ),
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain", help="Add contribution__<field> columns: each raw field's share of the margin (XGBoost)."
        ),
    ] = False,
) -> None:
    """Batch-score Parquet, a SQL table/query or an Iceberg table with a registered model on Ray Data
    (actor pool; same preprocessor as serving), into Parquet and/or a SQL or Iceberg table."""
    from raypipe import runtime
    from raypipe.config import ServeConfig
    from raypipe.config.sources import redact_url
    from raypipe.errors import ConfigError
    from raypipe.serve.warehouse import location
    from raypipe.serve.warehouse import predict as predict_to

    try:
        if output is None and to is None:
            raise ConfigError("pass --output FOLDER, --to URL|iceberg:NS.TABLE, or both")
        props = dict(kv.split("=", 1) for kv in catalog or [] if "=" in kv)
        source = location(input_path, table=input_table, query=input_query, catalog=props)
        sink = location(to, table=to_table, catalog=props) if to else None
        if isinstance(sink, str):
            raise ConfigError(f"--to '{to}' is not a SQL URL or iceberg:NS.TABLE; use --output for Parquet")
        tracking = runtime.resolve_paths(work_dir=work_dir, tracking_uri=tracking_uri).tracking_uri
        # Validated (and defaulted) by the config model, as serve.out_of_range is.
        policy = ServeConfig.model_validate({"out_of_range": out_of_range} if out_of_range else {}).out_of_range
        result = predict_to(
            model_uri,
            tracking,
            source,
            output_dir=str(output) if output else None,
            sink=sink,
            run_id=run_id,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            partition_cols=partition_by,
            address=address,
            out_of_range=policy,
            explain=explain,
        )
    except Exception as e:  # noqa: BLE001 - one line for everything
        shutdown_local()
        fail(e)
    shutdown_local()
    where = [w for w in (result.output, redact_url(to) + (f" ({to_table})" if to_table else "") if to else None) if w]
    out.print(
        f"scored {result.rows:,} rows with {result.model_uri} in {result.seconds:.1f}s "
        f"({result.rows_per_s:,.0f} rows/s), run id {result.run_id} -> {', '.join(where)}",
        highlight=False,
    )


def _gcs_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address
