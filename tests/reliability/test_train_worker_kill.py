"""Kill the Ray Train worker mid-fit: the fit resumes from its last checkpoint and finishes.

With ``subsample=1`` and ``colsample_*=1`` the resumed model predicts exactly like an undisturbed
one; with row sampling the RNG restarts on resume, so only the metric is compared (tolerance).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from _train_data import arrays, dataset, split_files
from sklearn.metrics import roc_auc_score

from raypipe.config import TrainConfig
from raypipe.model import predict_matrix
from raypipe.runtime import CpuBudget
from raypipe.train import xgboost as xgb_train
from raypipe.train._ray_train import live_placement_groups

pytestmark = pytest.mark.reliability

ROUNDS = 300
EVERY = 20


def _train_workers() -> list[psutil.Process]:
    """This session's Ray Train worker processes (children of our own raylet)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _fit(data, storage: Path, name: str, params: dict):
    train, valid, _ = data
    cfg = TrainConfig(num_boost_round=ROUNDS, early_stopping_rounds=None, checkpoint_every_rounds=EVERY, max_failures=2)
    budget = CpuBudget(total_cpus=2, num_workers=1, cpus_per_worker=1, data_cpus=0.5, serve_cpus=0)
    full = xgb_train.xgb_params(cfg.model_copy(update={"params": params}), "binary", 2, budget.nthread)
    return xgb_train.fit(
        train,
        valid,
        feature_names=[f"f{i}" for i in range(12)],
        feature_types=["q"] * 12,
        params=full,
        cfg=cfg,
        budget=budget,
        storage_path=str(storage),
        run_name=name,
    )


def _fit_and_kill(data, storage: Path, name: str, params: dict):
    """Run the fit in a thread; SIGKILL its worker once a checkpoint exists; return (fit, killed pid)."""
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(fit=_fit(data, storage, name, params)), daemon=True)
    t.start()
    run_dir = storage / name
    deadline = time.monotonic() + 180
    killed = None
    while killed is None and t.is_alive() and time.monotonic() < deadline:
        # A checkpoint folder exists before the controller registers it: wait for its snapshot.
        snapshot = run_dir / "checkpoint_manager_snapshot.json"
        if snapshot.exists() and "checkpoint_" in snapshot.read_text():
            workers = _train_workers()
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.02)
    assert killed is not None, "the fit ended (or never checkpointed) before a worker could be killed"
    t.join(timeout=300)
    assert "fit" in box, "the fit did not finish after the worker was killed"
    return box["fit"], killed


@pytest.fixture(scope="module")
def data(ray_session):
    """Materialised Ray Datasets (object refs), as a cluster without a shared disk trains on."""
    X, y = arrays(40_000)
    Xt, yt = arrays(5_000, seed=1)
    return dataset(X[:36_000], y[:36_000]), dataset(X[36_000:], y[36_000:]), (Xt, yt)


@pytest.fixture(scope="module")
def file_data(ray_session, tmp_path_factory):
    """Split files, as one machine trains on (the default): the restarted worker maps them again."""
    X, y = arrays(40_000)
    Xt, yt = arrays(5_000, seed=1)
    root = tmp_path_factory.mktemp("splits")
    return (
        split_files(root / "train", X[:36_000], y[:36_000]),
        split_files(root / "valid", X[36_000:], y[36_000:]),
        (
            Xt,
            yt,
        ),
    )


def test_killed_worker_resumes_from_checkpoint_and_matches_undisturbed_model(file_data, tmp_path: Path) -> None:
    data = file_data
    params = {"max_depth": 6, "subsample": 1.0, "colsample_bytree": 1.0}
    clean = _fit(data, tmp_path, "clean", params)
    resumed, pid = _fit_and_kill(data, tmp_path, "killed", params)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    # It restarted from a checkpoint, not from round 0, and still trained every round.
    assert resumed.metrics["resumed_from_round"] >= EVERY
    assert resumed.metrics["resumed_from_round"] % EVERY == 0
    assert resumed.rounds == clean.rounds == ROUNDS
    Xt, _ = data[2]
    np.testing.assert_array_equal(predict_matrix(resumed.model, Xt), predict_matrix(clean.model, Xt))
    assert resumed.model.save_raw("json") == clean.model.save_raw("json")


def test_killed_worker_with_row_sampling_ends_within_tolerance(data, tmp_path: Path) -> None:
    params = {"max_depth": 6, "subsample": 0.8, "colsample_bytree": 0.8}
    clean = _fit(data, tmp_path, "clean", params)
    resumed, _ = _fit_and_kill(data, tmp_path, "killed", params)
    assert resumed.metrics["resumed_from_round"] >= EVERY and resumed.rounds == ROUNDS
    Xt, yt = data[2]
    auc_clean = roc_auc_score(yt, predict_matrix(clean.model, Xt))
    auc_resumed = roc_auc_score(yt, predict_matrix(resumed.model, Xt))
    assert auc_clean > 0.8
    assert abs(auc_resumed - auc_clean) < 0.01


def _processes(name: str) -> list[psutil.Process]:
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if name in " ".join(p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_a_killed_controller_fails_the_fit_and_frees_its_workers_cpus(file_data, tmp_path: Path) -> None:
    """Without Ray Train's cleaner actor, the driver frees the placement group a dead controller left."""
    from raypipe.errors import TrainingError

    before = live_placement_groups()
    box: dict = {}

    def run() -> None:
        try:
            box["fit"] = _fit(file_data, tmp_path, "controller", {"max_depth": 6})
        except TrainingError as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    snapshot = tmp_path / "controller" / "checkpoint_manager_snapshot.json"
    deadline = time.monotonic() + 180
    killed = None
    while killed is None and t.is_alive() and time.monotonic() < deadline:
        if snapshot.exists() and "checkpoint_" in snapshot.read_text() and live_placement_groups() - before:
            controllers = _processes("TrainController")
            if controllers:
                killed = controllers[0].pid
                os.kill(killed, signal.SIGKILL)
        time.sleep(0.02)
    assert killed is not None, "the fit ended (or never checkpointed) before its controller could be killed"
    t.join(timeout=120)
    assert "error" in box, f"the fit did not fail after its controller was killed: {box}"
    assert live_placement_groups() == before
    # The workers' CPUs are free again: the next fit gets them and finishes.
    again = _fit(file_data, tmp_path, "after", {"max_depth": 2})
    assert again.rounds == ROUNDS
