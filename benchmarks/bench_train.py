"""XGBoost training: raypipe's Ray Data + Ray Train path against a well-written plain script, same run.

    python benchmarks/bench_train.py --rows 1000000 4000000
    python benchmarks/bench_train.py --tune          # Tune overhead vs the ideal

Both sides train on the same synthetic Parquet (``raypipe datasets synth`` layout: 20 float32
numeric + 4 string categorical features), the same train/valid/test rows (raypipe's hash split on
``id``), the same params (hist, depth 8, eta 0.1, max_bin 256, native categoricals, logloss+AUC on
the valid split each round), the same rounds (no early stopping) and every core.

- baseline (a child process, so its peak RSS is its own): pyarrow reads the files -> split ->
  NumPy float32 (categoricals as dictionary codes) -> ``QuantileDMatrix`` (nthread = all cores) ->
  ``xgboost.train`` -> test AUC.
- raypipe: ``ingest.read`` -> split column -> ``Preprocessor.transform_batch`` -> split files
  (``splitfiles.write_splits``, as ``raypipe.pipeline`` makes them on one machine) ->
  ``raypipe.train.fit_model`` (Ray Train, one worker per node with every budgeted CPU, mapping its
  files) -> test AUC. Ray start-up and the profile pass that fits the
  preprocessor are timed separately and not in the ratio (the baseline's vocabulary comes free with
  its dictionary encoding; raypipe's profile is shared with the quality gate).

Memory: the baseline's ``ru_maxrss``, and that less its RSS after imports. For raypipe the peak,
sampled each second, of the memory of the driver and every process under it (raylet, workers): each
process's anonymous memory, plus the object store's resident pages (see ``_MemSampler``),
and that peak less the same sum with Ray idle before ingest. Of that, what scales with the data:
the object store's growth plus the Train worker's memory beyond its size on a tiny dataset (Ray
Train's helper actors, the worker's interpreter and libraries cost the same at any size). Page
cache is not counted (the kernel drops it under pressure); the Train worker's file-backed resident
pages are recorded apart (``train_worker_files``) to show the mapped split files do not pile up.
Reference: the feature matrix's size (rows x features x 4 bytes).

Tune (``--tune``): a FIFO search whose trials each run >= 10 s; overhead = search wall / (sum of the
trials' own times / concurrency) - 1.
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
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024
PARAMS = {"max_depth": 8, "eta": 0.1, "max_bin": 256, "tree_method": "hist", "max_cat_to_onehot": 1}


def _data(rows: int, cache: Path) -> Path:
    from raypipe.data.datasets.synth import write_synth

    for d in (Path("/work/main/.raypipe/bench") / f"synth-{rows}", cache / f"synth-{rows}"):
        if d.is_dir():
            return d
    return write_synth(cache / f"synth-{rows}", rows)


def _config(path: Path, rounds: int, work: Path):
    from raypipe.config import load_config

    return load_config(
        raw={
            "name": "bench",
            "data": {"path": str(path), "label": "label", "id_column": "id", "validate_files": False},
            # The synthetic layout's hive partition is not a feature (the baseline has 24 too).
            "features": {"exclude": ["part"]},
            "train": {"num_boost_round": rounds, "early_stopping_rounds": None, "params": PARAMS},
            "serve": {"enabled": False},
            "runtime": {"work_dir": str(work)},
        }
    )


# --- baseline ---------------------------------------------------------------------------------------


def baseline(path: str, rounds: int) -> dict:
    """The plain script: pyarrow -> NumPy -> QuantileDMatrix -> xgboost.train (runs in a child process)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import xgboost
    from sklearn.metrics import roc_auc_score

    from raypipe.config import SplitConfig
    from raypipe.data.split import assign

    idle_rss_mb = _rss_mb()  # interpreter + pyarrow + xgboost + scikit-learn, before any data
    t0 = time.perf_counter()
    table = pads.dataset(path, format="parquet", partitioning="hive").to_table()
    split = np.asarray(assign(table, ["id"], SplitConfig()))
    names = [n for n in table.column_names if n.startswith(("num_", "cat_"))]
    X = np.empty((table.num_rows, len(names)), dtype=np.float32, order="F")
    for j, n in enumerate(names):
        col = table.column(n)
        if n.startswith("cat_"):
            codes = pc.dictionary_encode(col).combine_chunks().indices
            X[:, j] = codes.to_numpy(zero_copy_only=False).astype(np.float32)
            X[np.asarray(codes.is_null()), j] = np.nan
        else:
            X[:, j] = pc.fill_null(col, np.nan).to_numpy()
    X = np.ascontiguousarray(X)
    y = table.column("label").to_numpy().astype(np.float32)
    del table
    parts = {i: (X[split == i], y[split == i]) for i in range(3)}
    del X, y
    ftypes = ["c" if n.startswith("cat_") else "q" for n in names]
    t1 = time.perf_counter()
    nthread = os.cpu_count()
    dtrain = xgboost.QuantileDMatrix(
        *parts[0], feature_types=ftypes, enable_categorical=True, max_bin=256, nthread=nthread
    )
    dvalid = xgboost.QuantileDMatrix(*parts[1], feature_types=ftypes, enable_categorical=True, ref=dtrain)
    t2 = time.perf_counter()
    params = {**PARAMS, "objective": "binary:logistic", "eval_metric": ["logloss", "auc"], "nthread": nthread}
    bst = xgboost.train(params, dtrain, rounds, evals=[(dvalid, "valid")], verbose_eval=False)
    t3 = time.perf_counter()
    Xt, yt = parts[2]
    auc = roc_auc_score(yt, bst.inplace_predict(Xt, validate_features=False))
    t4 = time.perf_counter()
    return {
        "ingest_s": t1 - t0,
        "dmatrix_s": t2 - t1,
        "boost_s": t3 - t2,
        "predict_s": t4 - t3,
        "wall_s": t4 - t0,
        "test_auc": float(auc),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "idle_rss_mb": idle_rss_mb,
        "features": len(names),
        "nthread": nthread,
        "pyarrow_threads": pa.cpu_count(),
    }


