"""scikit-learn models and Ray Tune through the real pipeline: Ray, an MLflow SQLite store, the
registry and a verified (skops) bundle loaded back and scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.dataset as pads
import pytest
from mlflow import MlflowClient

from raypipe.data.datasets.synth import write_synth
from raypipe.pipeline.run import run_pipeline
from raypipe.registry import load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    small = {"rows_per_file": 1000, "n_numeric": 5, "n_categorical": 2}
    return {
        "binary": write_synth(root / "binary", 3000, **small),
        "multiclass": write_synth(root / "multiclass", 2000, task="multiclass", **small),
        "regression": write_synth(root / "regression", 2000, task="regression", **small),
    }


def _data(path: Path) -> dict:
    return {"path": str(path), "label": "label", "id_column": "id"}


def test_linear_model_is_sampled_registered_and_served_from_a_skops_bundle(
    ray_session, synth, make_config, tmp_path: Path, tracking_uri: str
) -> None:
    cfg = make_config(
        tmp_path / "work",
        _data(synth["binary"]),
        name="linear",
        train={"model": "logistic_regression", "max_rows_in_memory": 1000, "params": {"C": 0.5}},
        serve={"enabled": False},
    )
    summary = run_pipeline(cfg, tracking_uri=tracking_uri)
    assert summary.metrics["test_auc"] > 0.7
    assert {"test_f1", "test_pr_auc", "test_logloss", "test_accuracy"} <= set(summary.metrics)
    # The sample is stated in the run's notes, tags and metrics.
    note = next(n for n in summary.notes if "sampled" in n)
    assert f"of {summary.rows['train']:,} rows" in note and "max_rows_in_memory=1,000" in note
    run = MlflowClient(tracking_uri=tracking_uri).get_run(summary.run_id)
    assert run.data.tags["raypipe.sampling"] == note
    assert 800 < run.data.metrics["train_rows_used"] < 1200 < summary.rows["train"]
    assert run.data.params["logistic_regression.C"] == "0.5"

    model = load_model(f"models:/linear/{summary.model_version}", tracking_uri)
    assert model.bundle.preprocessor.encoding == "onehot" and model.bundle.preprocessor.scale
    assert "model.skops" in model.bundle.hashes
    table = pads.dataset(synth["binary"], partitioning="hive").to_table().slice(0, 50)
    scores = model.bundle.predict_table(table.select(model.bundle.contract.feature_names))
    assert scores.shape == (50,) and ((scores > 0) & (scores < 1)).all()

    # Served from that skops bundle over real HTTP: the same probabilities as in-process.
    from ray import serve

    from raypipe.config import ServeConfig
    from raypipe.serve.deploy import deploy, post_json

    records = table.select(model.contract.feature_names).slice(0, 5).to_pylist()
    records = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in records]
    cfg = ServeConfig(port=0, app_name="linear", log_predictions=False)
    url = deploy("models:/linear@champion", tracking_uri, cfg)
    try:
        status, body = post_json(url + "/predict", records)
    finally:
        serve.delete(cfg.app_name)
    assert status == 200 and body["model_version"] == summary.model_version
    assert body["probabilities"] == model.predict(records)["probabilities"]


@pytest.mark.parametrize(
    ("model", "task", "metric", "floor", "backend"),
    [
        # The forest's joblib work runs on Ray's joblib backend (pool actors), as on a multi-node cluster.
        ("random_forest", "multiclass", "test_accuracy", 0.5, "ray"),
        ("hist_gradient_boosting", "regression", "test_r2", 0.3, "auto"),
    ],
)
def test_tree_models_fit_every_task(
    ray_session, synth, make_config, tmp_path: Path, model: str, task: str, metric: str, floor: float, backend: str
) -> None:
    cfg = make_config(
        tmp_path / "work",
        _data(synth[task]),
        name=model,
        train={"model": model, "params": {"max_depth": 6}, "joblib_backend": backend},
        register={"enabled": False},
        serve={"enabled": False},
    )
    summary = run_pipeline(cfg)
    assert summary.task == task
    assert summary.metrics[metric] > floor
    assert not any("sampled" in n for n in summary.notes)


def test_tune_searches_model_types_logs_nested_trials_and_registers_the_refit_winner(
    ray_session, synth, make_config, tmp_path: Path, tracking_uri: str
) -> None:
    tune = {
        "enabled": True,
        "num_samples": 4,
        "seed": 7,
        "grace_period_rounds": 10,
        "report_every_rounds": 5,
        "models": {
            "xgboost": {"eta": {"loguniform": [0.05, 0.3]}, "max_depth": {"randint": [2, 6]}},
            "random_forest": {"max_depth": {"choice": [4, 8]}},
        },
    }
    cfg = make_config(
        tmp_path / "work",
        _data(synth["binary"]),
        name="tuned",
        train={"num_boost_round": 40},
        tune=tune,
        serve={"enabled": False},
    )
    summary = run_pipeline(cfg, tracking_uri=tracking_uri)
    t = summary.tune
    assert t["num_trials"] == 4 and t["num_errored"] == 0 and t["metric"] == "valid_auc"
    assert t["best_model"] in ("xgboost", "random_forest") and t["resumed"] is False
    assert summary.metrics["test_auc"] > 0.75
    client = MlflowClient(tracking_uri=tracking_uri)
    parent = client.get_run(summary.run_id)
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{summary.run_id}'"
    )
    children = [c for c in children if "raypipe.tune_trial" in c.data.tags]  # stages are nested runs too
    assert len(children) == 4
    scores = [c.data.metrics["valid_auc"] for c in children]
    assert np.isclose(max(scores), t["best_score"])
    assert {c.data.params["model"] for c in children} <= {"xgboost", "random_forest"}
    model = load_model(f"models:/tuned/{summary.model_version}", tracking_uri)
    expected = "model.ubj" if t["best_model"] == "xgboost" else "model.skops"
    assert expected in model.bundle.hashes

    # The same search again is restored, not rerun: same trials, same winner. (Without --from train
    # the stage cache would reuse the whole train stage and Tune would not even start.)
    again = run_pipeline(
        cfg.model_copy(update={"register": cfg.register.model_copy(update={"enabled": False})}), rerun_from="train"
    )
    assert again.tune["resumed"] is True and again.tune["num_trials"] == 4
    assert again.tune["best_params"] == t["best_params"]


def _cli(*args: str, cwd: Path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "MLFLOW_TRACKING_URI")}
    env["COLUMNS"] = "80"
    return subprocess.run([sys.executable, "-m", "raypipe", *args], cwd=cwd, env=env, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({}, "tune.search_space or tune.models"),
        ({"search_space": {"eta": {"loguniform": [0, 0.3]}}}, "'tune.search_space.eta': loguniform: low must be > 0"),
    ],
)
def test_tune_command_rejects_a_bad_search_before_ray_starts(tmp_path: Path, tune: dict, message: str) -> None:
    import yaml

    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"data": {"path": str(tmp_path), "label": "y"}, "tune": tune}))
    proc = _cli("tune", str(config), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "CPUs" not in proc.stdout


@pytest.mark.parametrize("kind", ["files", "materialized"])
def test_model_input_splits_hold_each_row_once_without_the_split_column(
    ray_session, synth, make_config, tmp_path, kind
):
    """``splitfiles.write_splits`` (one machine) and ``preprocess.materialize_splits`` (a cluster without a
    shared disk): per split, the same rows (and values) as transforming the raw rows of that split,
    and no split column left. Files are named by content, so their order does not depend on which
    task wrote them first."""
    import pyarrow as pa

    from raypipe.data import ingest, splitfiles
    from raypipe.data.profile import SPLIT_NAMES, combine, compute_profile
    from raypipe.data.schema import infer_contract
    from raypipe.data.split import SPLIT_COLUMN, add_split_column, assign
    from raypipe.pipeline.stages.preprocess import fit_preprocessor, materialize_splits

    cfg = make_config(tmp_path / "work", _data(synth["binary"]), serve={"enabled": False})
    source = ingest.discover(str(synth["binary"]), None)
    split_ds = ingest.read(source, None).map_batches(
        add_split_column, batch_format="pyarrow", fn_kwargs={"key": ["id"], "cfg": cfg.data.split}
    )
    profile = compute_profile(split_ds, SPLIT_COLUMN, [])
    schema = pa.schema(list(source.schema))
    contract = infer_contract(schema, combine(profile), profile["train"], cfg.data, cfg.features)
    prep = fit_preprocessor(cfg, contract, profile["train"])

    if kind == "files":
        parts = splitfiles.write_splits(split_ds, prep, SPLIT_COLUMN, SPLIT_NAMES, tmp_path / "splits")
        again = splitfiles.write_splits(split_ds, prep, SPLIT_COLUMN, SPLIT_NAMES, tmp_path / "again")
        assert [[n.split("-")[0] for n, _ in again[s].files] for s in SPLIT_NAMES] == [
            [n.split("-")[0] for n, _ in parts[s].files] for s in SPLIT_NAMES
        ]
    else:
        parts = materialize_splits(split_ds, prep)
    assert set(parts) == set(SPLIT_NAMES)
    raw = pads.dataset(synth["binary"], partitioning="hive").to_table()
    codes = assign(raw, ["id"], cfg.data.split)
    for i, name in enumerate(SPLIT_NAMES):
        ds = parts[name]
        batches = list(ds.iter_batches(batch_size=None, batch_format="numpy"))
        assert all(set(b) == {"X", "y"} for b in batches)  # no split column
        got = {k: np.concatenate([b[k] for b in batches]) for k in ("X", "y")}
        want = prep.transform_batch(raw.filter(pa.array(codes == i)))
        assert ds.count() == len(got["y"]) == len(want["y"]) == int((codes == i).sum()) > 0
        order, want_order = np.lexsort(got["X"].T), np.lexsort(want["X"].T)  # Ray Data keeps no row order
        np.testing.assert_array_equal(got["X"][order], want["X"][want_order])
        np.testing.assert_array_equal(got["y"][order], want["y"][want_order])
