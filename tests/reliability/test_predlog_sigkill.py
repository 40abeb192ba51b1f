"""A process logging predictions is SIGKILLed mid-stream: every row it answered for reaches
Parquet, merged by the next logger on the host; a torn last record is skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as pads
from _serving import CONTRACT, RECORD

from raypipe.serve.predlog import PredictionLogger

# The child answers ("ok <id>" on stdout) only after log() returned, as the server does.
_CHILD = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from _serving import CONTRACT, RECORD
    from raypipe.data.records import RequestParser
    from raypipe.serve.predlog import PredictionLogger
    parser = RequestParser(CONTRACT)
    plog = PredictionLogger({root!r}, "m", CONTRACT, flush_rows=10**6, flush_s=600)
    i = 0
    while True:
        rows = [RECORD] * (1 + i % 3)
        plog.log(f"r{{i}}", 1_700_000_000_000, "1", 1.0, parser.parse_records(rows), np.full(len(rows), 0.5))
        print(f"ok r{{i}} {{len(rows)}}", flush=True)
        i += 1
    """
)


def test_rows_answered_before_a_sigkill_are_merged_by_the_next_logger(tmp_path: Path) -> None:
    root = tmp_path / "log"
    tests = str(Path(__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(tests=tests, root=str(root))], stdout=subprocess.PIPE, text=True, env=env
    )
    answered: dict[str, int] = {}
    for line in child.stdout:
        _, rid, n = line.split()
        answered[rid] = int(n)
        if len(answered) == 500:
            break
    child.send_signal(signal.SIGKILL)  # mid-stream: it keeps logging until the signal lands
    child.wait(10)
    for line in child.stdout.read().splitlines():  # answers already in the pipe count too
        _, rid, n = line.split()
        answered[rid] = int(n)
    assert list(root.rglob("*.arrows")) and not list(root.rglob("*.parquet"))  # only the spool survived
    merger = PredictionLogger(root, "m", CONTRACT, flush_s=600)
    merger.close()
    table = pads.dataset(root, format="parquet", partitioning="hive").to_table()
    rows: dict[str, int] = {}
    for rid in table.column("request_id").to_pylist():
        rows[rid] = rows.get(rid, 0) + 1
    lost = {rid: n for rid, n in answered.items() if rows.get(rid) != n}
    print(f"predlog SIGKILL: {len(answered)} answered, {len(lost)} lost, merged {merger.merged_rows} rows")
    assert not lost
    assert merger.merged_rows == table.num_rows >= sum(answered.values())
    assert set(table.column("carrier").to_pylist()) == {RECORD["carrier"]}
    assert not list(root.rglob("*.arrows"))  # claimed and removed