# --- raypipe ----------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:")) / 1024


def _role(cmd: str) -> str:
    if cmd.startswith("ray::RayTrainWorker"):
        return "train_worker"
    if cmd.startswith(_TRAIN_HELPERS):
        return "train_helpers"
    if cmd.startswith("ray::"):
        return "ray_workers"
    return "ray_system"


_TRAIN_HELPERS = tuple(
    f"ray::{n}"
    for n in (
        "TrainController",
        "SynchronizationActor",
        "PlacementGroupCleaner",
        "DatasetManager",
        "PreemptionWatcher",
        "TrainStateActor",
    )
)


class _MemSampler(threading.Thread):
    """Peak memory of this process and every process under it (raylet, Ray workers), each second.

    Each page counted once: every process's anonymous resident memory (its heap: Ray workers are
    not forked from one another, so it is private), plus the pages the object store holds (its
    /dev/shm file's allocated size, read through the raylet's mapping). A process's mapped
    object-store pages are shared memory, left out of its own figure; the store's file counts pages
    no live process maps too (blocks whose writer has exited, freed blocks: the store reuses freed
    space and never returns it). Shared libraries' pages (page cache) are not counted. Read from
    /proc/<pid>/status, not smaps: walking every process's page tables each second cost ~40 ms of
    CPU per sample, time taken from the training it measures. ``roles`` splits the sum: driver,
    object store, Ray Train's worker, its helper actors (controller, sync, placement-group cleaner,
    dataset manager, preemption watcher), other Ray workers, and Ray's own daemons.
    """

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.interval, self._halt = interval, threading.Event()
        self.peak, self.peak_roles, self.role_peaks = 0.0, {}, {}
        self._store: str | None = None
        self._roles: dict[int, str] = {}

    def _store_mb(self, procs) -> float | None:
        """Allocated size of the object store's file, or None where its mapping can't be read."""
        if self._store is None:
            for p in procs:
                try:
                    if p.name() != "raylet":
                        continue
                    with open(f"/proc/{p.pid}/maps") as f:
                        for ln in f:
                            if "/plasma" in ln:
                                self._store = f"/proc/{p.pid}/map_files/{ln.split()[0]}"
                                break
                except Exception:  # noqa: BLE001 - psutil's errors: gone, or not ours
                    pass
        try:
            return os.stat(self._store).st_blocks * 512 / MB if self._store else None
        except OSError:
            return None

    def _role(self, pid: int, me: int) -> str:
        # A process's title changes as it becomes a Ray worker, then an actor: cache only final ones.
        role = self._roles.get(pid)
        if role is None:
            with open(f"/proc/{pid}/cmdline") as f:
                role = "driver" if pid == me else _role(f.read().split("\0")[0])
            if role.startswith(("train_", "driver")):
                self._roles[pid] = role
        return role

    def sample(self) -> tuple[float, dict[str, float]]:
        """(total MB, MB by role)."""
        import psutil

        me = psutil.Process()
        procs = me.children(recursive=True)
        roles: dict[str, float] = {}
        worker_files = 0.0
        for p in [me, *procs]:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    rss = {ln.split(":")[0]: int(ln.split()[1]) / 1024 for ln in f if ln.startswith("Rss")}
                anon = rss["RssAnon"]
                role = self._role(p.pid, me.pid)
            except (OSError, KeyError):
                continue
            roles[role] = roles.get(role, 0.0) + anon
            if role == "train_worker":
                worker_files += rss.get("RssFile", 0.0)
        store = self._store_mb(procs)
        roles["object_store"] = store or 0.0
        total = sum(roles.values())
        # Not in the total: the worker's file-backed pages (its libraries, and the split files it maps
        # one at a time), recorded to show the mapped files do not pile up in it.
        roles["train_worker_files"] = worker_files
        return total, roles

    def settle(self, timeout: float = 30.0) -> tuple[float, dict[str, float]]:
        """Wait for Ray to go idle: its pooled workers keep Arrow's memory of the last pass (hundreds of
        MB at 4 M rows) for seconds, or exit; an idle figure taken before would make the peak over it
        look smaller by as much. Returns the sample once it has not fallen by 10 MB for 3 s."""
        deadline = time.monotonic() + timeout
        low = self.sample()
        since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < 3.0:
            time.sleep(0.5)
            now = self.sample()
            if now[0] < low[0] - 10:
                low, since = now, time.monotonic()
        return low

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            total, roles = self.sample()
            for k, v in roles.items():
                self.role_peaks[k] = max(self.role_peaks.get(k, 0.0), v)
            if total > self.peak:
                self.peak, self.peak_roles = total, roles

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak


