"""Autoscaling over real HTTP: a sustained load adds a replica, and it goes away when the load stops."""

from __future__ import annotations

import json
import time

import pytest
from _mlflow_store import sqlite_store
from _serving import MODEL_NAME, RECORD, Load, register_tiny_model

from raypipe.config import ServeAutoscalingConfig, ServeConfig
from raypipe.serve.deploy import deploy

pytestmark = pytest.mark.integration


def _running_replicas(app: str) -> int:
    from ray import serve

    deployments = serve.status().applications[app].deployments
    return sum(d.replica_states.get("RUNNING", 0) for d in deployments.values())


def _wait_for(app: str, want: int, timeout_s: float) -> tuple[int, float]:
    t0 = time.monotonic()
    while (n := _running_replicas(app)) != want and time.monotonic() - t0 < timeout_s:
        time.sleep(0.25)
    return n, time.monotonic() - t0


def test_load_scales_replicas_up_and_back_down(ray_session, tmp_path) -> None:
    from ray import serve

    uri = sqlite_store(tmp_path)
    register_tiny_model(uri, tmp_path, rounds=5)
    cfg = ServeConfig(
        port=0,
        app_name="autoscale",
        log_predictions=False,
        cpus_per_replica=0.1,
        autoscaling=ServeAutoscalingConfig(
            min_replicas=1,
            max_replicas=2,
            target_ongoing_requests=1,
            upscale_delay_s=0.5,
            downscale_delay_s=2,
            look_back_period_s=1,
        ),
    )
    url = deploy(f"models:/{MODEL_NAME}@champion", uri, cfg)
    try:
        assert _running_replicas(cfg.app_name) == 1
        # 8 keep-alive clients, 100 records per request: several requests in flight per replica.
        load = Load(url + "/predict", json.dumps([RECORD] * 100).encode(), total=200_000, threads=8)
        with load.in_background():
            try:
                up, up_s = _wait_for(cfg.app_name, 2, timeout_s=60)
            finally:
                load.stop()
        assert up == 2, f"still {up} replica(s) after {up_s:.0f} s of load ({load.sent} requests sent)"
        assert set(load.codes) == {200}, load.codes  # scaling up fails no request
        down, down_s = _wait_for(cfg.app_name, 1, timeout_s=60)
        assert down == 1, f"still {down} replicas {down_s:.0f} s after the load stopped"
        print(f"2 replicas after {up_s:.1f} s of load ({load.sent} requests), 1 again {down_s:.1f} s after it")
    finally:
        serve.delete(cfg.app_name)
