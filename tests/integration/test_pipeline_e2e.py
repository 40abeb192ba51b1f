"""The walking skeleton end to end, in process on the session Ray: Parquet -> Ray Train XGBoost ->
MLflow (SQLite) run + registered model + champion alias -> Ray Serve -> real HTTP requests."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest
from _mlflow_store import sqlite_store
from mlflow import MlflowClient

from raypipe.pipeline.run import run_pipeline
from raypipe.pipeline.summary import RunResult

pytestmark = pytest.mark.integration

CORE_STAGES = {"ray", "ingest", "profile", "preprocess", "train", "evaluate", "register"}


def _http(method: str, url: str, payload: Any = None, *, raw: bytes | None = None) -> tuple[int, dict]:
    """A real HTTP request (stdlib); returns (status, JSON body) for 2xx and 4xx alike."""
    data = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _client(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _month1(flights_dir: Path) -> pa.Table:
    dataset = pads.dataset(flights_dir, format="parquet", partitioning="hive")
    return dataset.to_table(filter=pads.field("month") == 1)


def _records(table: pa.Table, columns: list[str]) -> list[dict]:
    """Rows as JSON-ready dicts (what a client would send)."""
    out = []
    for row in table.select(columns).to_pylist():
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()})
    return out


# --- one full run with serving, shared by the tests below --------------------------


@pytest.fixture(scope="module")
def flights_run(ray_session, flights_dir: Path, make_config, tmp_path_factory: pytest.TempPathFactory):
    from ray import serve

    tmp = tmp_path_factory.mktemp("e2e")
    uri = sqlite_store(tmp)
    cfg = make_config(
        tmp / "work",
        {"path": str(flights_dir), "label": "delayed", "filter": "month == 1"},
        name="flights",
        features={"exclude": ["year"]},
        register={"model_name": "flights"},
    )
    stages: list[str] = []
    try:
        summary = run_pipeline(cfg, tracking_uri=uri, report=lambda stage, seconds, detail: stages.append(stage))
        yield cfg, summary, uri, stages
    finally:
        serve.shutdown()


@pytest.fixture(scope="module")
def summary(flights_run) -> RunResult:
    return flights_run[1]


@pytest.fixture(scope="module")
def uri(flights_run) -> str:
    return flights_run[2]


def test_summary_describes_the_run(flights_run, flights_dir: Path) -> None:
    cfg, summary, uri, stages = flights_run
    assert summary.task == "binary"
    # Every labelled month-1 flight landed in exactly one split, in roughly the configured fractions.
    n = _month1(flights_dir).num_rows
    assert sum(summary.rows.values()) == n > 20_000
    assert abs(summary.rows["train"] / n - 0.8) < 0.02 and abs(summary.rows["test"] / n - 0.1) < 0.02
    assert 0.65 < summary.metrics["test_auc"] <= 1.0  # far better than chance (0.5) on held-out flights
    assert CORE_STAGES | {"serve"} <= set(summary.stage_seconds) and stages == list(summary.stage_seconds)
    assert summary.tracking_uri == uri
    assert summary.endpoint and summary.endpoint.startswith("http://127.0.0.1:")
    assert not summary.endpoint.endswith(":8000")


def test_mlflow_run_has_params_metrics_and_tags(flights_run, ray_session) -> None:
    from raypipe.runtime import CpuBudget

    cfg, summary, uri, _ = flights_run
    run = _client(uri).get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == summary.experiment_id
    params = run.data.params
    assert params["data.label"] == "delayed"
    assert params["data.filter"] == "month == 1"
    assert params["train.num_boost_round"] == "50"
    assert json.loads(params["features.exclude"]) == ["year"]
    assert params["xgb.objective"] == "binary:logistic"
    budget = CpuBudget.plan(
        ray_session, cfg.train, cfg.runtime.data_cpus, cfg.serve.num_replicas * cfg.serve.cpus_per_replica
    )
    assert params["xgb.nthread"] == str(budget.nthread)
    logged_budget = json.loads(run.data.tags["raypipe.cpu_budget"])
    used = logged_budget["num_workers"] * logged_budget["cpus_per_worker"]
    assert used + logged_budget["data_cpus"] + logged_budget["serve_cpus"] <= ray_session.total_cpus
    metrics = run.data.metrics
    assert metrics["test_auc"] == pytest.approx(summary.metrics["test_auc"])
    assert set(summary.metrics) <= set(metrics)
    assert {metrics[f"rows_{s}"] for s in ("train", "valid", "test")} == {float(v) for v in summary.rows.values()}
    assert run.data.tags["raypipe.task"] == "binary"
    assert run.data.tags["raypipe.data_fingerprint"] == summary.data_fingerprint
    assert run.data.tags["raypipe.config_hash"] == summary.config_hash


def test_model_registered_with_champion_alias(summary: RunResult, uri: str) -> None:
    client = _client(uri)
    assert summary.model_name == "flights" and summary.champion is True
    champion = client.get_model_version_by_alias("flights", "champion")
    assert str(champion.version) == summary.model_version
    assert champion.run_id == summary.run_id
    tags = champion.tags
    assert float(tags["test_auc"]) == pytest.approx(summary.metrics["test_auc"])
    assert {"raypipe.sha256.model.ubj", "raypipe.sha256.preprocessor.json", "raypipe.sha256.contract.json"} <= set(tags)
    assert all(len(tags[k]) == 64 for k in tags if k.startswith("raypipe.sha256."))


def test_smoke_prediction_came_back_over_http(summary: RunResult) -> None:
    pred = summary.prediction
    assert pred is not None and pred["model_version"] == summary.model_version
    assert len(pred["prediction"]) == 1 and isinstance(pred["prediction"][0], bool)
    probs = pred["probabilities"][0]
    assert set(probs) == {"False", "True"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert pred["prediction"][0] == (probs["True"] > probs["False"])


def test_own_http_predictions_match_the_registered_model(summary: RunResult, uri: str, flights_dir: Path) -> None:
    from raypipe.registry import load_model

    url = summary.endpoint + "/predict"
    status, one = _http("POST", url, summary.example)
    assert status == 200, one
    assert one["model_name"] == "flights" and one["model_version"] == summary.model_version
    assert one["prediction"] == summary.prediction["prediction"]
    assert one["probabilities"] == summary.prediction["probabilities"]

    # Two real flights, straight from the Parquet files, sent as a client would send them.
    model = load_model(f"models:/flights/{summary.model_version}", uri)
    features = model.bundle.contract.feature_names
    rows = _month1(flights_dir).slice(100, 2)
    status, two = _http("POST", url, _records(rows, features))
    assert status == 200, two
    assert len(two["prediction"]) == 2 and len(two["probabilities"]) == 2
    assert all(isinstance(p, bool) for p in two["prediction"])
    # No train/serve skew: the HTTP path (JSON -> contract parser -> preprocessor) scores like the
    # training-time path (Parquet Arrow types -> preprocessor) with the registered bundle.
    local = model.bundle.predict_table(rows.select(features))
    np.testing.assert_allclose([p["True"] for p in two["probabilities"]], local, atol=2e-6)


def test_kserve_and_mlflow_protocols_agree_with_predict(summary: RunResult) -> None:
    record = summary.example
    status, plain = _http("POST", summary.endpoint + "/predict", [record, record])
    assert status == 200, plain
    status, kserve = _http("POST", summary.endpoint + "/v1/models/flights:predict", {"instances": [record, record]})
    assert status == 200 and kserve == {"predictions": plain["prediction"]}, kserve
    status, records = _http("POST", summary.endpoint + "/invocations", {"dataframe_records": [record]})
    assert status == 200 and records == {"predictions": plain["prediction"][:1]}, records
    split = {"columns": list(record), "data": [list(record.values())]}
    status, by_split = _http("POST", summary.endpoint + "/invocations", {"dataframe_split": split})
    assert status == 200 and by_split == records
    status, bad = _http("POST", summary.endpoint + "/invocations", {"dataframe_split": {"columns": ["x"]}})
    assert status == 422 and "dataframe_split" in bad["error"]
    status, bad = _http("POST", summary.endpoint + "/v1/models/flights:predict", {"instances": [{"hour": "x"}]})
    assert status == 422 and "'hour'" in bad["error"]


def test_healthz_and_metadata(summary: RunResult, uri: str, tmp_path: Path) -> None:
    status, health = _http("GET", summary.endpoint + "/healthz")
    assert status == 200 and health["status"] == "ok" and health["model_version"] == summary.model_version
    status, meta = _http("GET", summary.endpoint + "/metadata")
    assert status == 200
    assert meta["model_name"] == "flights" and meta["model_version"] == summary.model_version
    # The alias is pinned to its version at deploy time (all replicas serve the same model).
    assert meta["run_id"] == summary.run_id and meta["model_uri"] == f"models:/flights/{summary.model_version}"
    assert meta["task"] == "binary" and meta["classes"] == ["false", "true"]
    # The served schema is the contract logged with the run.
    logged = json.loads(
        Path(_client(uri).download_artifacts(summary.run_id, "contract.json", str(tmp_path))).read_text()
    )
    assert meta["schema"] == logged
    names = [f["name"] for f in meta["schema"]["features"]]
    assert "delayed" not in names and "year" not in names  # label and excluded column
    assert {"carrier", "origin", "distance", "month"} <= set(names)
    assert set(names) == set(summary.example)


def test_bad_requests_are_4xx_naming_the_field_and_the_server_keeps_answering(summary: RunResult) -> None:
    url = summary.endpoint + "/predict"
    status, body = _http("POST", url, {**summary.example, "distance": "far"})
    assert status == 422
    assert [(d["record"], d["field"]) for d in body["detail"]] == [(0, "distance")]
    assert "distance" in body["error"] and body["request_id"]

    missing = {k: v for k, v in summary.example.items() if k != "carrier"}
    status, body = _http("POST", url, [summary.example, missing])
    assert status == 422 and [(d["record"], d["field"]) for d in body["detail"]] == [(1, "carrier")]

    status, body = _http("POST", url, {**summary.example, "arr_delay": 3})
    assert status == 422 and body["detail"][0]["field"] == "arr_delay"

    status, body = _http("POST", url, raw=b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]

    nan_body = json.dumps({**summary.example, "distance": float("nan")}).encode()  # Python writes a bare NaN
    assert b'"distance": NaN' in nan_body
    status, body = _http("POST", url, raw=nan_body)
    assert status == 422 and [(d["record"], d["field"]) for d in body["detail"]] == [(0, "distance")]

    status, body = _http("POST", url, raw=b"[1, 2]")
    assert status == 422

    # ... and the replica is still healthy and serving.
    status, body = _http("POST", url, summary.example)
    assert status == 200 and body["prediction"] == summary.prediction["prediction"]


def test_worse_model_does_not_take_the_champion_alias(
    flights_run, flights_dir: Path, make_config, tmp_path: Path
) -> None:
    cfg, first, uri, _ = flights_run
    worse_cfg = make_config(
        tmp_path / "work",
        {"path": str(flights_dir), "label": "delayed", "filter": "month == 1"},
        name="flights",
        features={"exclude": ["year"]},
        train={"num_boost_round": 1, "early_stopping_rounds": None},
        register={"model_name": "flights"},
        serve={"enabled": False},
    )
    second = run_pipeline(worse_cfg, tracking_uri=uri)
    assert second.metrics["test_auc"] < first.metrics["test_auc"] - cfg.register.max_regression
    assert second.model_name == "flights" and second.model_version != first.model_version
    assert second.champion is False
    assert f"stays on v{first.model_version}" in second.gate_reason
    assert second.endpoint is None and second.prediction is None
    client = _client(uri)
    assert str(client.get_model_version_by_alias("flights", "champion").version) == first.model_version
    new = client.get_model_version("flights", second.model_version)
    assert float(new.tags["test_auc"]) == pytest.approx(second.metrics["test_auc"])
    assert {str(v.version) for v in client.search_model_versions("name='flights'")} >= {
        first.model_version,
        second.model_version,
    }
    # The served model did not change either.
    status, meta = _http("GET", first.endpoint + "/metadata")
    assert status == 200 and meta["model_version"] == first.model_version


# --- generality: other tasks, string labels, no serving ------------------------------


def test_multiclass_string_label_registers_a_usable_model(
    ray_session, make_config, tmp_path: Path, tracking_uri: str
) -> None:
    import mlflow
    import pandas as pd

    from raypipe.data.datasets.synth import write_synth

    data = write_synth(tmp_path / "data", 20_000, seed=3, task="multiclass")
    cfg = make_config(
        tmp_path / "work",
        {"path": str(data), "label": "label"},
        name="synth-multi",
        serve={"enabled": False},
    )
    summary = run_pipeline(cfg, tracking_uri=tracking_uri)
    assert summary.task == "multiclass"
    assert set(summary.metrics) == {"test_logloss", "test_accuracy", "test_f1_macro", "test_auc_ovr"}
    assert summary.metrics["test_accuracy"] > 0.45  # 3 classes: chance is about 1/3
    assert summary.metrics["test_logloss"] < math.log(3)  # better than predicting uniform
    assert summary.endpoint is None
    run = _client(tracking_uri).get_run(summary.run_id)
    assert run.data.params["xgb.objective"] == "multi:softprob" and run.data.params["xgb.num_class"] == "3"
    # The registered MLflow pyfunc (models from code, no pickle) predicts the original string classes.
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model("models:/synth-multi@champion")
    sample = pads.dataset(data, format="parquet", partitioning="hive").head(50).to_pandas()
    preds = model.predict(pd.DataFrame(sample))
    assert len(preds) == 50 and set(preds) <= {"a", "b", "c"}
    assert np.mean(np.asarray(preds) == sample["label"].to_numpy()) > 0.45


def test_regression_without_registering_or_serving(
    ray_session, make_config, tmp_path: Path, tracking_uri: str, registered_models
) -> None:
    from raypipe.data.datasets.synth import write_synth

    data = write_synth(tmp_path / "data", 20_000, seed=4, task="regression")
    cfg = make_config(
        tmp_path / "work",
        {"path": str(data), "label": "label"},
        register={"enabled": False},
        serve={"enabled": False},
    )
    summary = run_pipeline(cfg, tracking_uri=tracking_uri)
    assert summary.task == "regression"
    assert set(summary.metrics) == {"test_rmse", "test_mae", "test_r2"}
    assert summary.metrics["test_rmse"] > 0 and summary.metrics["test_r2"] > 0.2
    assert summary.metrics["test_mae"] <= summary.metrics["test_rmse"]
    assert summary.run_id is None and summary.model_version is None and summary.endpoint is None
    assert registered_models(tracking_uri) == []
