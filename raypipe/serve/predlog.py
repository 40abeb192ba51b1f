"""The prediction log: inputs, outputs, version and latency, appended to Parquet off the request path.

Layout (the contract shared with monitoring)::

    <root>/model=<name>/date=<YYYY-MM-DD>/part-<unix_ms>-<uuid8>.parquet

one row per predicted record: ``request_id``, ``row`` (int32), ``ts`` (timestamp[ms, UTC],
request arrival), ``model_version``, ``latency_ms``, every contract feature (raw, cast to the
contract dtype; missing -> null), ``prediction`` (str) and ``score`` (float64).

The request path only does ``queue.put_nowait`` of references it already holds; a
daemon thread builds the tables and writes a file every ``flush_rows`` rows or
``flush_s`` seconds. A full queue drops the entry and counts it: logging never blocks
or fails a prediction.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.data.schema import Contract, LabelSpec

log = logging.getLogger(__name__)
_TICK = object()  # the flush timer fired with nothing new


@dataclass(frozen=True)
class _Entry:
    request_id: str
    ts_ms: int
    model_version: str
    latency_ms: float
    table: pa.Table
    scores: np.ndarray
    """Raw model output, as ``Bundle.predict_table`` returns it; turned into columns in the writer."""


def _arrow_type(dtype: str) -> pa.DataType | None:
    try:
        return pa.type_for_alias(dtype)
    except (ValueError, KeyError):
        return None


def _cast(col: pa.ChunkedArray, dtype: str) -> pa.ChunkedArray:
    """Cast to the contract dtype; values that do not fit (an unseen 'ZZ' for an int code) become null."""
    target = _arrow_type(dtype.removeprefix("dictionary<values=").split(",")[0])
    if target is None or col.type == target:
        return col
    try:
        return pc.cast(col, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = []  # the rare slow path, in the writer thread only
    for v in col.to_pylist():
        try:
            values.append(pa.scalar(v).cast(target).as_py() if v is not None else None)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError, ValueError):
            values.append(None)
    return pa.chunked_array([pa.array(values, target)])


def prediction_columns(label: LabelSpec, scores: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """``prediction`` (str) and ``score`` (float64) columns from raw scores, vectorised.

    score: P(positive) for binary, the max class probability for multiclass, the value for regression.
    """
    if label.task == "regression":
        values = pa.array(np.asarray(scores, dtype=np.float64))
        return pc.cast(values, pa.string()), values
    classes = pa.array(label.classes or [], pa.string())
    if label.task == "binary":
        p = np.asarray(scores, dtype=np.float64).reshape(-1)
        return classes.take(pa.array((p > 0.5).astype(np.int64))), pa.array(p)
    probs = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    return classes.take(pa.array(probs.argmax(axis=1))), pa.array(probs.max(axis=1))


class PredictionLogger:
    """Buffers prediction entries and writes them to partitioned Parquet from a daemon thread.

    Example:
        >>> plog = PredictionLogger("/tmp/preds", "flights", contract)  # doctest: +SKIP
        >>> plog.log("req-1", ts_ms, "3", 1.2, table, scores)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | Path,
        model_name: str,
        contract: Contract,
        *,
        flush_rows: int = 1000,
        flush_s: float = 5.0,
        max_queued_rows: int = 100_000,
    ) -> None:
        self.root = Path(root)
        self.model_name = model_name
        self._features = [(f.name, f.dtype) for f in contract.features]
        self._label = contract.label
        self._flush_rows = flush_rows
        self._flush_s = flush_s
        self._max_queued_rows = max_queued_rows
        self._queued_rows = 0  # approximate; only bounds memory
        self._queue: queue.SimpleQueue[_Entry | object | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.dropped_rows = 0
        self.written_rows = 0
        self.write_errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="raypipe-predlog", daemon=True)
        self._thread.start()

    def log(
        self,
        request_id: str,
        ts_ms: int,
        model_version: str,
        latency_ms: float,
        table: pa.Table,
        scores: np.ndarray,
    ) -> bool:
        """Queue one request's rows; returns False (and counts the rows as dropped) when the buffer is full."""
        n = table.num_rows
        with self._lock:
            if self._queued_rows + n > self._max_queued_rows or self._stop.is_set():
                self.dropped_rows += n
                return False
            self._queued_rows += n
        self._queue.put_nowait(_Entry(request_id, ts_ms, model_version, latency_ms, table, scores))
        return True

    def stats(self) -> dict[str, int]:
        return {"written_rows": self.written_rows, "dropped_rows": self.dropped_rows, "write_errors": self.write_errors}

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is queued and stop the writer."""
        self._stop.set()
        self._queue.put_nowait(None)
        self._thread.join(timeout_s)

    # --- writer thread -------------------------------------------------------
    def _run(self) -> None:
        pending: list[_Entry] = []
        rows = 0
        deadline = time.monotonic() + self._flush_s
        while True:
            try:
                entry = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                entry = _TICK
            if entry is None:  # close()
                self._flush(pending)
                return
            if entry is not _TICK:
                pending.append(entry)
                rows += entry.table.num_rows
            if rows >= self._flush_rows or time.monotonic() >= deadline:
                self._flush(pending)
                pending, rows = [], 0
                deadline = time.monotonic() + self._flush_s

    def _flush(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        n = sum(e.table.num_rows for e in entries)
        try:
            for date, table in self._tables(entries).items():
                folder = self.root / f"model={self.model_name}" / f"date={date}"
                folder.mkdir(parents=True, exist_ok=True)
                name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
                tmp = folder / f".{name}.tmp"
                pq.write_table(table, tmp)
                tmp.rename(folder / name)  # readers never see a half-written file
            self.written_rows += n
        except Exception:  # noqa: BLE001 - a log failure must never reach the request path
            self.write_errors += 1
            self.dropped_rows += n
            log.exception("writing %d prediction-log rows under %s failed", n, self.root)
        finally:
            with self._lock:
                self._queued_rows -= n

    def _tables(self, entries: list[_Entry]) -> dict[str, pa.Table]:
        counts = np.array([e.table.num_rows for e in entries])
        ts = np.repeat(np.array([e.ts_ms for e in entries], dtype="int64"), counts)
        cols: dict[str, pa.Array | pa.ChunkedArray] = {
            "request_id": pa.array(
                np.repeat(np.array([e.request_id for e in entries], dtype=object), counts), pa.string()
            ),
            "row": pa.array(np.concatenate([np.arange(c, dtype=np.int32) for c in counts])),
            "ts": pa.array(ts, pa.timestamp("ms", tz="UTC")),
            "model_version": pa.array(
                np.repeat(np.array([e.model_version for e in entries], dtype=object), counts), pa.string()
            ),
            "latency_ms": pa.array(np.repeat(np.array([e.latency_ms for e in entries]), counts)),
        }
        features = pa.concat_tables([e.table for e in entries])
        for name, dtype in self._features:
            cols[name] = _cast(features.column(name), dtype)
        cols["prediction"], cols["score"] = prediction_columns(self._label, np.concatenate([e.scores for e in entries]))
        table = pa.table(cols)
        day = ts // 86_400_000
        days = np.unique(day)
        out = {}
        for d in days:
            key = dt.datetime.fromtimestamp(int(d) * 86_400, dt.UTC).strftime("%Y-%m-%d")
            out[key] = table if len(days) == 1 else table.filter(pa.array(day == d))
        return out
