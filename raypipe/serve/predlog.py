"""The prediction log: inputs, outputs, version and latency, appended to Parquet for monitoring.

Layout (the contract shared with monitoring)::

    <root>/model=<name>/date=<YYYY-MM-DD>/part-<unix_ms>-<uuid8>.parquet

one row per predicted record: ``request_id``, ``row`` (int32), ``ts`` (timestamp[ms, UTC],
request arrival), ``model_version``, ``latency_ms``, every contract feature (raw, cast to the
contract dtype; missing -> null), ``prediction`` (str), ``score`` (float64) and ``warnings``
(list of the field names the ``out_of_range: flag`` policy flagged in that row; empty when none).

Durable before the answer: ``log`` appends the request's rows to this process's spool
segment (``<root>/.spool/<host>/seg-<pid>-<uuid8>.arrows``, an Arrow IPC stream) before the
response is sent: unbuffered writes into the OS page cache, so a replica killed outright
(SIGKILL, OOM) loses no row of a request it answered (a power loss can: there is no fsync).
A daemon thread turns the segment into Parquet every ``flush_rows`` rows or ``flush_s``
seconds (it starts a new segment, converts the old one, then deletes it), and merges the
segments of dead processes on this host, claimed by an atomic rename so two replicas never
both merge one. A torn last record (the process died mid-write) belongs to an unanswered
request and is skipped. Past ``max_queued_rows`` unconverted rows, or when the spool cannot
be written, rows are dropped and counted: logging never blocks or fails a prediction.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.data.schema import Contract
from raypipe.model import prediction_columns
from raypipe.runtime.orphans import pid_alive

log = logging.getLogger(__name__)
_SPOOL = ".spool"  # hidden: readers of the log (the monitor) skip dot folders
_TS = pa.timestamp("ms", tz="UTC")
_NO_WARNINGS = pa.scalar([], pa.list_(pa.string()))


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


def _row_warnings(n: int, warnings: list[dict] | None) -> pa.Array:
    if not warnings:
        return pa.repeat(_NO_WARNINGS, n)
    rows: list[list[str]] = [[] for _ in range(n)]
    for w in warnings or ():
        rows[w["record"]].append(w["field"])
    return pa.array(rows, pa.list_(pa.string()))


def _read_segment(path: Path) -> pa.Table | None:
    """The whole records of a spool segment; a torn tail (an unanswered request's) is skipped."""
    batches = []
    try:
        with pa.OSFile(str(path), "rb") as f:
            reader = pa.ipc.open_stream(f)
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
    except (pa.ArrowInvalid, OSError):
        pass  # truncated mid-record or before the schema was complete
    return pa.Table.from_batches(batches) if batches else None


def _owner(name: str) -> int | None:
    """The pid a segment belongs to: its writer's (``seg-<pid>-…``) or its merger's (``claim-<pid>-…``)."""
    parts = name.split("-")
    return int(parts[1]) if len(parts) > 2 and parts[0] in ("seg", "claim") and parts[1].isdigit() else None


class _Segment:
    """This process's append-only spool file: an Arrow IPC stream, one ``os.write`` per request."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"seg-{os.getpid()}-{uuid.uuid4().hex[:8]}.arrows"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._schema: pa.Schema | None = None
        self.rows = 0

    def append(self, batch: pa.RecordBatch) -> None:
        # A stream is the schema message then one message per record: writing the message
        # whole makes the request path one syscall, and a kill leaves at most one torn record.
        data = batch.serialize().to_pybytes()
        if self._schema is None:
            self._schema = batch.schema
            data = batch.schema.serialize().to_pybytes() + data
        while data:
            data = data[os.write(self._fd, data) :]
        self.rows += batch.num_rows

    def close(self) -> None:
        os.close(self._fd)


class PredictionLogger:
    """Spools prediction rows before the answer; a daemon thread writes them to partitioned Parquet.

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
        self._spool_dir = self.root / _SPOOL / socket.gethostname()
        self._segment: _Segment | None = None
        self._queued_rows = 0  # spooled, not yet in Parquet
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.dropped_rows = 0
        self.written_rows = 0
        self.write_errors = 0
        self.merged_rows = 0
        """Rows of dead processes' spools this logger wrote to Parquet."""
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
        warnings: list[dict] | None = None,
    ) -> bool:
        """Append one request's rows to the spool; False (rows counted as dropped) when it cannot.

        ``warnings`` are the parser's flagged values (``record`` and ``field`` are kept).
        """
        n = table.num_rows
        raw = np.asarray(scores, dtype=np.float64).reshape(n, -1)  # (n, classes) or (n, 1)
        # pa.repeat of a typed scalar: 5x cheaper than pa.array of a Python list, on the request path.
        cols = {
            "request_id": pa.repeat(pa.scalar(request_id, pa.string()), n),
            "row": pa.array(np.arange(n, dtype=np.int32)),
            "ts": pa.repeat(pa.scalar(ts_ms, _TS), n),
            "model_version": pa.repeat(pa.scalar(model_version, pa.string()), n),
            "latency_ms": pa.repeat(pa.scalar(float(latency_ms), pa.float64()), n),
            **{name: table.column(name).combine_chunks() for name, _ in self._features},
            # prediction and score are derived in the writer thread, off the request path
            "scores": pa.FixedSizeListArray.from_arrays(raw.reshape(-1), raw.shape[1]),
            "warnings": _row_warnings(n, warnings),
        }
        batch = pa.RecordBatch.from_pydict(cols)
        with self._lock:
            if self._queued_rows + n > self._max_queued_rows or self._stop.is_set():
                self.dropped_rows += n
                return False
            try:
                if self._segment is None:
                    self._spool_dir.mkdir(parents=True, exist_ok=True)
                    self._segment = _Segment(self._spool_dir)
                self._segment.append(batch)
            except (OSError, pa.ArrowException):
                self.write_errors += 1
                self.dropped_rows += n
                log.exception("spooling %d prediction-log rows under %s failed", n, self._spool_dir)
                return False
            self._queued_rows += n
            full = self._segment.rows >= self._flush_rows
        if full:
            self._wake.set()
        return True

    def stats(self) -> dict[str, int]:
        return {
            "written_rows": self.written_rows,
            "dropped_rows": self.dropped_rows,
            "write_errors": self.write_errors,
            "merged_rows": self.merged_rows,
        }

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is spooled and stop the writer."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    # --- writer thread -------------------------------------------------------
    def _run(self) -> None:
        self._merge_orphans()  # a replacement replica picks up the one that died
        while True:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            stopping = self._stop.is_set()
            with self._lock:
                segment, self._segment = self._segment, None
            if segment is not None:
                try:
                    segment.close()
                finally:
                    self._flush(segment.path, segment.rows)
            self._merge_orphans()
            if stopping:
                return

    def _flush(self, path: Path, rows: int) -> None:
        """Write one closed spool segment (``rows`` spooled rows) to Parquet and delete it."""
        try:
            table = _read_segment(path)
            if table is not None:
                self._write(table)
                self.written_rows += table.num_rows
        except Exception:  # noqa: BLE001 - a log failure must never reach the request path
            self.write_errors += 1
            self.dropped_rows += rows
            log.exception("writing %d prediction-log rows from %s under %s failed", rows, path, self.root)
        finally:
            path.unlink(missing_ok=True)
            with self._lock:
                self._queued_rows -= rows

    def _merge_orphans(self) -> None:
        """Claim and write the segments of dead processes on this host (a SIGKILLed replica's)."""
        try:
            segments = list(self._spool_dir.glob("*.arrows"))
        except OSError:
            return
        me = os.getpid()
        for seg in segments:
            owner = _owner(seg.name)
            if owner is None or owner == me or pid_alive(owner):
                continue
            original = seg.name.split("-", 2)[2] if seg.name.startswith("claim-") else seg.name
            claimed = seg.with_name(f"claim-{me}-{original}")
            try:
                seg.rename(claimed)  # atomic: one merger wins
            except OSError:
                continue
            try:
                table = _read_segment(claimed)
                if table is not None:
                    self._write(table)
                    self.merged_rows += table.num_rows
                claimed.unlink(missing_ok=True)
            except Exception:  # noqa: BLE001 - left for a later merger; never reaches the request path
                self.write_errors += 1
                log.exception("merging the prediction-log spool %s failed", claimed)

    def _write(self, spooled: pa.Table) -> None:
        for date, table in self._tables(spooled).items():
            folder = self.root / f"model={self.model_name}" / f"date={date}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
            tmp = folder / f".{name}.tmp"
            pq.write_table(table, tmp)
            tmp.rename(folder / name)  # readers never see a half-written file

    def _tables(self, spooled: pa.Table) -> dict[str, pa.Table]:
        """The spooled rows with features cast to the contract dtypes, split by day."""
        cols = {c: spooled.column(c) for c in spooled.column_names if c not in ("scores", "warnings")}
        for name, dtype in self._features:
            cols[name] = _cast(cols[name], dtype)
        scores = spooled.column("scores").combine_chunks()
        raw = scores.flatten().to_numpy().reshape(len(scores), scores.type.list_size)
        cols["prediction"], cols["score"] = prediction_columns(self._label, raw if raw.shape[1] > 1 else raw[:, 0])
        cols["warnings"] = spooled.column("warnings")
        table = pa.table(cols)
        day = pc.cast(spooled.column("ts"), pa.int64()).to_numpy() // 86_400_000
        days = np.unique(day)
        out = {}
        for d in days:
            key = dt.datetime.fromtimestamp(int(d) * 86_400, dt.UTC).strftime("%Y-%m-%d")
            out[key] = table if len(days) == 1 else table.filter(pa.array(day == d))
        return out
