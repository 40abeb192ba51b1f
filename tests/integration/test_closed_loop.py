"""Closed loop end to end: drifted traffic -> alert -> retrain -> gate -> reload, with no failed request."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq

from raypipe.data.datasets.synth import write_synth
from raypipe.pipeline.retrain import monitor_and_retrain
from raypipe.pipeline.run import run_pipeline


def _post(url: str, body) -> int:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return -1


def _logged_rows(root: Path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in root.rglob("*.parquet")) if root.exists() else 0


def test_drift_alert_retrains_promotes_and_reloads_without_failed_requests(
    ray_session, make_config, tracking_uri: str, tmp_path: Path
) -> None:
    gen = {"n_numeric": 6, "n_categorical": 2, "rows_per_file": 3000}
    base = write_synth(tmp_path / "base", 6000, seed=1, **gen)
    drifted = write_synth(tmp_path / "drifted", 6000, seed=2, drift={"num_3": 1.0, "cat_1": 1.0}, **gen)
    log_dir = tmp_path / "predictions"
    cfg = make_config(
        tmp_path / "work",
        {"path": str(base), "label": "label"},
        name="loop",
        features={"exclude": ["part"]},  # the synthetic layout's hive partition: not a feature
        train={"num_boost_round": 30, "early_stopping_rounds": None},
        register={"max_regression": 0.05},
        serve={"log_dir": str(log_dir), "log_flush_rows": 200, "log_flush_s": 0.5},
        monitor={"min_rows": 500, "retrain": {"enabled": True, "data_path": str(drifted)}},
        report={"enabled": False},
    )
    first = run_pipeline(cfg, tracking_uri=tracking_uri)
    assert first.champion and first.endpoint
    url = first.endpoint + "/predict"

    # Real traffic from the drifted window goes through the served model and its prediction log.
    features = pads.dataset(str(drifted)).to_table().drop_columns(["label", "id"])
    records = features.take(list(range(0, 6000, 4))).to_pylist()
    for i in range(0, len(records), 50):
        assert _post(url, records[i : i + 50]) == 200
    deadline = time.monotonic() + 60
    while _logged_rows(log_dir) < len(records) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _logged_rows(log_dir) >= len(records)

    # Load runs throughout monitor, retrain and reload.
    stop, statuses = threading.Event(), []

    def load() -> None:
        while not stop.is_set():
            statuses.append(_post(url, first.example))

    t = threading.Thread(target=load, daemon=True)
    t.start()
    try:
        loop = monitor_and_retrain(
            cfg,
            model_uri="models:/loop@champion",
            tracking_uri=tracking_uri,
            input_path=str(log_dir),
            send_alerts=False,
            out_dir=tmp_path / "monitor",
        )
    finally:
        stop.set()
        t.join(timeout=60)

    assert loop.monitor.flagged_features == ["cat_1", "num_3"]
    assert loop.retrained is not None and loop.retrained.champion, loop.note
    assert loop.reloaded is not None and loop.reloaded.changed
    with urllib.request.urlopen(first.endpoint + "/metadata", timeout=10) as r:
        assert json.loads(r.read())["model_version"] == loop.retrained.model_version
    assert len(statuses) > 20 and [s for s in statuses if s != 200] == []