def raypipe_path(path: Path, rounds: int, work: Path) -> dict:
    from raypipe import runtime
    from raypipe.data import ingest, splitfiles
    from raypipe.data.profile import SPLIT_NAMES, combine, compute_profile
    from raypipe.data.schema import infer_contract
    from raypipe.data.split import SPLIT_COLUMN, add_split_column
    from raypipe.pipeline.stages.evaluate import score_test_split
    from raypipe.pipeline.stages.preprocess import fit_preprocessor
    from raypipe.train import fit_model

    cfg = _config(path, rounds, work)
    t = time.perf_counter()
    session = runtime.connect(None, None, log_to_driver=False)
    ray_start_s = time.perf_counter() - t
    source = ingest.discover(str(path), None)

    def split_ds():
        ds = ingest.read(source, None)
        fn = {"key": ["id"], "cfg": cfg.data.split}
        return ds.map_batches(add_split_column, batch_format="pyarrow", fn_kwargs=fn, zero_copy_batch=True)

    t = time.perf_counter()
    profile = compute_profile(split_ds(), SPLIT_COLUMN, [])
    stats = combine(profile)
    import pyarrow as pa

    schema = pa.schema([source.schema.field(n) for n in source.schema.names])
    contract = infer_contract(schema, stats, profile["train"], cfg.data, cfg.features)
    prep = fit_preprocessor(cfg, contract, profile["train"])
    profile_s = time.perf_counter() - t
    sampler = _MemSampler()
    idle, idle_roles = sampler.settle()
    sampler.start()
    t0 = time.perf_counter()
    # As raypipe's preprocess stage makes them on one machine: split files, memory-mapped by the worker.
    parts = splitfiles.write_splits(split_ds(), prep, SPLIT_COLUMN, SPLIT_NAMES, work / "splits")
    t1 = time.perf_counter()
    budget = runtime.CpuBudget.plan(session, cfg.train, cfg.runtime.data_cpus, 0.0)
    fit = fit_model(parts, prep, contract, cfg, budget, str(work / "train"), f"bench-{int(time.time())}")
    t2 = time.perf_counter()
    report = score_test_split(fit.model, parts["test"], contract, cfg.evaluate.primary_metric).report
    t3 = time.perf_counter()
    peak = sampler.stop()
    session.shutdown()
    load_s, boost_s = fit.metrics.get("load_s", 0.0), fit.metrics.get("boost_s", 0.0)
    return {
        "ingest_s": t1 - t0,
        "train_s": t2 - t1,
        "dmatrix_s": load_s,
        "boost_s": boost_s,
        "train_other_s": (t2 - t1) - load_s - boost_s,
        "train_startup_s": fit.metrics.get("startup_s"),
        "train_winddown_s": fit.metrics.get("winddown_s"),
        "predict_s": t3 - t2,
        "wall_s": t3 - t0,
        "test_auc": report.metrics["auc"],
        "peak_mb": peak,
        "idle_mb": idle,
        "peak_over_idle_mb": peak - idle,
        "peak_roles_mb": sampler.peak_roles,
        "role_peaks_mb": sampler.role_peaks,
        "idle_roles_mb": idle_roles,
        "ray_start_s": ray_start_s,
        "profile_s": profile_s,
        "features": len(prep.feature_names),
        "budget": f"{budget.num_workers} worker(s) x {budget.cpus_per_worker:g} CPU, nthread={budget.nthread}",
    }


