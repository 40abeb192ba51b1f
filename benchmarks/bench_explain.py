"""Explanations against plain prediction, in process: the cost per record of ``pred_contribs``.

    python benchmarks/bench_explain.py

Two models: the tests' tiny one (3 fields, 10 trees; ``tests/_serving.py``) and the serving
benchmarks' (8 fields, 100 trees of depth 6; ``_bench_model.py``). For 1, 16 and 1,000 records per
call, two levels, each the median of calls made in turns (predict, explain, ...) for ``--budget-s``:

- ``core``: ``Bundle.predict_table`` (preprocessor + ``inplace_predict``) against
  ``Bundle.explain_table`` (preprocessor + DMatrix + ``pred_contribs`` + the sum per field);
- ``api``: ``Model.predict`` against ``Model.explain`` (validation, the answer's dicts: what
  ``/predict`` and ``/explain`` do besides HTTP; ``explain`` also predicts).

Also the additivity error on 1,000 records: max |base + sum(contributions) - XGBoost's
``output_margin``|. XGBoost runs on ``--nthread`` threads (default 1: with two threads on a
shared 2-core machine, OpenMP barriers stalled single calls for 10-20 ms). Writes
``benchmarks/results/explain.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

SIZES = (1, 16, 1000)


def _per_call_s(plain, explained, arg, budget_s: float) -> tuple[float, float]:
    """Median seconds per call of ``plain(arg)`` and ``explained(arg)``, called in turns for about
    ``budget_s``: the machine is shared, and the median of interleaved calls shrugs off its bursts."""
    import statistics

    plain(arg), explained(arg)  # warm: first-call allocations, lazy imports
    times: tuple[list[float], list[float]] = ([], [])
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end or len(times[1]) < 5:
        for fn, out in ((plain, times[0]), (explained, times[1])):
            t0 = time.perf_counter()
            fn(arg)
            out.append(time.perf_counter() - t0)
    return statistics.median(times[0]), statistics.median(times[1])


def _additivity(bundle, table) -> float:
    import numpy as np
    import xgboost

    prep = bundle.preprocessor
    ex = bundle.explain_table(table)
    dm = xgboost.DMatrix(prep.transform_features(table), feature_types=prep.feature_types, enable_categorical=True)
    margin = bundle.model.predict(dm, output_margin=True)
    return float(np.abs(ex.base + ex.contributions.sum(axis=1) - margin).max())


def _measure(name: str, folder: Path, table, budget_s: float, nthread: int) -> dict:
    from raypipe.model import Bundle, Model

    bundle = Bundle.load(folder)
    bundle.model.set_param({"nthread": nthread})
    model = Model(bundle, uri=str(folder))
    out: dict = {"trees": bundle.model.num_boosted_rounds(), "fields": len(bundle.contract.feature_names)}
    for n in SIZES:
        rows = table.slice(0, n)
        records = rows.to_pylist()
        row = {}
        for level, (plain, explained, arg) in {
            "core": (bundle.predict_table, bundle.explain_table, rows),
            "api": (model.predict, model.explain, records),
        }.items():
            p, e = _per_call_s(plain, explained, arg, budget_s)
            row[level] = {
                "predict_us_per_record": round(p / n * 1e6, 2),
                "explain_us_per_record": round(e / n * 1e6, 2),
                "ratio": round(e / p, 2),
            }
            print(
                f"{name:>6} {n:>5} records/call {level:>4}: predict {p / n * 1e6:9.1f} us/record, "
                f"explain {e / n * 1e6:9.1f} us/record, {e / p:6.2f}x",
                flush=True,
            )
        out[str(n)] = row
    out["additivity_max_abs_error"] = _additivity(bundle, table.slice(0, 1000))
    print(f"{name:>6} additivity: max |base + sum - margin| = {out['additivity_max_abs_error']:.2e}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=2.0, help="seconds per model, size and level")
    p.add_argument("--nthread", type=int, default=1, help="XGBoost threads (1: steady on a shared machine)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "explain.json")
    args = p.parse_args()

    import _bench_model
    import _serving

    with tempfile.TemporaryDirectory(prefix="raypipe-bench-explain-") as tmp:
        tiny = Path(tmp) / "tiny"
        _serving.write_tiny_bundle(tiny)
        big = _bench_model.build_bundle(Path(tmp) / "trees100")
        models = {
            "tiny": _measure(
                "tiny", tiny, _serving.tiny_table(1000, seed=9).drop(["delayed"]), args.budget_s, args.nthread
            ),
            "100 trees": _measure(
                "100t", big, _bench_model.table(1000, seed=9).drop(["y"]), args.budget_s, args.nthread
            ),
        }
    doc = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count()},
        "records_per_call": list(SIZES),
        "statistic": "median seconds per call / records, predict and explain called in turns",
        "xgboost_nthread": args.nthread,
        "models": models,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results: {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
