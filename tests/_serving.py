"""Shared by the serving tests: a tiny registered model, Serve deploys, and a bounded HTTP load client.

Importable from any test (pytest puts ``tests/`` on sys.path for the root conftest).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

from raypipe.data.schema import ColumnSpec, Contract, LabelSpec

CONTRACT = Contract(
    features=[
        ColumnSpec("distance", "numeric", "int16", min=10, max=5000),
        ColumnSpec("carrier", "categorical", "string", categories=["UA", "B6", "EV"]),
        ColumnSpec("weekend", "boolean", "bool"),
    ],
    label=LabelSpec("delayed", "binary", "bool", classes=["false", "true"]),
)
RECORD = {"distance": 1400, "carrier": "UA", "weekend": False}
MODEL_NAME = "tiny"


def tiny_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    distance = rng.integers(10, 5000, n)
    carrier = rng.choice(["UA", "B6", "EV"], n)
    weekend = rng.random(n) < 0.3
    delayed = (distance > 2500) ^ (carrier == "EV") ^ (rng.random(n) < 0.1)
    return pa.table(
        {
            "distance": pa.array(distance, pa.int16()),
            "carrier": carrier,
            "weekend": weekend,
            "delayed": delayed,
        }
    )


def write_tiny_bundle(
    bundle_dir: Path, *, rounds: int = 10, seed: int = 0, contract: Contract = CONTRACT
) -> dict[str, str]:
    """Train a tiny XGBoost model and write it as a raypipe bundle folder; returns the file hashes.

    ``contract`` may differ from ``CONTRACT`` in policy-only fields (nullable, ranges), not in features.
    """
    import xgboost

    from raypipe.features import Preprocessor
    from raypipe.model import write_bundle

    prep = Preprocessor.fit(contract)
    batch = prep.transform_batch(tiny_table(400, seed))
    dtrain = xgboost.DMatrix(batch["X"], batch["y"], feature_types=prep.feature_types, enable_categorical=True)
    booster = xgboost.train({"objective": "binary:logistic", "seed": seed, "nthread": 1}, dtrain, rounds)
    return write_bundle(bundle_dir, booster, prep, contract)


def register_tiny_model(
    tracking_uri: str, artifacts: Path, *, rounds: int = 10, seed: int = 0, contract: Contract = CONTRACT
) -> str:
    """Train a tiny XGBoost bundle, register it as a new version of ``tiny`` and make it champion.

    Returns the new version.
    """
    from raypipe.registry import client, experiment_id, versions

    bundle_dir = artifacts / f"bundle-{seed}-{rounds}"
    hashes = write_tiny_bundle(bundle_dir, rounds=rounds, seed=seed, contract=contract)
    exp = experiment_id(tracking_uri, "serve-tests", artifacts / "mlartifacts")
    run = client(tracking_uri).create_run(exp)
    version = versions.register_bundle(
        tracking_uri, bundle_dir, model_name=MODEL_NAME, run_id=run.info.run_id, input_example=None, hashes=hashes
    )
    client(tracking_uri).set_terminated(run.info.run_id)
    client(tracking_uri).set_registered_model_alias(MODEL_NAME, "champion", version)
    return version


def tiny_store(root: Path, contract: Contract = CONTRACT) -> tuple[str, Path]:
    """A fresh MLflow store under ``root`` with the tiny model (5 rounds) registered as champion."""
    from _mlflow_store import sqlite_store

    uri = sqlite_store(root)
    register_tiny_model(uri, root, rounds=5, seed=0, contract=contract)
    return uri, root


@contextmanager
def deployed(tracking_uri: str, app_name: str, **settings: Any) -> Iterator[str]:
    """The tiny champion served as ``app_name`` on a free port (its URL), deleted afterwards."""
    from ray import serve

    from raypipe.config import ServeConfig
    from raypipe.serve.deploy import deploy

    try:
        yield deploy(f"models:/{MODEL_NAME}@champion", tracking_uri, ServeConfig(port=0, app_name=app_name, **settings))
    finally:
        serve.delete(app_name)


# --- HTTP --------------------------------------------------------------------------


def request(
    url: str,
    body: bytes | None,
    method: str = "POST",
    timeout_s: float = 30.0,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One real HTTP request over a fresh connection; (status, JSON or raw text). ``content_type``
    is sent with a body (``None``: no Content-Type header); ``headers`` are added."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    try:
        headers = ({"Content-Type": content_type} if body is not None and content_type else {}) | (headers or {})
        conn.request(method, parts.path or "/", body=body, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


class Load:
    """A bounded loopback load: ``threads`` keep-alive clients POST ``body`` until ``total`` are sent.

    Counts status codes and connection errors; retries once on a connection error when
    ``retry`` (a real client's behaviour when a replica dies mid-request).
    """

    def __init__(self, url: str, body: bytes, total: int, threads: int = 8, retry: bool = False) -> None:
        self.url, self.body, self.total, self.threads, self.retry = url, body, total, threads, retry
        self.codes: Counter[int | str] = Counter()
        self.versions: Counter[str] = Counter()
        self.first_try_failures = 0
        self.slowest_s = 0.0
        """The longest request, retries included, as its client saw it."""
        self.failure_times: list[tuple[float, str]] = []
        """(time.monotonic(), code) of each failed request, to place it against a fault."""
        self.request_ids: set[str] = set()
        """Request ids of the 200 answers (to count their prediction-log rows)."""
        self._lock = threading.Lock()
        self._next = 0
        self.done = threading.Event()
        self.sent = 0

    def stop(self) -> None:
        """End the load early (the requests in flight still finish and count)."""
        with self._lock:
            self.total = min(self.total, self._next)

    def _take(self) -> bool:
        with self._lock:
            if self._next >= self.total:
                return False
            self._next += 1
            return True

    def _worker(self) -> None:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        while self._take():
            t0 = time.perf_counter()
            for attempt in range(2 if self.retry else 1):
                try:
                    conn.request("POST", parts.path, body=self.body, headers={"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    raw = resp.read()
                    code: int | str = resp.status
                    if code == 200:
                        answer = json.loads(raw)
                        with self._lock:
                            self.versions[str(answer.get("model_version"))] += 1
                            self.request_ids.add(answer.get("request_id"))
                    if code >= 500 and attempt == 0 and self.retry:
                        with self._lock:
                            self.first_try_failures += 1
                        time.sleep(0.1)  # back off, as clients do: the balancer drops the dead replica
                        continue
                    break
                except (OSError, http.client.HTTPException) as e:
                    code = type(e).__name__
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
                    if attempt == 0 and self.retry:
                        with self._lock:
                            self.first_try_failures += 1
                        time.sleep(0.1)
            with self._lock:
                self.codes[code] += 1
                if code != 200:
                    self.failure_times.append((time.monotonic(), str(code)))
                self.sent += 1
                self.slowest_s = max(self.slowest_s, time.perf_counter() - t0)
        conn.close()

    def run(self) -> Load:
        with ThreadPoolExecutor(self.threads) as pool:
            for _ in range(self.threads):
                pool.submit(self._worker)
        self.done.set()
        return self

    @contextmanager
    def in_background(self) -> Iterator[Load]:
        t = threading.Thread(target=self.run, daemon=True)
        t.start()
        try:
            yield self
        finally:
            t.join(300)

    def wait_until_sent(self, n: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sent < n and not self.done.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.sent} of {n} requests sent in {timeout_s}s")
            time.sleep(0.01)

    @property
    def failures(self) -> int:
        return sum(v for k, v in self.codes.items() if k != 200)
