"""The monitor's map-reduce: one small JSON summary per block of logged rows.

Each Ray Data task bins its block with the reference's edges and returns
counts; the driver adds the counts up. Driver memory depends on the number of
features and bins, never on the number of rows.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from raypipe.data.ingest import hive_folder_values
from raypipe.errors import DataError
from raypipe.monitor._binning import add_into, categorical_counts, numeric_counts, to_float
from raypipe.monitor.reference import ReferenceProfile

# Request latency histogram: 0.1 ms .. 100 s, log-spaced (quantiles within ~6%).
LATENCY_EDGES_MS = np.logspace(-1, 5, 241)
# Binary score histogram per label value, for a streaming AUC (accurate to ~1e-3).
AUC_BINS = 1000
_DATE_DIR = re.compile(r"(?:^|/)date=(\d{4}-\d{2}-\d{2})(?:/|$)")
_HIVE_FOLDER = re.compile(r"^[^=]+=[^=]*$")
_LOG_COLUMNS = ("request_id", "row", "ts", "latency_ms", "prediction", "score", "warnings")


@dataclass
class Window:
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    def ms(self) -> tuple[int | None, int | None]:
        def conv(t: dt.datetime | None) -> int | None:
            return None if t is None else int(t.replace(tzinfo=t.tzinfo or dt.UTC).timestamp() * 1000)

        return conv(self.since), conv(self.until)

    def keeps_date(self, day: str) -> bool:
        d = dt.date.fromisoformat(day)
        return (self.since is None or d >= self.since.date()) and (self.until is None or d <= self.until.date())


_RELATIVE = re.compile(r"^-?(\d+(?:\.\d+)?)([smhd])$")


def parse_time(text: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """ISO date/time (naive means UTC) or a relative age such as ``24h``/``-7d`` (before ``now``).

    Raises:
        DataError: neither form; names the value and both forms.
    """
    if text is None or text == "":
        return None
    m = _RELATIVE.match(text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        return (now or dt.datetime.now(dt.UTC)) - dt.timedelta(**{unit: float(m.group(1))})
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise DataError(f"bad time '{text}': use ISO (2026-11-24 or 2026-11-24T06:00) or an age like 24h, 7d") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@dataclass
class Plan:
    """What each task computes: picklable, built once on the driver."""

    numeric: dict[str, tuple[list[float], list[float], float | None, float | None]] = field(default_factory=dict)
    categorical: dict[str, list[str]] = field(default_factory=dict)
    score_edges: tuple[list[float], list[float]] | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    labels_path: str | None = None
    task: str = "binary"
    positive: str | None = None
    folder_columns: list[str] = field(default_factory=list)
    """Features read from hive folder names, as strings (``hive_partitioning``)."""


def list_files(root: str, window: Window) -> list[str]:
    """Parquet files under ``root``, skipping ``date=`` partitions outside the window.

    Raises:
        DataError: the folder does not exist or holds no Parquet files in the window.
    """
    try:
        # Local paths made absolute: the Ray Data tasks reading them run in other folders.
        local = (pafs.LocalFileSystem(), str(Path(root).expanduser().resolve()))
        fs, path = pafs.FileSystem.from_uri(root) if "://" in root else local
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            infos = [info]
        elif info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        else:
            raise DataError(f"monitor input '{root}' does not exist; pass the prediction-log folder with --input")
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot list monitor input '{root}': {e}") from None
    files = []
    for f in infos:
        rel = f.path[len(path.rstrip("/")) :]
        # Skip hidden files and folders below the root (a writer's in-flight temp files).
        if f.type != pafs.FileType.File or not f.path.endswith(".parquet") or "/." in rel:
            continue
        m = _DATE_DIR.search(f.path)
        if m and not window.keeps_date(m.group(1)):
            continue
        files.append(f.path if "://" not in root else f"{root.split('://')[0]}://{f.path}")
    if not files:
        raise DataError(f"no Parquet files under '{root}' in the window {window.since} .. {window.until}")
    return sorted(files)


def make_plan(ref: ReferenceProfile, window: Window, labels_path: str | None) -> Plan:
    contract = ref.contract_obj
    if labels_path and "://" not in labels_path:
        labels_path = str(Path(labels_path).expanduser().resolve())  # read by tasks running elsewhere
    plan = Plan(task=contract.label.task, labels_path=labels_path)
    for name, r in ref.numeric.items():
        spec = contract.feature(name)
        plan.numeric[name] = (r.edges, r.plot_edges, spec.min, spec.max)
    plan.categorical = {name: r.levels for name, r in ref.categorical.items()}
    if ref.scores is not None:
        plan.score_edges = (ref.scores.edges, ref.scores.plot_edges)
    plan.since_ms, plan.until_ms = window.ms()
    if contract.label.task == "binary" and contract.label.classes:
        plan.positive = contract.label.classes[-1].lower()
    return plan


_labels_cache: dict[str, pa.Table] = {}


def _labels(path: str) -> pa.Table:
    # Read once per worker process: labels are broadcast to every task (see README limits).
    if path not in _labels_cache:
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["request_id", "row", "label"])
        t = t.set_column(0, "request_id", pc.cast(t.column("request_id"), pa.string()))
        t = t.set_column(1, "row", pc.cast(t.column("row"), pa.int32()))
        _labels_cache.clear()
        _labels_cache[path] = t
    return _labels_cache[path]


def summarize(batch: pa.Table, plan: Plan) -> dict[str, np.ndarray]:
    """Map step over one block of logged rows."""
    names = set(batch.column_names)
    if "ts" in names and (plan.since_ms is not None or plan.until_ms is not None):
        ts = pc.cast(pc.cast(batch.column("ts"), pa.timestamp("ms", tz="UTC")), pa.int64())
        keep = pa.array(np.ones(len(batch), dtype=bool))
        if plan.since_ms is not None:
            keep = pc.and_(keep, pc.greater_equal(ts, plan.since_ms))
        if plan.until_ms is not None:
            keep = pc.and_(keep, pc.less(ts, plan.until_ms))
        batch = batch.filter(pc.fill_null(keep, False))
    if plan.folder_columns:
        types = {c: pa.float64() if c in plan.numeric else pa.string() for c in plan.folder_columns}
        batch = hive_folder_values(batch, types)
    n = len(batch)
    out: dict[str, Any] = {"rows": n, "num": {}, "cat": {}, "missing": {}}
    flagged = _flagged(batch.column("warnings")) if "warnings" in names else None
    for name, (edges, plot, lo, hi) in plan.numeric.items():
        if name not in names:
            out["missing"][name] = n
            continue
        v = to_float(batch.column(name))
        s = numeric_counts(v, np.asarray(edges), np.asarray(plot))
        with np.errstate(invalid="ignore"):
            bad = (v < lo if lo is not None else np.zeros(n, bool)) | (v > hi if hi is not None else False)
        if flagged is not None:
            # Rows the server flagged: a value the log's dtype cannot hold (1e308, 1.5) is null there.
            bad |= flagged(name)
        s["out_of_schema"] = int(bad.sum())
        out["num"][name] = s
    for name, levels in plan.categorical.items():
        if name not in names:
            out["missing"][name] = n
            continue
        out["cat"][name] = categorical_counts(batch.column(name), levels)
    if plan.score_edges is not None and "score" in names:
        out["score"] = numeric_counts(to_float(batch.column("score")), *map(np.asarray, plan.score_edges))
    _volume(batch, names, out)
    if plan.labels_path and {"request_id", "row", "prediction", "score"} <= names:
        out["perf"] = _performance(batch, plan)
    return {"summary": np.array([json.dumps(out)], dtype=object)}


def _flagged(warnings: pa.ChunkedArray):
    """``field -> row mask`` over the prediction log's ``warnings`` (list of flagged field names) column."""
    lists = warnings.combine_chunks()
    parents = pc.list_parent_indices(lists).to_numpy()
    fields = pc.list_flatten(lists)

    def mask(name: str) -> np.ndarray:
        m = np.zeros(len(lists), bool)
        m[parents[pc.equal(fields, name).to_numpy(zero_copy_only=False)]] = True
        return m

    return mask