def _in_child(fn: str, *args) -> dict:
    """Run ``fn(*args)`` of this module in a fresh interpreter; its JSON result is the last line."""
    code = f"import json,sys; sys.path.insert(0,{str(ROOT)!r}); from benchmarks.bench_train import {fn}; "
    code += f"print(json.dumps({fn}(*{args!r})))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    if out.returncode:
        raise RuntimeError(f"{fn} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _raypipe_child(path: str, rounds: int, work: str) -> dict:
    return raypipe_path(Path(path), rounds, Path(work))


# --- Tune overhead ---------------------------------------------------------------------------------


def tune_overhead(rows: int, trials: int, rounds: int, work: str) -> dict:
    """A FIFO search (no pruning, so every trial runs its full length) over eta; trials >= 10 s."""
    import ray

    from raypipe import runtime
    from raypipe.config import load_config
    from raypipe.train import tune as tune_mod
    from raypipe.train.common import Arrays

    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 28)).astype(np.float32)
    y = (X[:, :5].sum(axis=1) + rng.normal(size=rows) > 0).astype(np.float32)
    n = int(rows * 0.9)
    data = {"train": Arrays(X[:n], y[:n]), "valid": Arrays(X[n:], y[n:])}
    cfg = load_config(
        raw={
            "data": {"path": "x", "label": "y"},
            "train": {"num_boost_round": rounds, "early_stopping_rounds": None, "params": {"max_depth": 8}},
            "tune": {
                "enabled": True,
                "num_samples": trials,
                "scheduler": "fifo",
                "search_space": {"eta": {"loguniform": [0.05, 0.3]}},
            },
        }
    )
    session = runtime.connect(None, None, log_to_driver=False)
    budget = runtime.CpuBudget.plan(session, cfg.train, cfg.runtime.data_cpus, 0.0)
    plan = tune_mod.TrialPlan("binary", 2, "valid_auc", "max", cfg.train, 10, rounds, 1, None, None)
    summary = tune_mod.search(
        plan,
        cfg.tune,
        data,
        budget=budget,
        storage_path=str(Path(work) / "tune"),
        experiment_name=f"t{time.time():.0f}",
    )
    ray.shutdown()
    trial_s = [t["trial_s"] for t in summary["trials"]]
    ideal = sum(trial_s) / summary["concurrency"]
    return {
        "trials": len(trial_s),
        "concurrency": summary["concurrency"],
        "trial_s_min": min(trial_s),
        "trial_s_sum": sum(trial_s),
        "ideal_s": ideal,
        "search_wall_s": summary["wall_s"],
        "overhead": summary["wall_s"] / ideal - 1,
    }


# --- main -------------------------------------------------------------------------------------------


TINY_ROWS = 20_000


def _data_mb(ours: dict, tiny: dict) -> float:
    """What grows with the data: the object store's growth, and the Train worker's memory beyond
    what it takes on a tiny dataset. Ray Train's helper actors, the driver and Ray's daemons cost
    the same whatever the size (see the roles at the peak)."""
    store = ours["role_peaks_mb"]["object_store"] - ours["idle_roles_mb"]["object_store"]
    worker = ours["role_peaks_mb"].get("train_worker", 0.0) - tiny["role_peaks_mb"].get("train_worker", 0.0)
    return store + worker


def _roles(ours: dict) -> str:
    over = {
        k: v - ours["idle_roles_mb"].get(k, 0.0) for k, v in ours["peak_roles_mb"].items() if k != "train_worker_files"
    }
    return "(over idle: " + ", ".join(f"{k} {v:+.0f}" for k, v in sorted(over.items(), key=lambda kv: -kv[1])) + ")"


