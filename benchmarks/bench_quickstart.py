"""The quickstart as a user waits for it: ``raypipe run jobs/flights.yaml`` from a fresh clone.

Clones this checkout's HEAD into a temporary folder and, there, times three whole processes
(start to exit) with the current Python environment:

1. the first run (builds the flights dataset, trains, registers, serves, answers one request);
2. ``--no-cache`` (every stage recomputed, the dataset already built);
3. the same command again (every cacheable stage reused).

Writes ``benchmarks/results/quickstart.json`` (wall times, per-stage seconds, test AUC) and prints
the README's table. The install is not timed: ``pip install -e .`` depends on the package index.

    python benchmarks/bench_quickstart.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = (("first run (fresh clone)", []), ("--no-cache rerun", ["--no-cache"]), ("cached rerun", []))


def _run(clone: Path, extra: list[str], label: str) -> dict:
    summary = clone / f"summary-{len(extra)}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, "-m", "raypipe", "run", "jobs/flights.yaml", "--summary-json", str(summary), *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAYPIPE_HOME")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{label} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(summary.read_text())
    stages = result["stage_seconds"]
    return {
        "label": label,
        "command": " ".join(["raypipe", *cmd[3:5], *extra]),
        "wall_s": round(wall, 2),
        "inside_run_s": round(sum(stages.values()), 2),
        "stage_s": stages,
        "cached_stages": result["cached_stages"],
        "test_auc": result["metrics"].get("test_auc"),
        "model_version": result["model_version"],
        "served": bool(result.get("prediction")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quickstart.json")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="raypipe-quickstart-") as tmp:
        clone = Path(tmp) / "raypipe"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        runs = [_run(clone, extra, label) for label, extra in RUNS]
    results = {
        "benchmark": "quickstart",
        "commit": commit,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"wrote {args.out}")


def table(results: dict) -> str:
    """The README's quickstart table, from a results file."""
    order = ("ray", "ingest", "profile", "quality", "preprocess", "train", "evaluate", "register", "report", "serve")
    lines = [
        "| `raypipe run jobs/flights.yaml` | wall, whole process | inside the run | per stage (s) | test AUC |",
        "|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        stages = ", ".join(
            f"{s} {r['stage_s'][s]:.1f}{' ↺' if s in r['cached_stages'] else ''}" for s in order if s in r["stage_s"]
        )
        lines.append(
            f"| {r['label']} | **{r['wall_s']:.1f} s** | {r['inside_run_s']:.1f} s | {stages} | {r['test_auc']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
