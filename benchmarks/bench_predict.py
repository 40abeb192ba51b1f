"""Batch scoring: ``raypipe predict`` (Ray Data, actor pool) against in-process ``inplace_predict``.

    flock /tmp/raypipe-heavy.lock python benchmarks/bench_predict.py --rows 2000000

Same hive-partitioned Parquet, same model (``_bench_model``: 8 features, 100 trees), same output
(input columns + ``prediction`` + ``score``, written as Parquet), same run, ``--repeat`` interleaved
rounds; best round of each side.

- baseline: one process, per input file ``pq.read_table`` -> ``score_table`` (the preprocessor +
  ``inplace_predict``, XGBoost on all cores) -> ``pq.write_table``.
- raypipe: ``score_parquet`` on a local Ray with 2 CPUs (started once, not timed): read_parquet ->
  ``map_batches(_Scorer, concurrency=2)`` (actor start and model load timed) -> ``write_parquet``
  partitioned like the input.

Target: raypipe rows/s >= 0.6x the baseline. Results: ``benchmarks/results/predict.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def _write_input(folder: Path, rows: int, parts: int) -> None:
    import pyarrow.parquet as pq
    from _bench_model import table

    for i in range(parts):
        (folder / f"part={i}").mkdir(parents=True)
        pq.write_table(table(rows // parts, seed=i).drop(["y"]), folder / f"part={i}" / "data.parquet")


def _baseline(bundle_dir: str, data: Path, out: Path) -> float:
    import pyarrow.parquet as pq

    from raypipe.registry import load_model
    from raypipe.serve.batch import score_table

    t0 = time.perf_counter()
    bundle = load_model(bundle_dir).bundle
    for f in sorted(data.rglob("*.parquet")):
        scored = score_table(bundle, pq.read_table(f))
        dst = out / f.parent.name
        dst.mkdir(parents=True, exist_ok=True)
        pq.write_table(scored, dst / "scored.parquet")
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--parts", type=int, default=8)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict.json")
    args = p.parse_args()

    import ray
    from _bench_model import build_bundle

    from raypipe.serve.batch import score_parquet

    os.environ.pop("RAY_ADDRESS", None)
    with tempfile.TemporaryDirectory(prefix="raypipe-bench-predict-") as tmp:
        root = Path(tmp)
        bundle = str(build_bundle(root / "bundle"))
        data = root / "input"
        _write_input(data, args.rows, args.parts)
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        base_s, ray_s = [], []
        try:
            for r in range(args.repeat):
                out = root / f"base-{r}"
                base_s.append(_baseline(bundle, data, out))
                shutil.rmtree(out)
                res = score_parquet(bundle, None, str(data), str(root / f"ray-{r}"), actors=args.actors)
                assert res.rows == args.rows, res
                ray_s.append(res.seconds)
                shutil.rmtree(root / f"ray-{r}")
                print(
                    f"round {r}: in-process {args.rows / base_s[-1]:,.0f} rows/s, "
                    f"raypipe {args.rows / ray_s[-1]:,.0f} rows/s",
                    flush=True,
                )
        finally:
            ray.shutdown()
    best_base, best_ray = args.rows / min(base_s), args.rows / min(ray_s)
    doc = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count()},
        "rows": args.rows,
        "files": args.parts,
        "actors": args.actors,
        "in_process_rows_per_s": round(best_base),
        "raypipe_rows_per_s": round(best_ray),
        "ratio": round(best_ray / best_base, 3),
        "rounds_s": {"in_process": [round(s, 2) for s in base_s], "raypipe": [round(s, 2) for s in ray_s]},
        "target": ">= 0.6",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"raypipe predict / in-process: {doc['ratio']:.2f}x ({best_ray:,.0f} vs {best_base:,.0f} rows/s)")
    print(f"results: {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