def _write(out: Path, key: str, result: dict) -> None:
    data = json.loads(out.read_text()) if out.exists() else {}
    data[key] = result
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--tune", action="store_true", help="measure Tune overhead instead")
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".raypipe" / "bench")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train.json")
    args = ap.parse_args(argv)
    meta = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as work:
        if args.tune:
            r = {**meta, **_in_child("tune_overhead", 400_000, 6, 200, str(work))}
            print(
                f"tune: {r['trials']} trials (min {r['trial_s_min']:.1f}s each), concurrency {r['concurrency']}: "
                f"search {r['search_wall_s']:.1f}s vs ideal {r['ideal_s']:.1f}s -> overhead {r['overhead']:+.1%}"
            )
            _write(args.out, "tune", r)
            return 0
        # What a fit costs whatever the data size (Ray Train's actors, the worker's interpreter and
        # libraries): the same path on a tiny dataset.
        tiny = _in_child("_raypipe_child", str(_data(TINY_ROWS, args.cache_dir)), args.rounds, work)
        fixed_mb = tiny["peak_over_idle_mb"]
        print(f"a fit on {TINY_ROWS:,} rows: {fixed_mb:.0f} MB over idle Ray {_roles(tiny)}")
        for rows in args.rows:
            path = _data(rows, args.cache_dir)
            base = _in_child("baseline", str(path), args.rounds)
            ours = _in_child("_raypipe_child", str(path), args.rounds, work)
            feature_mb = rows * base["features"] * 4 / MB
            r = {
                **meta,
                "rows": rows,
                "rounds": args.rounds,
                "feature_mb": feature_mb,
                "baseline": base,
                "raypipe": ours,
                "wall_ratio": ours["wall_s"] / base["wall_s"],
                "auc_diff": ours["test_auc"] - base["test_auc"],
                "peak_over_idle_vs_features": ours["peak_over_idle_mb"] / feature_mb,
                "tiny_rows": TINY_ROWS,
                "tiny_peak_over_idle_mb": fixed_mb,
                "tiny_role_peaks_mb": tiny["role_peaks_mb"],
                "data_mb": _data_mb(ours, tiny),
                "data_vs_features": _data_mb(ours, tiny) / feature_mb,
                "baseline_peak_vs_features": base["peak_rss_mb"] / feature_mb,
                "baseline_over_idle_vs_features": (base["peak_rss_mb"] - base["idle_rss_mb"]) / feature_mb,
            }
            _write(args.out, str(rows), r)
            print(f"\n{rows:,} rows x {base['features']} features ({feature_mb:.0f} MB), {args.rounds} rounds, depth 8")
            print(
                f"{'':10} {'ingest':>8} {'DMatrix':>8} {'boost':>8} {'other':>8} {'wall':>8} {'AUC':>8} {'peak MB':>9}"
            )
            print(
                f"{'baseline':10} {base['ingest_s']:8.1f} {base['dmatrix_s']:8.1f} {base['boost_s']:8.1f} "
                f"{base['predict_s']:8.1f} {base['wall_s']:8.1f} {base['test_auc']:8.4f} {base['peak_rss_mb']:9.0f}"
            )
            other = ours["train_other_s"] + ours["predict_s"]
            store = ours["role_peaks_mb"]["object_store"] - ours["idle_roles_mb"]["object_store"]
            worker, worker_tiny = (x["role_peaks_mb"].get("train_worker", 0.0) for x in (ours, tiny))
            print(
                f"{'raypipe':10} {ours['ingest_s']:8.1f} {ours['dmatrix_s']:8.1f} {ours['boost_s']:8.1f} "
                f"{other:8.1f} {ours['wall_s']:8.1f} {ours['test_auc']:8.4f} {ours['peak_mb']:9.0f}"
            )
            print(
                f"ratio {r['wall_ratio']:.2f}x, AUC diff {r['auc_diff']:+.4f} ({ours['budget']}; other: Ray Train "
                f"start-up {ours['train_startup_s'] or 0:.1f}s, wind-down {ours['train_winddown_s'] or 0:.1f}s, test "
                f"predictions {ours['predict_s']:.1f}s; not in wall: Ray up {ours['ray_start_s']:.1f}s, profile "
                f"{ours['profile_s']:.1f}s)"
            )
            print(
                f"memory vs features: baseline peak {r['baseline_peak_vs_features']:.2f}x "
                f"({r['baseline_over_idle_vs_features']:.2f}x over its {base['idle_rss_mb']:.0f} MB after imports); "
                f"raypipe over idle Ray {ours['peak_over_idle_mb']:.0f} MB = {r['peak_over_idle_vs_features']:.2f}x, "
                f"of which scales with the data {r['data_mb']:.0f} MB = {r['data_vs_features']:.2f}x (object store "
                f"+{store:.0f} MB, Train worker {worker:.0f} MB vs {worker_tiny:.0f} MB on {TINY_ROWS:,} rows); "
                f"at the peak {_roles(ours)}; the worker's file-backed pages peaked at "
                f"{ours['role_peaks_mb'].get('train_worker_files', 0.0):.0f} MB (libraries + the mapped file in use)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
