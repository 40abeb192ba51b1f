"""A small Tune search in its own process and its own local Ray (the test kills it and runs it again).

python _tune_job.py STORAGE_DIR EXPERIMENT_NAME SUMMARY_JSON

RAYPIPE_TEST_UPLOAD_DELAY_S=0.5 makes each of the driver's uploads to storage (the experiment state's) that
much slower, like a remote storage path would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from _train_data import arrays

from raypipe import runtime
from raypipe.config import load_config
from raypipe.runtime import CpuBudget
from raypipe.train import tune as tune_mod
from raypipe.train.common import Arrays

TRIALS = 6


def _slow_uploads(delay_s: float) -> None:
    import ray.train._internal.storage as storage  # the syncer looks this function up on each upload

    upload = storage._upload_to_fs_path

    def slow(*args, **kwargs):
        time.sleep(delay_s)
        return upload(*args, **kwargs)

    storage._upload_to_fs_path = slow


def main(storage: str, name: str, out: str) -> None:
    if os.environ.get("RAYPIPE_TEST_UPLOAD_DELAY_S"):
        _slow_uploads(float(os.environ["RAYPIPE_TEST_UPLOAD_DELAY_S"]))
    X, y = arrays(150_000)
    data = {"train": Arrays(X[:140_000], y[:140_000]), "valid": Arrays(X[140_000:], y[140_000:])}
    cfg = load_config(
        raw={
            "data": {"path": "x", "label": "y"},
            "train": {"num_boost_round": 300, "early_stopping_rounds": None, "params": {"max_depth": 6}},
            "tune": {
                "enabled": True,
                "num_samples": TRIALS,
                "scheduler": "fifo",
                "seed": 3,
                "search_space": {"eta": {"loguniform": [0.02, 0.3]}, "max_depth": {"randint": [3, 7]}},
            },
        }
    )
    session = runtime.connect(num_cpus=2, log_to_driver=False)
    budget = CpuBudget(total_cpus=2, num_workers=1, cpus_per_worker=1, data_cpus=0.5, serve_cpus=0)
    plan = tune_mod.TrialPlan("binary", 2, "valid_auc", "max", cfg.train, 10, 300, 1, None, None)
    summary = tune_mod.search(plan, cfg.tune, data, budget=budget, storage_path=storage, experiment_name=name)
    Path(out).write_text(
        json.dumps({k: v for k, v in summary.items() if k != "trials"} | {"n": len(summary["trials"])})
    )
    session.shutdown()


if __name__ == "__main__":
    main(*sys.argv[1:4])