def _volume(batch: pa.Table, names: set[str], out: dict[str, Any]) -> None:
    first = batch
    if "row" in names:
        first = batch.filter(pc.fill_null(pc.equal(batch.column("row"), 0), False))
    out["requests"] = len(first)
    if "latency_ms" in names:
        lat = to_float(first.column("latency_ms"))
        lat = lat[~np.isnan(lat)]
        out["latency_counts"] = np.bincount(
            np.searchsorted(LATENCY_EDGES_MS, lat, side="right"), minlength=len(LATENCY_EDGES_MS) + 1
        ).tolist()
    if "ts" in names and len(batch):
        ms = pc.cast(pc.cast(batch.column("ts"), pa.timestamp("ms", tz="UTC")), pa.int64()).drop_null()
        ms = ms.to_numpy()
        if len(ms):
            # Day numbers by integer division: much cheaper than formatting every timestamp.
            days, counts = np.unique(ms // 86_400_000, return_counts=True)
            epoch = dt.date(1970, 1, 1)
            out["rows_by_date"] = {
                (epoch + dt.timedelta(days=int(d))).isoformat(): int(c) for d, c in zip(days, counts)
            }
            out["ts_min"], out["ts_max"] = [int(ms.min())], [int(ms.max())]


def _performance(batch: pa.Table, plan: Plan) -> dict[str, Any]:
    left = pa.table(
        {
            "request_id": pc.cast(batch.column("request_id"), pa.string()),
            "row": pc.cast(batch.column("row"), pa.int32()),
            "prediction": pc.cast(batch.column("prediction"), pa.string()),
            "score": pc.cast(batch.column("score"), pa.float64()),
        }
    )
    joined = left.join(_labels(plan.labels_path), keys=["request_id", "row"], join_type="inner")
    labels = joined.column("label")
    ok = pc.invert(pc.is_null(labels))
    joined = joined.filter(ok)
    out: dict[str, Any] = {"n": len(joined)}
    if not len(joined):
        return out
    if plan.task == "regression":
        err = to_float(joined.column("score")) - to_float(joined.column("label"))
        out.update(sq_err=float(np.nansum(err**2)), abs_err=float(np.nansum(np.abs(err))))
        return out
    truth = pc.utf8_lower(pc.cast(joined.column("label"), pa.string()))
    pred = pc.utf8_lower(joined.column("prediction"))
    out["errors"] = int(pc.sum(pc.not_equal(truth, pred)).as_py() or 0)
    if plan.task == "binary" and plan.positive is not None:
        pos = pc.equal(truth, plan.positive).to_numpy(zero_copy_only=False)
        idx = np.clip((to_float(joined.column("score")) * AUC_BINS).astype(int), 0, AUC_BINS - 1)
        out["auc_pos"] = np.bincount(idx[pos], minlength=AUC_BINS).tolist()
        out["auc_neg"] = np.bincount(idx[~pos], minlength=AUC_BINS).tolist()
    return out


def collect(files: list[str], columns: list[str], plan: Plan) -> dict[str, Any]:
    """Run the map step over ``files`` with Ray Data and add the summaries up on the driver."""
    import pyarrow.parquet as pq
    import ray.data

    try:
        fs, path = pafs.FileSystem.from_uri(files[0]) if "://" in files[0] else (None, files[0])
        present = set(pq.read_schema(path, filesystem=fs).names)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"cannot read the schema of '{files[0]}': {e}") from None
    partitioning, in_folders = hive_partitioning(files[0], [c for c in columns if c not in present])
    cols = [c for c in columns if c in present or c in in_folders]
    plan = dataclasses.replace(plan, folder_columns=in_folders)
    ds = ray.data.read_parquet(files, columns=cols, partitioning=partitioning)
    mapped = ds.map_batches(
        summarize, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, fn_kwargs={"plan": plan}
    )
    total: dict[str, Any] = {"rows": 0, "num": {}, "cat": {}, "missing": {}, "requests": 0}
    for row in mapped.iter_rows():
        part = json.loads(row["summary"])
        for key in ("ts_min", "ts_max"):
            if key in part:
                fn = min if key == "ts_min" else max
                total[key] = [fn(total.get(key, part[key]) + part[key])]
                part.pop(key)
        add_into(total, part)
        for c in total["cat"].values():  # keep the unseen-level tally bounded
            if len(c.get("new_levels", {})) > 200:
                c["new_levels"] = dict(sorted(c["new_levels"].items(), key=lambda kv: -kv[1])[:200])
    total["columns_read"] = cols
    return total


def hive_partitioning(first_file: str, wanted: list[str]) -> tuple[Any, list[str]]:
    """Hive partitioning for the ``wanted`` columns that live in folder names (``month=7/``), not in files.

    Returns (None, []) when none does. Values are read as strings and typed in ``summarize``
    (``hive_folder_values``): Ray would fail casting Hive's null folder name.
    """
    from ray.data.datasource.partitioning import Partitioning

    scheme, _, rest = first_file.rpartition("://")
    folders = rest.split("/")[:-1]
    # Hive folders are the trailing run of key=value names; the base is the folder above them.
    start = len(folders)
    while start > 0 and _HIVE_FOLDER.match(folders[start - 1]):
        start -= 1
    keys = {f.split("=", 1)[0] for f in folders[start:]}
    found = [c for c in wanted if c in keys]
    if not found:
        return None, []
    base = "/".join(folders[:start]) or "/"
    base = f"{scheme}://{base}" if scheme else base
    return Partitioning("hive", base_dir=base, field_types=dict.fromkeys(found, str)), found


def log_columns(ref: ReferenceProfile) -> list[str]:
    return list(ref.numeric) + list(ref.categorical) + list(_LOG_COLUMNS)
