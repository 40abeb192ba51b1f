"""The monitor over millions of logged rows: raypipe (Ray Data) against a single-process baseline.

    python benchmarks/bench_monitor.py --rows 5000000

Data (written once, reused): ``--rows`` synthetic rows (20 numeric, 4 categorical features; drift in
``num_3`` and ``cat_1``) turned into prediction logs in the serving layout under
``--cache-dir/monitor-logs-<rows>``, plus a 200,000-row train split for the reference profile.

- raypipe: ``run_monitor`` (every drift metric, prediction drift, volume/latency, the JSON and HTML
  reports; no webhook), Ray started once before timing. Driver RSS is sampled every 0.1 s.
- baseline: in a child process, ``pyarrow.dataset`` scan of the same columns and the same
  reference edges, ``np.searchsorted``/``np.bincount`` per numeric column and ``pc.value_counts``
  per categorical column: the same counts with no framework, one process, all in pyarrow's threads.
  Its peak RSS is the child's ``ru_maxrss``.

Rounds alternate (baseline, raypipe) ``--repeat`` times; the best of each is reported with the ratio.
The Arrow size of the columns read is printed next to the RSS: the driver must not hold the data.
Results go to ``benchmarks/results/monitor.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MB = 1024 * 1024
DRIFT = {"num_3": 1.0, "cat_1": 0.6}
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _ensure(rows: int, cache: Path) -> tuple[Path, Path]:
    from raypipe.data.datasets.synth import write_synth
    from raypipe.data.datasets.synth_logs import write_prediction_logs

    train = cache / "monitor-train-200000"
    if not train.is_dir():
        write_synth(train, 200_000, seed=1)
    logs = cache / f"monitor-logs-{rows}"
    if not (logs / "done").exists():
        t0 = time.perf_counter()
        src = cache / f"monitor-src-{rows}"
        if not src.is_dir():
            write_synth(src, rows, seed=7, drift=DRIFT)
        # 2 rows per request, 0.05 s apart: 5 M rows span ~1.5 days of date= partitions.
        write_prediction_logs(src, logs, model="bench", start=START, rows_per_request=2, seconds_per_request=0.05)
        (logs / "done").write_text("")
        print(f"wrote {rows:,} logged rows to {logs} in {time.perf_counter() - t0:.0f} s", flush=True)
    return train, logs / "model=bench"


def _reference(train: Path, cache: Path):
    import pyarrow.parquet as pq
    import ray.data

    from raypipe.config import DataConfig, FeaturesConfig
    from raypipe.data.datasets.synth_logs import synth_score
    from raypipe.data.profile import compute_profile
    from raypipe.data.schema import infer_contract
    from raypipe.monitor import ReferenceProfile, build_reference

    path = cache / "monitor-reference.json"
    if path.exists():
        return ReferenceProfile.load(path)
    ds = ray.data.read_parquet(str(train))
    stats = compute_profile(ds)["all"]
    schema = pq.read_schema(next(train.rglob("*.parquet")))
    contract = infer_contract(schema, stats, stats, DataConfig(path=str(train), label="label", id_column="id"),
                              FeaturesConfig())  # fmt: skip
    test = pq.read_table(next(train.rglob("*.parquet")))
    ref = build_reference(ds, contract, synth_score(test))
    ref.save(path)
    return ref


def baseline(logs: str, ref_path: str) -> dict:
    """Same counts, one process, pyarrow + numpy."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from raypipe.monitor import ReferenceProfile
    from raypipe.monitor._binning import to_float

    ref = ReferenceProfile.load(ref_path)
    t0 = time.perf_counter()
    cols = [*ref.numeric, *ref.categorical, "score", "latency_ms", "row", "ts"]
    counts = {n: np.zeros(len(r.edges) + 1, np.int64) for n, r in ref.numeric.items()}
    edges = {n: np.asarray(r.edges) for n, r in ref.numeric.items()}
    cats: dict[str, dict] = {n: {} for n in ref.categorical}
    score = np.zeros(len(ref.scores.edges) + 1, np.int64)
    rows = 0
    for b in pads.dataset(logs, format="parquet").to_batches(columns=cols):
        rows += b.num_rows
        for n in counts:
            v = to_float(b.column(n))
            counts[n] += np.bincount(np.searchsorted(edges[n], v[~np.isnan(v)], side="right"),
                                     minlength=len(counts[n]))  # fmt: skip
        for n in cats:
            vc = pc.value_counts(b.column(n))
            for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist()):
                cats[n][v] = cats[n].get(v, 0) + c
        s = to_float(b.column("score"))
        score += np.bincount(np.searchsorted(ref.scores.edges, s, side="right"), minlength=len(score))
    return {"seconds": time.perf_counter() - t0, "rows": rows,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


class _RssSampler:
    def __init__(self) -> None:
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss / MB)
            self._stop.wait(0.1)

    def __enter__(self):
        self.peak = self.proc.memory_info().rss / MB
        self.start_mb = self.peak
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.thread.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".raypipe" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "monitor.json")
    ap.add_argument("--baseline-only", nargs=2, metavar=("LOGS", "REF"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.baseline_only:
        print(json.dumps(baseline(*args.baseline_only)))
        return
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    from raypipe import runtime
    from raypipe.config import load_config
    from raypipe.monitor import run_monitor

    session = runtime.connect(num_cpus=None, log_to_driver=False)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    train, logs = _ensure(args.rows, args.cache_dir)
    ref = _reference(train, args.cache_dir)
    ref_path = args.cache_dir / "monitor-reference.json"
    cfg = load_config(raw={"data": {"path": "unused", "label": "label"}, "name": "bench",
                           "runtime": {"work_dir": str(args.cache_dir / "work")}})  # fmt: skip
    import pyarrow.dataset as pads

    cols = [*ref.numeric, *ref.categorical, "score", "latency_ms", "row", "ts", "request_id"]
    arrow_mb = (
        sum(pads.dataset(str(logs), format="parquet").head(100_000, columns=cols).nbytes for _ in [0])
        / 100_000
        * args.rows
        / MB
    )
    rounds = []
    for i in range(args.repeat):
        proc = subprocess.run([sys.executable, __file__, "--baseline-only", str(logs), str(ref_path)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        base = json.loads(proc.stdout.strip().splitlines()[-1])
        with _RssSampler() as rss:
            t0 = time.perf_counter()
            result = run_monitor(cfg, reference=ref, input_path=str(logs), send_alerts=False)
            secs = time.perf_counter() - t0
        assert result.rows == base["rows"] == args.rows, (result.rows, base["rows"])
        rounds.append({"baseline_s": round(base["seconds"], 2), "baseline_peak_rss_mb": round(base["peak_rss_mb"]),
                       "raypipe_s": round(secs, 2), "driver_rss_start_mb": round(rss.start_mb),
                       "driver_rss_peak_mb": round(rss.peak), "flagged": result.flagged_features})  # fmt: skip
        print(f"round {i + 1}: baseline {base['seconds']:.1f} s (peak RSS {base['peak_rss_mb']:.0f} MB), "
              f"raypipe {secs:.1f} s (driver RSS {rss.start_mb:.0f} -> peak {rss.peak:.0f} MB), "
              f"flagged {result.flagged_features}", flush=True)  # fmt: skip
    best_base = min(r["baseline_s"] for r in rounds)
    best_ray = min(r["raypipe_s"] for r in rounds)
    out = {
        "rows": args.rows,
        "columns_arrow_mb": round(arrow_mb),
        "cpus": session.total_cpus,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "rounds": rounds,
        "best_baseline_s": best_base,
        "best_raypipe_s": best_ray,
        "raypipe_rows_per_s": round(args.rows / best_ray),
        "speed_ratio_raypipe_over_baseline": round(best_base / best_ray, 3),
        "driver_rss_peak_mb": max(r["driver_rss_peak_mb"] for r in rounds),
        "driver_rss_growth_mb": max(r["driver_rss_peak_mb"] - r["driver_rss_start_mb"] for r in rounds),
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(out, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
