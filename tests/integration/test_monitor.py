"""The monitor end to end on real Ray: reference at training time, drift on a logged window,
alerts to a real HTTP receiver on 127.0.0.1, live performance from a labels table."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.integration

DRIFTED = {"num_3": 1.0, "cat_1": 0.6}
START = dt.datetime(2026, 11, 20, 23, 0, tzinfo=dt.UTC)


class _Receiver:
    """A webhook receiver on a free 127.0.0.1 port recording every JSON body."""

    def __init__(self) -> None:
        bodies = self.bodies = []
        received = self.received = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")
                received.set()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def monitored(ray_session, tmp_path_factory):
    """Train/test/current synthetic data, the contract, the reference, and two logged windows."""
    import ray

    from raypipe.data.datasets.synth import write_synth
    from raypipe.data.datasets.synth_logs import synth_score, write_prediction_logs
    from raypipe.monitor import build_reference

    base = tmp_path_factory.mktemp("monitor")
    sizes = {"n_numeric": 8, "n_categorical": 3, "rows_per_file": 10_000}
    train = write_synth(base / "train", 40_000, seed=1, **sizes)
    test = write_synth(base / "test", 10_000, seed=2, **sizes)
    ok = write_synth(base / "ok", 20_000, seed=3, **sizes)
    bad = write_synth(base / "bad", 20_000, seed=4, drift=DRIFTED, **sizes)
    table = pq.read_table(train)
    contract = _contract(table)
    test_table = pq.read_table(test)
    scores = synth_score(test_table)
    from sklearn.metrics import roc_auc_score

    test_auc = roc_auc_score(test_table.column("label").to_numpy(zero_copy_only=False), scores)
    ref = build_reference(
        ray.data.read_parquet(str(train)), contract, scores, test_metrics={"auc": test_auc}, primary_metric="auc"
    )
    logs = {}
    for name, src in (("ok", ok), ("bad", bad)):
        folder, labels = write_prediction_logs(src, base / f"logs_{name}", model="synth", start=START)
        pq.write_table(labels, base / f"labels_{name}.parquet")
        logs[name] = folder
    return {"base": base, "ref": ref, "logs": logs, "contract": contract, "test_auc": test_auc}


def _contract(table):
    from raypipe.config import DataConfig, FeaturesConfig
    from raypipe.data.profile import ColumnStats, profile_batch
    from raypipe.data.schema import infer_contract

    stats: dict[str, ColumnStats] = {}
    for col, s in json.loads(profile_batch(table, None)["profile"][0])["all"].items():
        stats.setdefault(col, ColumnStats()).merge(s)
    data = DataConfig(path="memory", label="label", id_column="id")
    return infer_contract(table.schema, stats, stats, data, FeaturesConfig(exclude=["part"]))


def _cfg(work: Path, **monitor):
    from raypipe.config import load_config

    return load_config(
        raw={
            "data": {"path": "unused", "label": "label"},
            "name": "synth",
            "runtime": {"work_dir": str(work)},
            "monitor": monitor,
        }  # fmt: skip
    )


def test_reference_profile_roundtrips_as_json(monitored, tmp_path):
    from raypipe.monitor import ReferenceProfile

    ref = monitored["ref"]
    assert ref.n_rows == 40_000
    assert set(ref.numeric) == {f"num_{i}" for i in range(8)} and set(ref.categorical) == {"cat_0", "cat_1", "cat_2"}
    for r in ref.numeric.values():
        assert sum(r.counts) == r.count - r.nulls  # exact counts, every non-null value in a bin
        assert len(r.counts) == len(r.edges) + 1 and 90 <= len(r.edges) <= 99
    assert ref.numeric["num_1"].null_rate == pytest.approx(0.02, abs=0.005)
    assert ref.scores is not None and ref.scores.count == 10_000
    loaded = ReferenceProfile.load(ref.save(tmp_path))
    assert loaded.to_dict() == json.loads(json.dumps(ref.to_dict()))
    assert not list(tmp_path.glob("*.pkl"))


def test_drift_in_two_features_is_flagged_and_alert_reaches_webhook(monitored, tmp_path):
    from raypipe.monitor import run_monitor

    receiver = _Receiver()
    try:
        cfg = _cfg(tmp_path, webhook_url=receiver.url, webhook_backoff_s=0.05)
        result = run_monitor(cfg, reference=monitored["ref"], input_path=str(monitored["logs"]["bad"]))
        assert receiver.received.wait(10)
    finally:
        receiver.close()
    assert result.flagged_features == sorted(DRIFTED)
    assert result.exit_code == 8 and result.delivery.delivered and result.delivery.attempts == 1
    # Margins, not luck: drifted metrics far above their thresholds, the rest far below.
    by = {f.name: f for f in result.features}
    assert by["num_3"].ks > 0.3 and by["num_3"].psi > 0.5 and by["cat_1"].category_shift > 0.4
    for f in result.features:
        if f.name not in DRIFTED:
            assert f.psi < 0.02 and (f.ks or 0) < 0.03 and (f.category_shift or 0) < 0.03, f
    body = receiver.bodies[0]
    assert "num_3" in body["text"] and "cat_1" in body["text"] and body["blocks"][0]["type"] == "section"
    assert {a["feature"] for a in body["raypipe"]["alerts"]} == set(DRIFTED)
    saved = json.loads(Path(result.report_json).read_text())
    assert saved["flagged_features"] == sorted(DRIFTED) and saved["rows"] == 20_000
    assert "secret" not in Path(result.report_json).read_text()  # the webhook URL is redacted


def test_undrifted_window_flags_nothing_and_sends_nothing(monitored, tmp_path):
    from raypipe.monitor import run_monitor

    bundle = tmp_path / "bundle"  # --model with a bundle folder: its reference.json is used
    bundle.mkdir()
    monitored["ref"].save(bundle)
    receiver = _Receiver()
    try:
        cfg = _cfg(tmp_path, webhook_url=receiver.url)
        result = run_monitor(cfg, model_uri=str(bundle), input_path=str(monitored["logs"]["ok"]))
    finally:
        receiver.close()
    assert result.alerts == [] and result.flagged_features == [] and result.exit_code == 0
    assert receiver.bodies == [] and result.delivery is None
    assert result.prediction["psi"] < 0.02
    assert result.rows == 20_000 and result.requests == 5_000
    assert 2.0 < result.volume["latency_ms"]["p50"] < 8.0


def test_live_performance_from_labels_matches_sklearn(monitored, tmp_path):
    from sklearn.metrics import roc_auc_score

    from raypipe.monitor import run_monitor

    base = monitored["base"]
    labels = str(base / "labels_ok.parquet")
    result = run_monitor(
        _cfg(tmp_path), reference=monitored["ref"], input_path=str(monitored["logs"]["ok"]), labels=labels
    )
    logs = pq.read_table(monitored["logs"]["ok"]).sort_by([("request_id", "ascending"), ("row", "ascending")])
    truth = pq.read_table(labels).sort_by([("request_id", "ascending"), ("row", "ascending")])
    want = roc_auc_score(truth.column("label").to_numpy(zero_copy_only=False), logs.column("score").to_numpy())
    perf = result.performance
    assert perf["n"] == 20_000 and perf["live"]["auc"] == pytest.approx(want, abs=2e-3)
    assert abs(perf["drop"]) < 0.02 and not any(a.metric == "performance_drop" for a in result.alerts)

    # Flip the labels: the live AUC collapses and the performance alert fires.
    flipped = truth.set_column(2, "label", pa.array(~truth.column("label").to_numpy(zero_copy_only=False)))
    pq.write_table(flipped, tmp_path / "flipped.parquet")
    bad = run_monitor(
        _cfg(tmp_path), reference=monitored["ref"], input_path=str(monitored["logs"]["ok"]),
        labels=str(tmp_path / "flipped.parquet"),
    )  # fmt: skip
    assert [a.metric for a in bad.alerts] == ["performance_drop"] and bad.flagged_features == []


def test_time_window_selects_rows_and_skips_date_folders(monitored, tmp_path):
    from raypipe.monitor import run_monitor

    # 5,000 requests one second apart from 23:00 on the 20th: 3,600 requests fall on the 20th.
    until = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    result = run_monitor(
        _cfg(tmp_path, min_rows=10), reference=monitored["ref"], input_path=str(monitored["logs"]["ok"]), until=until
    )
    assert result.rows == 3_600 * 4 and list(result.volume["rows_by_date"]) == ["2026-11-20"]


def test_features_in_hive_folder_names_are_read_not_missing(monitored, tmp_path):
    """Features partitioned into folders (``cat_0=c0_1/``, nulls in Hive's default folder) are profiled."""
    import pyarrow.dataset as pads

    from raypipe.monitor import run_monitor

    table = pq.read_table(monitored["logs"]["ok"])
    cat0 = table.column("cat_0").to_pylist()
    table = table.set_column(table.schema.get_field_index("cat_0"), "cat_0", pa.array(cat0[:-500] + [None] * 500))
    pads.write_dataset(
        table, tmp_path / "by_cat0", format="parquet", partitioning=["cat_0"], partitioning_flavor="hive"
    )
    assert (tmp_path / "by_cat0" / "cat_0=__HIVE_DEFAULT_PARTITION__").is_dir()
    result = run_monitor(_cfg(tmp_path), reference=monitored["ref"], input_path=str(tmp_path / "by_cat0"))
    by = {f.name: f for f in result.features}
    assert result.rows == 20_000 and not by["cat_0"].missing_in_logs
    assert by["cat_0"].null_rate_cur == pytest.approx(500 / 20_000)
    assert by["cat_0"].category_shift < 0.03 and result.flagged_features == []


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    leaked = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAYPIPE_HOME", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in leaked}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "raypipe", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


def test_cli_exits_8_on_drift_and_names_the_features(monitored, tmp_path):
    ref_path = monitored["ref"].save(tmp_path / "reference.json")
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "synth",
                "data": {"path": "unused", "label": "label"},
                "runtime": {"work_dir": str(tmp_path / "work"), "num_cpus": 1},
            }
        )  # fmt: skip
    )
    repo = Path(__file__).resolve().parents[2]
    proc = _cli("monitor", str(cfg), "--reference", str(ref_path), "--input", str(monitored["logs"]["bad"]), cwd=repo)
    assert proc.returncode == 8, proc.stderr[-2000:]
    alerted = {line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("ALERT feature")}
    assert alerted == set(DRIFTED)
    report = next((tmp_path / "work" / "monitor").glob("monitor-*.html"))
    assert "drifted features: cat_1, num_3" in report.read_text()


def test_cli_usage_errors_fail_before_ray(tmp_path):
    cfg = tmp_path / "monitor.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"path": "unused", "label": "label"}}))
    repo = Path(__file__).resolve().parents[2]
    proc = _cli("monitor", str(cfg), "--input", str(tmp_path), cwd=repo)
    assert proc.returncode == 2 and "exactly one of --model" in proc.stderr  # a usage (config) error
    (tmp_path / "reference.json").write_text("{}")
    proc = _cli("monitor", str(cfg), "--reference", str(tmp_path / "reference.json"), "--input", str(tmp_path),
                cwd=repo)  # fmt: skip
    assert (
        proc.returncode == 3 and "cannot read reference profile" in proc.stderr and len(proc.stderr.splitlines()) == 1
    )
