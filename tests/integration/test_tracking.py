"""Stage caching and resume, parent/nested MLflow runs, manifest, gate, audit, rollback, reproduce."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from raypipe.data.datasets.synth import write_synth
from raypipe.pipeline.run import run_pipeline
from raypipe.registry import audit
from raypipe.registry.publish import promote, rollback
from raypipe.runtime import default_tracking_uri

ALL_CACHED = ["ingest", "profile", "quality", "preprocess", "train", "evaluate", "register", "report"]


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth(
        tmp_path_factory.mktemp("synth") / "data", 6000, n_numeric=6, n_categorical=2, rows_per_file=2000
    )


@pytest.fixture
def small(make_config, synth_dir: Path, tmp_path: Path):
    def make(**sections):
        base = {
            "name": "small",
            "train": {"num_boost_round": 15, "early_stopping_rounds": None},
            "report": {"slice_columns": ["cat_0"], "bootstrap_samples": 20},
        }
        base.update(sections)
        return make_config(
            tmp_path / "work", {"path": str(synth_dir), "label": "label"}, serve={"enabled": False}, **base
        )

    return make


def test_rerun_reuses_stages_and_changes_invalidate_downstream(
    ray_session, small, synth_dir: Path, tracking_uri: str, tmp_path: Path
) -> None:
    cfg = small()
    first = run_pipeline(cfg, tracking_uri=tracking_uri)
    assert first.cached_stages == [] and first.model_version == "1" and first.champion

    again = run_pipeline(cfg, tracking_uri=tracking_uri)
    assert again.cached_stages == ALL_CACHED
    assert again.metrics == first.metrics and again.model_version == "1"
    assert again.stage_keys == first.stage_keys

    # `raypipe reproduce`: the manifest's config, re-executed with the cache off, gives the same metrics.
    from raypipe.pipeline.reproduce import reproduce

    res = reproduce(first.run_id, tracking_uri=tracking_uri)
    assert res.changes == [] and res.deltas.keys() == first.metrics.keys()
    assert res.summary.cached_stages == []  # it really re-executed
    # Test rows arrive in block order, which may differ: sums then differ in the last float32 bits.
    assert res.within_tolerance and max(abs(d) for d in res.deltas.values()) < 1e-6

    retrained = run_pipeline(small(train={"params": {"max_depth": 3}}), tracking_uri=tracking_uri)
    assert retrained.cached_stages == ["ingest", "profile", "quality", "preprocess"]
    assert retrained.model_version == "2" and retrained.metrics != first.metrics

    touched = next(synth_dir.rglob("*.parquet"))
    st = touched.stat()
    os.utime(touched, (st.st_atime, st.st_mtime + 10))  # same bytes, new mtime: a new fingerprint
    fresh = run_pipeline(cfg, tracking_uri=tracking_uri)
    assert fresh.cached_stages == [] and fresh.data_fingerprint != first.data_fingerprint

    # Every run is a parent MLflow run with one nested run per stage.
    client = MlflowClient(tracking_uri)
    children = client.search_runs([again.experiment_id], f"tags.mlflow.parentRunId = '{again.run_id}'")
    assert {r.data.tags["raypipe.stage"] for r in children} >= {"ray", *ALL_CACHED}
    assert {r.data.tags["raypipe.cached"] for r in children if r.data.tags["raypipe.stage"] == "train"} == {"true"}
    parent = client.get_run(first.run_id)
    assert parent.data.tags["raypipe.config_hash"] == first.config_hash
    assert "mlflow.source.git.commit" in parent.data.tags and "raypipe.pkg.xgboost" in parent.data.tags
    assert parent.data.params["train.num_boost_round"] == "15"
    assert parent.inputs.dataset_inputs[0].dataset.digest == first.data_fingerprint
    arts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"manifest.json", "audit.jsonl", "config.yaml", "config.resolved.json", "contract.json"} <= arts

    m = json.loads(Path(first.manifest_path).read_text())
    assert m["config_hash"] == first.config_hash and m["data"]["fingerprint"] == first.data_fingerprint
    seeds = {"split": cfg.data.split.seed, "xgboost": cfg.train.seed, "tune": cfg.tune.seed, "sampler": cfg.train.seed}
    assert m["seeds"] == seeds
    assert set(m["artifacts"]["sha256"]) == {"model.ubj", "preprocessor.json", "contract.json", "reference.json"}
    report_files = {a.path for a in client.list_artifacts(first.run_id, "report")}
    assert {"report/report.html", "report/model_card.md", "report/metrics.json"} <= report_files
    assert Path(first.report_path).is_file() and "<img" in Path(first.report_path).read_text()
    report = json.loads((Path(first.report_path).parent / "metrics.json").read_text())
    slices = report["slices"]["cat_0"]
    assert len(slices) > 2 and sum(r["n"] for r in slices) == first.rows["test"]  # aligned with the test rows
    assert "Version: 1" in (Path(first.report_path).parent / "model_card.md").read_text()
    assert m["cluster"]["cpus"] == 2 and m["packages"]["ray"]
    mv = client.get_model_version("small", "1")
    assert mv.tags["raypipe.sha256.model.ubj"] == m["artifacts"]["sha256"]["model.ubj"]


def test_worse_model_keeps_champion_audit_says_why_and_rollback(
    ray_session, small, tracking_uri: str, tmp_path: Path
) -> None:
    good = run_pipeline(small(), tracking_uri=tracking_uri)
    worse = run_pipeline(
        small(train={"num_boost_round": 1, "early_stopping_rounds": None, "params": {"max_depth": 1}}),
        tracking_uri=tracking_uri,
    )
    assert worse.champion is False and "champion stays on v1" in worse.gate_reason
    work = tmp_path / "work"
    gates = [e for e in audit.read(work, model="small") if e["event"] == "gate"]
    assert [g["promote"] for g in gates] == [True, False]
    assert gates[-1]["reason"] == worse.gate_reason and "this test split" in gates[-1]["reason"]

    client = MlflowClient(tracking_uri)
    promote(tracking_uri, work, "small", worse.model_version)  # a person overrides the gate...
    assert str(client.get_model_version_by_alias("small", "champion").version) == worse.model_version
    old, new = rollback(tracking_uri, work, "small")  # ...and undoes it
    assert (old, new) == (worse.model_version, good.model_version)
    assert str(client.get_model_version_by_alias("small", "champion").version) == good.model_version
    moves = [(e.get("previous"), e["version"], e["reason"]) for e in audit.read(work) if e["event"] == "alias_move"]
    assert moves[-2:] == [("1", "2", "promote"), ("2", "1", "rollback")]


def test_killed_run_resumes_without_redoing_finished_stages(ray_session, small, tmp_path: Path) -> None:
    import yaml

    cfg = small(train={"num_boost_round": 400, "early_stopping_rounds": None, "checkpoint_every_rounds": 1000})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    import ray

    # The child joins this test session's Ray, so killing it leaves no orphaned Ray behind.
    address = ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-m", "raypipe", "run", str(path), "--address", address]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait for the marker, not a sleep
        lines.append(line)
        if "preprocess" in line:
            break
    proc.send_signal(signal.SIGKILL)  # mid-training: nothing gets to clean up
    proc.wait(timeout=60)
    assert any("preprocess" in x for x in lines), "".join(lines)

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    status = {ln.split()[1]: ln.split()[0] for ln in resumed.stdout.splitlines() if ln[:1] in "✓↺"}
    assert [s for s in ("ingest", "profile", "quality", "preprocess") if status.get(s) == "↺"] == [
        "ingest",
        "profile",
        "quality",
        "preprocess",
    ], resumed.stdout
    assert status["train"] == "✓"
    # The killed run could not end its MLflow run: the resumed one marks it KILLED (same host, pid gone).
    client = MlflowClient(tracking_uri=default_tracking_uri(Path(cfg.runtime.work_dir)))
    runs = client.search_runs(
        [client.get_experiment_by_name(cfg.register.experiment).experiment_id], "tags.`raypipe.pid` != ''"
    )
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"], [(r.info.run_id, r.info.status) for r in runs]
    killed = next(r for r in runs if r.info.status == "KILLED")
    assert killed.data.tags["raypipe.pid"] == str(proc.pid)
    audit = [json.loads(x) for x in (Path(cfg.runtime.work_dir) / "audit.jsonl").read_text().splitlines()]
    assert any(e["event"] == "run_failed" and e["run_id"] == killed.info.run_id for e in audit)


def test_against_a_real_mlflow_server(ray_session, small, mlflow_server: str, tmp_path: Path) -> None:
    from raypipe.registry import load_model

    summary = run_pipeline(small(register={"model_name": "served-small"}), tracking_uri=mlflow_server)
    assert summary.champion and summary.model_version == "1"
    client = MlflowClient(mlflow_server)
    children = client.search_runs([summary.experiment_id], f"tags.mlflow.parentRunId = '{summary.run_id}'")
    assert len(children) >= len(ALL_CACHED)
    loaded = load_model("models:/served-small@champion", mlflow_server, dst=str(tmp_path / "dl"))
    assert loaded.version == "1" and loaded.run_id == summary.run_id
    assert loaded.bundle.hashes == summary.artifact_hashes  # verified against the registry's tags
    # The artifacts went through the server, not to a local path the client chose.
    assert (Path(client.get_run(summary.run_id).info.artifact_uri)).as_posix().startswith("mlflow-artifacts:")
