"""SIGKILL a Serve replica while 2,000 requests run: at most 0.25 % fail (the goal is none), none is
slow, and every answered request's prediction-log row survives; the replica is replaced."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from _mlflow_store import sqlite_store
from _serving import MODEL_NAME, RECORD, Load, register_tiny_model, request

from raypipe.config import ServeConfig
from raypipe.serve.deploy import deploy

pytestmark = pytest.mark.integration

TOTAL = 2000


def _replicas(app: str) -> list[str]:
    """Live replica actors of the app (from this driver's GCS: other Rays on the machine don't count)."""
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    return sorted(a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::{app}#ModelServer#"))


def _pid(replica: str) -> int:
    import ray

    return ray.get(ray.get_actor(replica, namespace="serve").__ray_call__.remote(lambda _self: os.getpid()))


def _logged_ids(root: Path) -> list[str]:
    if not any(root.rglob("*.parquet")):
        return []
    table = pads.dataset(root, format="parquet", partitioning="hive").to_table(columns=["request_id"])
    return table.column("request_id").to_pylist()


def _haproxy_story(lines: list[str]) -> list[str]:
    """HAProxy's lines that explain a failure: requests not answered 200 or retried, server state."""
    keep = []
    for line in lines:
        if '"POST ' in line:
            fields = line.split()
            status = next((f for f in fields if f.isdigit() and len(f) == 3), "")
            if status != "200" or "/+" in line:  # +N: the request was redispatched N times
                keep.append(line)
        elif "Server " in line or "Health check" in line:
            keep.append(line)
    return keep


def test_sigkill_of_a_replica_under_load_fails_at_most_0_25_percent_and_loses_no_log_row(
    local_ray, haproxy_log, tmp_path: Path
) -> None:
    from ray import serve

    uri = sqlite_store(tmp_path)
    register_tiny_model(uri, tmp_path, rounds=5)
    log_root = tmp_path / "predictions"
    cfg = ServeConfig(port=0, app_name="kill", num_replicas=2, log_dir=str(log_root))
    url = deploy(f"models:/{MODEL_NAME}@champion", uri, cfg)
    deleted = False
    try:
        before = _replicas(cfg.app_name)
        assert len(before) == 2, before
        victim = _pid(before[0])
        # No client retry: the ingress must hide the dead replica by itself.
        t0 = time.monotonic()
        load = Load(url + "/predict", json.dumps(RECORD).encode(), total=TOTAL, threads=8)
        with load.in_background():
            load.wait_until_sent(300)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
        assert load.sent == TOTAL
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the controller notices and starts a replacement
            after = _replicas(cfg.app_name)
            if len(after) == 2 and before[0] not in after:
                break
            time.sleep(0.5)
        assert request(url + "/predict", json.dumps(RECORD).encode())[0] == 200
        serve.delete(cfg.app_name)  # graceful: the survivors flush what they hold
        deleted = True
        logged = _logged_ids(log_root)
        lost = len(load.request_ids - set(logged))
        print(
            f"replica SIGKILL: {load.failures} failed of {load.total} ({dict(load.codes)}), "
            f"slowest {load.slowest_s:.2f}s; log rows lost for answered requests: {lost} of "
            f"{len(load.request_ids)}; duplicates: {len(logged) - len(set(logged))}"
        )
        print("failures (s after the kill):", [(round(t - killed_at, 3), c) for t, c in load.failure_times])
        story = _haproxy_story(haproxy_log.since(t0))
        print("HAProxy (failed, retried, server state):", *story[:60], sep="\n  ")
        # Requests the dead replica had not answered are replayed on the other one (HAProxy L7
        # retry + redispatch). The goal is 0 failures. Full-suite runs saw 1-2, then 6, of 2,000
        # get a 500 within 0.15 s of the kill (0 in isolated runs). With the serve tests run before
        # it, HAProxy's log showed why: the load's connections were on an HAProxy process from
        # before the reload that added the second replica, so their retries went to Serve's
        # fallback proxy, which can still route to the dead one. deploy() now waits until every
        # replica answers fresh connections; the bound stays 0.25 % until full-suite runs show 0.
        # Before the retries: 8 of 2,000 (0.4 %), and the rows of every answered request were lost.
        assert load.failures <= TOTAL // 400, (load.codes, load.failure_times, story[:60])
        assert load.slowest_s < 2.0
        assert len(after) == 2 and before[0] not in after and before[1] in after, (before, after)
        assert lost == 0
    finally:
        if not deleted:
            serve.delete(cfg.app_name)
