"""Ingest + preprocess throughput: raypipe on Ray Data against a raw pyarrow scan, same files, same run.

    python benchmarks/bench_ingest.py --rows 4000000

What is measured, in ``--repeat`` interleaved rounds (scan, raypipe, scan + preprocess), so that load
from other processes hits both sides alike:

- baseline ``pyarrow scan``: ``pyarrow.dataset.dataset(path, partitioning="hive").to_batches()``
  over all columns, every batch touched, pyarrow's own thread pool (all cores). It runs in a child
  process (started once, page cache warmed once) so the driver's peak RSS below is raypipe's alone.
- context ``pyarrow + preprocess``: the same scan, then per batch the same split column
  (``add_split_column``) and ``Preprocessor.transform_batch`` raypipe runs, in that one process.
- raypipe ``ingest+preprocess``: ``discover`` -> ``read`` -> ``map_batches(add_split_column)`` ->
  ``map_batches(prep.transform_block)`` -> ``materialize()``, as ``raypipe.pipeline`` chains them,
  Ray start-up excluded (Ray is started once, before anything is timed). ``validate_files`` and the
  profile pass (which fits the Preprocessor the way the pipeline does) are timed separately, once.

Headline: raypipe ingest+preprocess rows/s / pyarrow scan rows/s, best round of each (target >= 0.5x);
the median of the per-round ratios is printed next to it.

Memory: peak RSS of the driver (``getrusage``, and sampled during each phase) and the peak of the
summed RSS of this Ray's worker processes (every process under the driver whose command line holds
``ray::``), sampled every 0.2 s; worker RSS counts the object-store pages they map. The workers' summed
USS (private memory, object store excluded) is read at each phase's start and end only: reading it
(smaps) during a timed phase measurably slowed the workers. The feature matrix's size (rows x features
x 4 bytes) is the reference: the driver's RSS growth during ingest+preprocess must stay far below it
(the driver does not hold the dataset).

The synthetic data is written once to ``--cache-dir/synth-<rows>`` and reused. Results are merged
into ``--out`` (one entry per row count and split key), written atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


# --- helpers ---------------------------------------------------------------------------------------


def _ensure_data(rows: int, cache_dir: Path) -> Path:
    from raypipe.data.datasets.synth import write_synth

    out = cache_dir / f"synth-{rows}"
    if not out.is_dir():  # write_synth renames a finished folder into place: a folder is complete
        t0 = time.perf_counter()
        write_synth(out, rows, seed=0)
        print(f"wrote {rows:,} rows to {out} in {time.perf_counter() - t0:.1f} s", flush=True)
    return out


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _config(path: Path, split_key: str):
    from raypipe.config import PipelineConfig

    data = {"path": str(path), "label": "label"}
    if split_key == "id":
        data["id_column"] = "id"  # split by the row id, as a config for this data would
    return PipelineConfig.model_validate({"data": data})


def _split_key(cfg, names: list[str]) -> list[str]:
    """The pipeline's rule: data.split.key, else the id column, else every column."""
    return cfg.data.split.key or ([cfg.data.id_column] if cfg.data.id_column else list(names))


