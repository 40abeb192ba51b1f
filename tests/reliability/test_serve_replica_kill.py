"""Kill a Serve replica while >= 1,000 requests run: count failures, and see the replica replaced."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from _serving import MODEL_NAME, RECORD, Load, register_tiny_model, request

from raypipe.config import ServeConfig
from raypipe.serve.deploy import deploy

pytestmark = pytest.mark.integration


def _replicas(app: str) -> list[str]:
    """Live replica actors of the app (from this driver's GCS: other Rays on the machine don't count)."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::{app}#ModelServer#"))


def test_killing_a_replica_under_load_fails_at_most_the_requests_in_flight(local_ray, tmp_path: Path) -> None:
    import ray
    from ray import serve

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_tiny_model(uri, tmp_path, rounds=5)
    cfg = ServeConfig(port=0, app_name="kill", num_replicas=2, log_predictions=False)
    url = deploy(f"models:/{MODEL_NAME}@champion", uri, cfg)
    try:
        before = _replicas(cfg.app_name)
        assert len(before) == 2, before
        # One retry on a connection error or 5xx, as a real client (or a load balancer) does.
        load = Load(url + "/predict", json.dumps(RECORD).encode(), total=1500, threads=8, retry=True)
        with load.in_background():
            load.wait_until_sent(300)
            ray.kill(ray.get_actor(before[0], namespace="serve"), no_restart=True)
        assert load.sent == 1500
        print(f"replica kill: {load.first_try_failures} first-try failures of {load.total}; final {dict(load.codes)}")
        # Without the retry these would have been the failures: at most the requests in flight.
        assert load.first_try_failures <= 8, (load.first_try_failures, load.codes)
        # The bar: <= 0.1 % after one retry (measured: 0 with Serve's proxy; HAProxy mode 0-1 of 1,500).
        assert load.failures <= 0.001 * load.total, load.codes
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the controller notices and starts a replacement
            after = _replicas(cfg.app_name)
            if len(after) == 2 and before[0] not in after:
                break
            time.sleep(0.5)
        assert len(after) == 2 and before[0] not in after and before[1] in after, (before, after)
        assert request(url + "/predict", json.dumps(RECORD).encode())[0] == 200
    finally:
        serve.delete(cfg.app_name)
