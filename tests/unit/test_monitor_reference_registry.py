"""``--model models:/...``: the reference profile comes out of a real MLflow registry (SQLite store)."""

from __future__ import annotations

import json

import pytest
from _mlflow_store import sqlite_store

from raypipe.errors import DataError, RegistryError


def _ref_dict() -> dict:
    return {
        "version": 1,
        "contract": {"features": [{"name": "x", "kind": "numeric", "dtype": "double"}],
                     "label": {"name": "y", "task": "binary", "dtype": "bool", "classes": ["false", "true"]}},
        "numeric": {"x": {"count": 10, "nulls": 0, "edges": [0.5], "counts": [5, 5], "plot_edges": [0.0, 1.0],
                          "plot_counts": [10], "mean": 0.5}},
        "categorical": {},
    }  # fmt: skip


@pytest.fixture
def registry(tmp_path):
    """A registered model whose artifacts hold bundle/reference.json, with alias 'champion'."""
    import mlflow
    from mlflow import MlflowClient

    from raypipe.model import sha256
    from raypipe.registry import HASH_TAG as _HASH_TAG

    uri = sqlite_store(tmp_path)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("t")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "reference.json").write_text(json.dumps(_ref_dict()))
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(bundle), "model/artifacts/bundle")
    client = MlflowClient()
    client.create_registered_model("m")
    mv = client.create_model_version("m", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias("m", "champion", mv.version)
    client.set_model_version_tag("m", mv.version, _HASH_TAG + "reference.json", sha256(bundle / "reference.json"))
    return uri, client, mv.version


def test_reference_loads_from_registry_alias_and_is_verified(registry):
    from raypipe.monitor import load_reference
    from raypipe.registry import HASH_TAG as _HASH_TAG

    uri, client, version = registry
    ref = load_reference("models:/m@champion", uri)
    assert ref.numeric["x"].counts == [5, 5]
    assert load_reference(f"models:/m/{version}", uri).numeric["x"].edges == [0.5]
    client.set_model_version_tag("m", version, _HASH_TAG + "reference.json", "0" * 64)
    with pytest.raises(RegistryError, match="reference.json has sha256"):
        load_reference("models:/m@champion", uri)
    with pytest.raises(RegistryError, match="cannot load 'models:/m@nope'"):
        load_reference("models:/m@nope", uri)


def test_missing_reference_file_names_the_fix(tmp_path):
    from raypipe.monitor import load_reference

    with pytest.raises(DataError, match="reference.json in the model bundle"):
        load_reference(str(tmp_path))


def test_scores_attached_after_evaluation_use_the_max_class_probability(tmp_path):
    import numpy as np

    from raypipe.monitor import ReferenceProfile

    ref = ReferenceProfile.from_dict(_ref_dict()).with_scores(np.array([[0.2, 0.8], [0.6, 0.4]]), {"logloss": 0.5})
    assert ref.scores.count == 2 and ref.scores.mean == pytest.approx(0.7) and ref.test_metrics == {"logloss": 0.5}
    assert ReferenceProfile.load(ref.save(tmp_path)).scores == ref.scores
    with pytest.raises(DataError, match="format 9 is not 1"):
        ReferenceProfile.from_dict({**_ref_dict(), "version": 9})
