"""``raypipe predict`` with a SQL or Iceberg table on either end.

The input is read once (its pinned version) into Parquet and scored by
:func:`raypipe.serve.batch.score_parquet` (the same actors, the same preprocessor as serving);
the scored rows, tagged with the model version and a run id, then replace that run id's rows
in the sink (:mod:`raypipe.data.sources.sink`).
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from raypipe.config.sources import IcebergSource, SqlSource

Location = str | SqlSource | IcebergSource
"""A Parquet path, a SQL query/table or an Iceberg table."""


@dataclass(frozen=True)
class PredictResult:
    model_uri: str
    model_version: str
    run_id: str
    rows: int
    output: str | None
    """The scored Parquet folder (None: only the sink was asked for)."""
    sink_rows: int | None
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def model_version(pinned_uri: str) -> str:
    """``models:/name/3`` -> ``3``; a bundle folder is its own version."""
    return pinned_uri.rsplit("/", 1)[-1] if pinned_uri.startswith("models:/") else pinned_uri


def predict(
    model_uri: str,
    tracking_uri: str | None,
    source: Location,
    *,
    output_dir: str | None = None,
    sink: SqlSource | IcebergSource | None = None,
    run_id: str | None = None,
    actors: int = 2,
    cpus_per_actor: float = 0.5,
    partition_cols: list[str] | None = None,
    address: str | None = None,
    out_of_range: Literal["reject", "flag"] = "flag",
    explain: bool = False,
) -> PredictResult:
    """Score ``source`` with a registered model into Parquet (``output_dir``) and/or ``sink``.

    Args:
        run_id: the rows' run id; scoring again with the same id replaces them. Default: a new id.
        out_of_range: the serving policy for values outside the training range (``serve.out_of_range``).
        explain: add per-field ``contribution__*`` columns (XGBoost models; see ``score_parquet``).

    Raises:
        DataError, SchemaError: the input or the sink is unreachable, missing or unfit.
        RegistryError: the model cannot be loaded or fails verification.

    Example:
        >>> predict("models:/loans@champion", uri, SqlSource(url=u, table="loans"),
        ...         sink=SqlSource(url=u, table="scores"), run_id="2026-12-04")  # doctest: +SKIP
    """
    import time

    import ray

    from raypipe.data.sources import open_warehouse, read_warehouse
    from raypipe.data.sources import sink as sinks
    from raypipe.runtime import connect
    from raypipe.serve.batch import score_parquet

    t0 = time.perf_counter()
    run_id = run_id or uuid.uuid4().hex[:16]
    scratch = Path(tempfile.mkdtemp(prefix="raypipe-predict-"))
    try:
        input_path = source
        if not isinstance(source, str):
            described = open_warehouse(source)  # fails here, before Ray, on a wrong password or table
            if not ray.is_initialized():
                connect(address, log_to_driver=False)
            input_path = str(scratch / "input")
            read_warehouse(described, ray.cluster_resources().get("CPU", 2)).write_parquet(input_path)
        scored_dir = output_dir or str(scratch / "scored")
        scored = score_parquet(
            model_uri,
            tracking_uri,
            input_path,
            scored_dir,
            actors=actors,
            cpus_per_actor=cpus_per_actor,
            partition_cols=partition_cols,
            address=address,
            out_of_range=out_of_range,
            explain=explain,
        )
        version = model_version(scored.model_uri)
        written = None
        if sink is not None:
            batches = (sinks.tag(b, version, run_id) for b in sinks.parquet_batches(scored_dir))
            written = sinks.write(sink, batches, run_id)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return PredictResult(scored.model_uri, version, run_id, scored.rows, output_dir, written, time.perf_counter() - t0)


def location(text: str, *, table: str | None = None, query: str | None = None, catalog: dict | None = None) -> Location:
    """``--input`` / ``--to`` as given on the command line: a Parquet path, a SQL URL (with
    ``table`` or ``query``) or ``iceberg:namespace.table`` (with the ``catalog`` properties).

    Raises:
        ConfigError: a SQL URL without a table or query, or a bad Iceberg name.
    """
    from pydantic import ValidationError

    from raypipe.config.sources import SQL_SCHEMES, redact_url
    from raypipe.errors import ConfigError

    scheme = text.split("://", 1)[0] if "://" in text else ""
    try:
        if text.startswith("iceberg:"):
            return IcebergSource(catalog=catalog or {}, table=text.removeprefix("iceberg:"))
        if scheme in SQL_SCHEMES:
            return SqlSource(url=text, table=table, query=query)
    except ValidationError as e:
        why = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
        raise ConfigError(f"'{redact_url(text)}': {why}") from None
    return text
