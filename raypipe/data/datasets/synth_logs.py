"""Prediction logs in the serving format, made from synthetic feature Parquet.

For tests, demos and the benchmark: a stand-in "model" scores each row from two
numeric features so that drift in them shows up as prediction drift too. The
output follows the shared prediction-log layout
(``<root>/model=<name>/date=<YYYY-MM-DD>/part-<unix_ms>-<uuid8>.parquet``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def synth_score(table: pa.Table) -> np.ndarray:
    """P(positive) of the stand-in model: a logistic function of num_0 and num_1."""

    def col(name: str) -> np.ndarray:
        if name not in table.column_names:
            return np.zeros(len(table))
        return np.nan_to_num(pc.cast(table.column(name), pa.float64()).to_numpy(zero_copy_only=False), nan=0.0)

    z = 0.9 * (col("num_0") + 3.0) - 0.4 * col("num_1")
    return 1.0 / (1.0 + np.exp(-(z - 1.0)))


def write_prediction_logs(
    src: str | Path,
    root: str | Path,
    *,
    model: str = "synth",
    start: dt.datetime,
    rows_per_request: int = 4,
    seconds_per_request: float = 1.0,
    model_version: str = "1",
    label: str = "label",
) -> tuple[Path, pa.Table]:
    """Turn each Parquet file under ``src`` into one log file; return (model folder, labels table).

    Rows are grouped into requests of ``rows_per_request``; request ``i`` arrives at
    ``start + i * seconds_per_request``. Memory is one source file at a time.
    """
    files = sorted(Path(src).rglob("*.parquet"))
    out = Path(root) / f"model={model}"
    labels = []
    req = 0
    rng = np.random.default_rng(0)
    for f in files:
        t = pq.read_table(f)
        n = len(t)
        row = (np.arange(n) % rows_per_request).astype(np.int32)
        req_idx = req + np.arange(n) // rows_per_request
        req = int(req_idx[-1]) + 1 if n else req
        ts_ms = (start.timestamp() * 1000 + req_idx * seconds_per_request * 1000).astype(np.int64)
        score = synth_score(t)
        ids = pa.array([f"r{i:09d}" for i in req_idx])
        latency = np.repeat(rng.lognormal(1.5, 0.4, (n + rows_per_request - 1) // rows_per_request), rows_per_request)
        feats = t.drop_columns([c for c in (label, "id") if c in t.column_names])
        log = pa.table(
            {
                "request_id": ids,
                "row": pa.array(row),
                "ts": pa.array(ts_ms, pa.timestamp("ms", tz="UTC")),
                "model_version": pa.array([model_version] * n),
                "latency_ms": pa.array(latency[:n]),
                **{c: feats.column(c) for c in feats.column_names},
                "prediction": pa.array(np.where(score >= 0.5, "true", "false")),
                "score": pa.array(score),
            }
        )
        days = pc.strftime(log.column("ts"), format="%Y-%m-%d").to_numpy(zero_copy_only=False)
        for day in np.unique(days):
            part = log.filter(pa.array(days == day))
            folder = out / f"date={day}"
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, folder / f"part-{int(ts_ms[0])}-{uuid.uuid4().hex[:8]}.parquet")
        if label in t.column_names:
            labels.append(pa.table({"request_id": ids, "row": pa.array(row), "label": t.column(label)}))
    return out, (pa.concat_tables(labels) if labels else pa.table({}))