class _Sampler(threading.Thread):
    """Samples the driver's RSS and the summed RSS/USS of its Ray worker processes, per phase."""

    def __init__(self, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.me = psutil.Process()
        self.phase = "idle"
        self.peaks: dict[str, dict[str, float]] = {}
        self._halt = threading.Event()
        self._procs: dict[int, psutil.Process] = {}

    def _workers(self) -> list[psutil.Process]:
        alive = {}
        try:
            children = self.me.children(recursive=True)
        except psutil.Error:
            return []
        for c in children:
            p = self._procs.get(c.pid, c)  # keep the same object: cmdline is cached per process
            try:
                if "ray::" in " ".join(p.cmdline()):
                    alive[c.pid] = p
            except psutil.Error:
                continue
        self._procs = alive
        return list(alive.values())

    def sample(self, uss: bool = True) -> None:
        """RSS of the driver and the workers; USS too (reads smaps: slower) when ``uss``."""
        try:
            driver = self.me.memory_info().rss
        except psutil.Error:
            return
        rss_sum = uss_sum = n = 0
        for p in self._workers():
            try:
                m = p.memory_full_info() if uss else p.memory_info()
            except psutil.Error:
                continue
            rss_sum += m.rss
            uss_sum += m.uss if uss else 0
            n += 1
        peak = self.peaks.setdefault(self.phase, {"driver_rss_mb": 0.0, "workers_rss_mb": 0.0, "workers_uss_mb": 0.0})
        peak["driver_rss_mb"] = max(peak["driver_rss_mb"], driver / MB)
        peak["workers_rss_mb"] = max(peak["workers_rss_mb"], rss_sum / MB)
        peak["workers_uss_mb"] = max(peak["workers_uss_mb"], uss_sum / MB)
        peak["workers_max"] = max(peak.get("workers_max", 0), n)

    def run(self) -> None:
        while not self._halt.is_set():
            # RSS only (/proc/PID/statm): reading smaps for USS walks a worker's page tables under
            # its mmap lock, which measurably slowed the workers; USS is taken at phase boundaries.
            self.sample(uss=False)
            self._halt.wait(self.interval)

    @contextmanager
    def during(self, phase: str):
        """Attribute samples to ``phase``; sample at entry and exit (keep timers inside)."""
        self.phase = phase
        self.sample()
        try:
            yield
        finally:
            self.sample()
            self.phase = "idle"

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _summary(times: list[float], rows: int) -> dict[str, float | list[float]]:
    best = min(times)
    return {
        "seconds": round(best, 3),
        "rows_per_s": round(rows / best),
        "all_seconds": [round(t, 3) for t in times],
        "median_rows_per_s": round(rows / statistics.median(times)),
    }


# --- baseline (child process, driven over stdin/stdout) --------------------------------------------------


def _baseline_server(path: str, prep_file: str, split_key: str) -> None:
    """Answer ``scan`` / ``prep`` / ``quit`` lines with one JSON line each."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from raypipe.data.split import SPLIT_COLUMN, add_split_column
    from raypipe.features import Preprocessor

    cfg = _config(Path(path), split_key)
    prep = Preprocessor.load(prep_file)
    dataset = pads.dataset(path, partitioning="hive")
    key = _split_key(cfg, dataset.schema.names)

    def scan() -> dict:
        t0 = time.perf_counter()
        rows = nbytes = 0
        for b in dataset.to_batches():
            rows += b.num_rows
            nbytes += b.nbytes
        return {"seconds": time.perf_counter() - t0, "rows": rows, "arrow_bytes": nbytes}

    def scan_preprocess() -> dict:
        t0 = time.perf_counter()
        rows = out_rows = 0
        for b in dataset.to_batches():
            table = add_split_column(pa.Table.from_batches([b]), key, cfg.data.split)
            out = prep.transform_batch(table, passthrough=(SPLIT_COLUMN,))
            rows += b.num_rows
            out_rows += len(out["y"])
        return {"seconds": time.perf_counter() - t0, "rows": rows, "output_rows": out_rows}

    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "scan":
            reply = scan()
        elif cmd == "prep":
            reply = scan_preprocess()
        elif cmd == "quit":
            print(json.dumps({"maxrss_mb": round(_maxrss_mb()), "pyarrow_threads": pa.cpu_count()}), flush=True)
            return
        else:
            reply = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(reply), flush=True)


class _Baseline:
    def __init__(self, path: Path, prep_file: str, split_key: str) -> None:
        cmd = [sys.executable, __file__, "--split-key", split_key, "--_baseline", str(path), prep_file]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, cmd: str) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"baseline process exited (code {self.proc.wait()}) on {cmd!r}")
        return json.loads(line)

    def close(self) -> dict:
        reply = self.ask("quit")
        self.proc.wait(timeout=60)
        return reply


# --- raypipe (driver) ---------------------------------------------------------------------------------


class _Raypipe:
    """Ray started once; validation and profile timed once; ingest+preprocess run per round."""

    def __init__(self, path: Path, args: argparse.Namespace, sampler: _Sampler, prep_file: str) -> None:
        import pyarrow as pa

        from raypipe import runtime
        from raypipe.data import ingest, validate
        from raypipe.data.profile import combine, compute_profile
        from raypipe.data.schema import infer_contract
        from raypipe.data.split import SPLIT_COLUMN, add_split_column
        from raypipe.pipeline.stages.preprocess import fit_preprocessor

        self.path, self.sampler = path, sampler
        self.cfg = cfg = _config(path, args.split_key)
        self.res: dict = {}
        with sampler.during("ray_start"):  # samples at entry and exit: outside the timed part
            t0 = time.perf_counter()
            session = runtime.connect(None, args.num_cpus, log_to_driver=False)
            self.res["ray_start_s"] = round(time.perf_counter() - t0, 3)
        self.res["ray_cpus"] = session.total_cpus

        # Stage 1: discover + validate every file (the pipeline's "ingest" stage, before the read).
        with sampler.during("validate"):
            t0 = time.perf_counter()
            source = ingest.discover(str(path), cfg.data.filter)
            validate.validate_files(source)
            self.res["validate_s"] = round(time.perf_counter() - t0, 3)
        self.res["files"] = len(source.files)

        # Stage 2: profile pass and Preprocessor fit, as the pipeline's "profile"/"preprocess" stages.
        names = cfg.data.columns or source.schema.names
        self.key = _split_key(cfg, names)
        self.res["split_key"] = self.key if len(self.key) <= 3 else f"all {len(self.key)} columns"
        with sampler.during("profile"):
            t0 = time.perf_counter()
            ds = ingest.read(source, cfg.data.columns)
            split_ds = ds.map_batches(
                add_split_column,
                batch_format="pyarrow",
                fn_kwargs={"key": self.key, "cfg": cfg.data.split},
                zero_copy_batch=True,
            )
            profile = compute_profile(split_ds, SPLIT_COLUMN, cfg.features.categorical)
            stats = combine(profile)
            schema = pa.schema([source.schema.field(n) for n in names])
            contract = infer_contract(schema, stats, profile.get("train", stats), cfg.data, cfg.features)
            self.prep = fit_preprocessor(cfg, contract, profile.get("train", stats))
            self.res["profile_s"] = round(time.perf_counter() - t0, 3)
        self.prep.save(prep_file)
        self.res["features"] = len(self.prep.feature_names)
        self.driver_before_mb = psutil.Process().memory_info().rss / MB
        self.stats_text = ""

    def run_once(self, keep_stats: bool) -> tuple[float, int]:
        """One timed ingest+preprocess, materialised as the pipeline's "preprocess" stage does."""
        from raypipe.data import ingest
        from raypipe.data.split import SPLIT_COLUMN, add_split_column

        cfg = self.cfg
        with self.sampler.during("ingest_preprocess"):
            t0 = time.perf_counter()
            source = ingest.discover(str(self.path), cfg.data.filter)
            ds = ingest.read(source, cfg.data.columns)
            split_ds = ds.map_batches(
                add_split_column,
                batch_format="pyarrow",
                fn_kwargs={"key": self.key, "cfg": cfg.data.split},
                zero_copy_batch=True,
            )
            prepared = split_ds.map_batches(
                self.prep.transform_block, batch_format="pyarrow", fn_kwargs={"passthrough": (SPLIT_COLUMN,)}
            ).materialize()
            seconds = time.perf_counter() - t0
        rows = prepared.count()  # metadata only, after materialize
        if keep_stats:
            self.res["materialized_mb"] = round(prepared.size_bytes() / MB, 1)
            self.res["num_blocks"] = prepared.num_blocks()
            self.stats_text = prepared.stats()
        del prepared
        return seconds, rows


# --- report ---------------------------------------------------------------------------------------------


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _write_results(out: Path, key: str, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {}
    if out.is_file():
        try:
            doc = json.loads(out.read_text())
        except json.JSONDecodeError:
            doc = {}
    doc.setdefault("benchmark", "ingest+preprocess vs raw pyarrow scan")
    doc.setdefault("runs", {})[key] = result
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)


def _versions() -> dict[str, str]:
    import numpy
    import pyarrow
    import ray

    return {"ray": ray.__version__, "pyarrow": pyarrow.__version__, "numpy": numpy.__version__}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=4_000_000)
    p.add_argument("--repeat", type=int, default=5, help="interleaved rounds; the best of each side is reported")
    p.add_argument("--cache-dir", type=Path, default=ROOT / ".raypipe" / "bench")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ingest.json")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local Ray (default: all cores)")
    p.add_argument(
        "--split-key",
        choices=("id", "all"),
        default="id",
        help="hash split key: the id column (data.id_column: id) or every column (no id_column)",
    )
    p.add_argument("--sample-interval", type=float, default=0.2, help="seconds between RSS samples")
    p.add_argument("--stats", action="store_true", help="print Ray Data's per-operator stats (last round)")
    p.add_argument("--_baseline", nargs=2, metavar=("PATH", "PREP"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._baseline:
        _baseline_server(args._baseline[0], args._baseline[1], args.split_key)
        return 0

    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")
    path = _ensure_data(args.rows, args.cache_dir)
    load_before = os.getloadavg()
    sampler = _Sampler(args.sample_interval)
    sampler.start()
    scan_s, prep_s, rp_s, rounds = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        prep_file = str(Path(tmp) / "prep.json")
        rp = _Raypipe(path, args, sampler, prep_file)
        base = _Baseline(path, prep_file, args.split_key)
        try:
            first = base.ask("scan")  # warms the page cache and pyarrow; not counted
            rows, arrow_bytes = first["rows"], first["arrow_bytes"]
            for i in range(args.repeat):
                scan_s.append(base.ask("scan")["seconds"])
                seconds, rp_rows = rp.run_once(keep_stats=i == args.repeat - 1)
                assert rp_rows == rows, f"raypipe produced {rp_rows} rows, the scan saw {rows}"
                rp_s.append(seconds)
                prep_s.append(base.ask("prep")["seconds"])
                rounds.append(scan_s[-1] / seconds)
        finally:
            base_end = base.close()
    sampler.stop()
    load_after = os.getloadavg()

    scan, scan_prep, ours = _summary(scan_s, rows), _summary(prep_s, rows), _summary(rp_s, rows)
    ratio = ours["rows_per_s"] / scan["rows_per_s"]
    median_ratio = statistics.median(rounds)
    matrix_mb = rows * rp.res["features"] * 4 / MB
    ip = sampler.peaks.get("ingest_preprocess", {})
    prof = sampler.peaks.get("profile", {})
    driver_growth = ip.get("driver_rss_mb", 0.0) - rp.driver_before_mb

    result = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "command": "python benchmarks/bench_ingest.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 1024**3, 1),
            "python": platform.python_version(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in load_after],
        },
        "versions": _versions(),
        "data": {
            "path": os.path.relpath(path, ROOT),
            "rows": rows,
            "files": rp.res["files"],
            "parquet_mb": round(_dir_bytes(path) / MB, 1),
            "arrow_mb": round(arrow_bytes / MB, 1),
        },
        "split_key": rp.res["split_key"],
        "rounds": args.repeat,
        "pyarrow_scan": scan,
        "pyarrow_scan_preprocess": scan_prep,
        "raypipe_ingest_preprocess": ours,
        "ratio_vs_scan": round(ratio, 3),
        "ratio_vs_scan_median_of_rounds": round(median_ratio, 3),
        "ratio_vs_scan_preprocess": round(ours["rows_per_s"] / scan_prep["rows_per_s"], 3),
        "target_ratio": 0.5,
        "meets_target": ratio >= 0.5,
        "stage_seconds": {
            "ray_start": rp.res["ray_start_s"],
            "validate_files": rp.res["validate_s"],
            "profile": rp.res["profile_s"],
            "ingest_preprocess": ours["seconds"],
            "ingest_preprocess_first_round": round(rp_s[0], 3),
        },
        "memory_mb": {
            "feature_matrix": round(matrix_mb, 1),
            "materialized_dataset": rp.res["materialized_mb"],
            "driver_peak_rss_getrusage": round(_maxrss_mb(), 1),
            "driver_rss_before_ingest_preprocess": round(rp.driver_before_mb, 1),
            "driver_peak_rss_ingest_preprocess": round(ip.get("driver_rss_mb", 0.0), 1),
            "driver_rss_growth_ingest_preprocess": round(driver_growth, 1),
            "workers_peak_rss_sum": {k: round(v["workers_rss_mb"], 1) for k, v in sampler.peaks.items()},
            "workers_uss_sum_at_phase_ends": {k: round(v["workers_uss_mb"], 1) for k, v in sampler.peaks.items()},
            "workers_max_count": {k: v.get("workers_max", 0) for k, v in sampler.peaks.items()},
            "baseline_process_maxrss": base_end["maxrss_mb"],
        },
        "ray": {"cpus": rp.res["ray_cpus"], "output_blocks": rp.res["num_blocks"]},
        "features": rp.res["features"],
    }
    _write_results(args.out, str(rows) if args.split_key == "id" else f"{rows} split-key {args.split_key}", result)

    print()
    print(
        f"ingest benchmark: {rows:,} rows, {rp.res['files']} files, {result['data']['parquet_mb']} MB Parquet, ", end=""
    )
    print(f"{rp.res['features']} features, split key {rp.res['split_key']}, best of {args.repeat} interleaved rounds")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    print()
    print(
        _table(
            [
                ("measurement", "seconds", "rows/s", "vs scan"),
                ("pyarrow scan (baseline)", f"{scan['seconds']:.3f}", f"{scan['rows_per_s']:,}", "1.00x"),
                (
                    "pyarrow scan + split + transform (1 process)",
                    f"{scan_prep['seconds']:.3f}",
                    f"{scan_prep['rows_per_s']:,}",
                    f"{scan_prep['rows_per_s'] / scan['rows_per_s']:.2f}x",
                ),
                (
                    "raypipe ingest+preprocess (Ray Data)",
                    f"{ours['seconds']:.3f}",
                    f"{ours['rows_per_s']:,}",
                    f"{ratio:.2f}x",
                ),
            ]
        )
    )
    print()
    print(
        _table(
            [
                ("raypipe stage", "seconds"),
                ("ray start (excluded)", f"{rp.res['ray_start_s']:.3f}"),
                ("validate_files", f"{rp.res['validate_s']:.3f}"),
                ("profile + fit", f"{rp.res['profile_s']:.3f}"),
                ("ingest+preprocess (best round)", f"{ours['seconds']:.3f}"),
                ("ingest+preprocess (first round)", f"{rp_s[0]:.3f}"),
            ]
        )
    )
    print()
    mem = result["memory_mb"]
    print(
        _table(
            [
                ("memory", "MB"),
                ("feature matrix (rows x features x 4 B)", f"{mem['feature_matrix']:.0f}"),
                ("decoded Arrow data", f"{result['data']['arrow_mb']:.0f}"),
                ("materialized dataset (object store)", f"{mem['materialized_dataset']:.0f}"),
                ("driver peak RSS (getrusage, whole run)", f"{mem['driver_peak_rss_getrusage']:.0f}"),
                ("driver RSS before ingest+preprocess", f"{mem['driver_rss_before_ingest_preprocess']:.0f}"),
                ("driver RSS growth during ingest+preprocess", f"{driver_growth:.0f}"),
                ("Ray workers peak RSS sum, ingest+preprocess", f"{ip.get('workers_rss_mb', 0):.0f}"),
                ("Ray workers USS sum (phase ends), ingest+preprocess", f"{ip.get('workers_uss_mb', 0):.0f}"),
                ("Ray workers USS sum (phase ends), profile", f"{prof.get('workers_uss_mb', 0):.0f}"),
                ("pyarrow baseline process peak RSS", f"{base_end['maxrss_mb']:.0f}"),
            ]
        )
    )
    print()
    verdict = "met" if ratio >= 0.5 else "NOT met"
    print(
        f"ratio raypipe / pyarrow scan: {ratio:.2f}x best rounds, {median_ratio:.2f}x median round (target >= 0.50x: ",
        end="",
    )
    print(f"{verdict})")
    held = driver_growth < 0.1 * matrix_mb
    print(
        f"driver holds the dataset: {'no' if held else 'POSSIBLY'} "
        f"(RSS growth {driver_growth:.0f} MB vs feature matrix {matrix_mb:.0f} MB)"
    )
    print(f"results: {os.path.relpath(args.out, ROOT)}")
    if args.stats:
        print()
        print(rp.stats_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
