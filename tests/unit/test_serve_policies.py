"""Serving policies without Ray: validation policies, the prediction-log writer, deployment options."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pytest

from raypipe.config import ServeConfig, load_config
from raypipe.data.records import RequestError, RequestParser
from raypipe.data.schema import ColumnSpec, Contract, LabelSpec
from raypipe.errors import ConfigError
from raypipe.model import prediction_columns
from raypipe.runtime import resolve_paths
from raypipe.serve.deploy import deploy_config, serve_settings
from raypipe.serve.predlog import PredictionLogger

CONTRACT = Contract(
    features=[
        ColumnSpec("distance", "numeric", "int16"),
        ColumnSpec("carrier", "categorical", "string", categories=["UA", "B6"]),
        ColumnSpec("gate", "categorical", "int32", categories=["7", "12"]),
    ],
    label=LabelSpec("delayed", "binary", "bool", classes=["false", "true"]),
)
RECORD = {"distance": 1400, "carrier": "UA", "gate": 7}


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_unknown_fields_ignore_drops_them() -> None:
    table = RequestParser(CONTRACT, unknown_fields="ignore").parse(_body({**RECORD, "arr_delay": 3}))
    assert table.column_names == ["distance", "carrier", "gate"]


def test_unseen_categories_reject_names_record_field_and_value() -> None:
    parser = RequestParser(CONTRACT, unseen_categories="reject")
    with pytest.raises(RequestError) as exc:
        parser.parse(_body([RECORD, {**RECORD, "carrier": "ZZ"}, {**RECORD, "gate": 99, "carrier": None}]))
    err = exc.value
    assert err.status == 422
    assert [(e["record"], e["field"]) for e in err.errors] == [(1, "carrier"), (2, "gate")]
    assert "unseen category 'ZZ'" in err.message
    # null is missing, not unseen; the default policy scores unseen levels as missing
    assert parser.parse(_body({**RECORD, "carrier": None})).num_rows == 1
    assert RequestParser(CONTRACT).parse(_body({**RECORD, "carrier": "ZZ"})).num_rows == 1


def test_deeply_nested_or_huge_numbers_are_4xx_not_crashes() -> None:
    parser = RequestParser(CONTRACT)
    with pytest.raises(RequestError) as exc:
        parser.parse(b"[" * 100_000 + b"]" * 100_000)
    assert exc.value.status == 400
    with pytest.raises(RequestError) as exc:
        parser.parse(_body({**RECORD, "distance": 10**400}))
    assert exc.value.status == 422 and exc.value.errors[0]["field"] == "distance"


def test_prediction_columns_per_task() -> None:
    pred, score = prediction_columns(CONTRACT.label, np.array([0.2, 0.7]))
    assert pred.to_pylist() == ["false", "true"] and score.to_pylist() == [0.2, 0.7]
    multi = LabelSpec("g", "multiclass", "string", classes=["a", "b", "c"])
    pred, score = prediction_columns(multi, np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    assert pred.to_pylist() == ["b", "a"] and score.to_pylist() == [0.6, 0.5]
    pred, score = prediction_columns(LabelSpec("y", "regression", "double"), np.array([1.5], np.float32))
    assert pred.to_pylist() == ["1.5"] and score.to_pylist() == [1.5]


def _table(rows: list[dict]) -> pa.Table:
    return RequestParser(CONTRACT).parse(_body(rows))


def test_logger_writes_the_shared_layout_and_casts_to_contract_dtypes(tmp_path: Path) -> None:
    plog = PredictionLogger(tmp_path, "m", CONTRACT, flush_rows=1000, flush_s=60)
    day1 = 1_700_000_000_000  # 2023-11-14
    plog.log("r1", day1, "3", 1.5, _table([RECORD, {**RECORD, "gate": "ZZ", "distance": None}]), np.array([0.9, 0.1]))
    plog.log("r2", day1 + 86_400_000, "3", 2.0, _table([RECORD]), np.array([0.4]))
    plog.close()
    files = sorted(p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*.parquet"))
    assert files == [("model=m", "date=2023-11-14"), ("model=m", "date=2023-11-15")]
    assert not list(tmp_path.rglob("*.tmp"))
    t = pads.dataset(tmp_path, format="parquet", partitioning="hive").to_table().sort_by("ts")
    assert t.column("request_id").to_pylist() == ["r1", "r1", "r2"]
    assert t.column("row").to_pylist() == [0, 1, 0] and t.schema.field("row").type == pa.int32()
    assert t.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert t.schema.field("distance").type == pa.int16() and t.column("distance").to_pylist() == [1400, None, 1400]
    assert t.schema.field("gate").type == pa.int32() and t.column("gate").to_pylist() == [7, None, 7]  # unfit -> null
    assert t.column("prediction").to_pylist() == ["true", "false", "false"]
    assert t.column("latency_ms").to_pylist() == [1.5, 1.5, 2.0] and t.column("model_version").to_pylist() == ["3"] * 3
    assert plog.stats() == {"written_rows": 3, "dropped_rows": 0, "write_errors": 0, "merged_rows": 0}
    assert not list(tmp_path.rglob("*.arrows"))  # the spool is gone once written


def test_logger_drops_and_counts_when_full_and_never_blocks(tmp_path: Path, monkeypatch) -> None:
    plog = PredictionLogger(tmp_path, "m", CONTRACT, flush_rows=1, flush_s=60, max_queued_rows=5)
    gate = threading.Event()
    real_flush = plog._flush
    monkeypatch.setattr(plog, "_flush", lambda *args: (gate.wait(10), real_flush(*args)))
    table = _table([RECORD, RECORD])
    t0 = time.perf_counter()
    accepted = [plog.log(f"r{i}", 0, "1", 1.0, table, np.array([0.5, 0.5])) for i in range(10)]
    assert time.perf_counter() - t0 < 0.5  # the writer is stuck; logging is not
    assert accepted.count(True) == 2 and plog.dropped_rows == 16
    gate.set()
    plog.close()
    assert plog.written_rows == 4


def test_log_failures_count_as_dropped(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    plog = PredictionLogger(blocker, "m", CONTRACT, flush_rows=1, flush_s=60)
    plog.log("r", 0, "1", 1.0, _table([RECORD]), np.array([0.5]))
    plog.close()
    assert plog.stats() == {"written_rows": 0, "dropped_rows": 1, "write_errors": 1, "merged_rows": 0}


def test_serve_config_checks() -> None:
    with pytest.raises(ConfigError, match="max_batch_size"):
        load_config(raw={"data": {"path": "d", "label": "y"}, "serve": {"max_batch_size": 64}})
    with pytest.raises(ConfigError, match="max_replicas"):
        load_config(raw={"data": {"path": "d", "label": "y"}, "serve": {"autoscaling": {"min_replicas": 3}}})
    with pytest.raises(ConfigError, match="unknown_fields"):
        load_config(raw={"data": {"path": "d", "label": "y"}, "serve": {"unknown_fields": "allow"}})


def test_scale_to_zero_needs_a_timeout_longer_than_a_cold_start() -> None:
    from raypipe.config import ServeAutoscalingConfig

    with pytest.raises(ValueError, match=r"min_replicas 0 needs request_timeout_s >= 30 \(it is 10\)"):
        ServeConfig(autoscaling=ServeAutoscalingConfig(min_replicas=0))
    assert ServeConfig(autoscaling=ServeAutoscalingConfig(min_replicas=0), request_timeout_s=60).request_timeout_s == 60
    assert ServeConfig(autoscaling=ServeAutoscalingConfig(min_replicas=1)).request_timeout_s == 10


def test_deploy_config_carries_autoscaling_queue_bound_and_policies(tmp_path: Path) -> None:
    cfg = load_config(
        raw={
            "data": {"path": "d", "label": "y"},
            "serve": {"autoscaling": {"min_replicas": 1, "max_replicas": 3}, "unseen_categories": "reject"},
            "runtime": {"work_dir": str(tmp_path)},
        }
    )
    serve_cfg = serve_settings(cfg, resolve_paths(cfg))
    assert serve_cfg.log_dir == str((tmp_path / "predictions").resolve())
    out = deploy_config("models:/m@champion", "sqlite:///x.db", serve_cfg)
    (app,) = out["applications"]
    (dep,) = app["deployments"]
    assert app["args"]["model_uri"] == "models:/m@champion"
    assert app["args"]["settings"]["unseen_categories"] == "reject"
    assert dep["autoscaling_config"]["max_replicas"] == 3 and "num_replicas" not in dep
    assert dep["max_queued_requests"] == ServeConfig().max_queued_requests and dep["max_surge_percent"] == 100
    assert out["http_options"]["host"] == "127.0.0.1"
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(out)  # `serve deploy` accepts it as is


def test_ingress_env_haproxy_by_default_private_per_process_proxy_without_binary(monkeypatch, tmp_path) -> None:
    import shutil
    import subprocess

    from raypipe.errors import ServingError
    from raypipe.serve import ingress
    from raypipe.serve.ingress import ingress_env

    for name in [k for k in os.environ if k.startswith("RAY_SERVE_")]:
        monkeypatch.delenv(name)
    fake = tmp_path / "haproxy"  # records its arguments, so the wrapper's rewrite can be checked
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\n')
    fake.chmod(0o755)
    monkeypatch.setattr(ingress, "haproxy_binary", lambda: str(fake))
    one, two = ingress_env(ServeConfig()), ingress_env(ServeConfig(ingress="haproxy"))
    assert one["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and one["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert one["RAY_SERVE_HAPROXY_TIMEOUT_SERVER_S"] == "10"  # serve.request_timeout_s
    # A dead replica's unanswered requests are replayed elsewhere; 503 (backpressure) never is.
    assert one["RAY_SERVE_HAPROXY_RETRY_ON"].split() == [
        "conn-failure",
        "empty-response",
        "junk-response",
        "500",
        "502",
        "504",
    ]
    assert one["RAY_SERVE_HAPROXY_RETRIES"] == "3" and one["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] == "1"
    # Two Rays on one host must not share Serve's fixed /tmp/haproxy-serve paths or ports 8404/9101.
    for key in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC", "RAY_SERVE_HAPROXY_SOCKET_PATH", "RAY_SERVE_HAPROXY_STATS_PORT"):
        assert one[key] != two[key], key
    assert not one["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"].startswith("/tmp/haproxy-serve")
    assert len(one["RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH"]) + 57 <= 97  # HAProxy's socket path cap
    # The binary Serve runs is the loopback wrapper: stats and metrics binds move to 127.0.0.1.
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "frontend p\n    bind :9101\nfrontend h\n    bind 0.0.0.0:8000\nlisten stats\n  bind *:8404\n"
        "defaults\n    option splice-request\n    option splice-response\n    option redispatch 1\n"
    )
    subprocess.run([one["RAY_SERVE_HAPROXY_BINARY_PATH"], "-db", "-f", str(cfg), "-sf", "1"], check=True)
    assert cfg.read_text().split("\n")[1:6:2] == [
        "    bind 127.0.0.1:9101",
        "    bind 0.0.0.0:8000",
        "  bind 127.0.0.1:8404",
    ]
    # Spliced requests are not kept for a retry: splicing is off.
    assert "splice" not in cfg.read_text()
    # HAProxy holds each request's body (so a retry can replay it), for at most the request timeout.
    timeout = math.ceil(ServeConfig(ingress="haproxy").request_timeout_s)
    assert cfg.read_text().endswith(
        f"defaults\n    option redispatch 1\noption http-buffer-request\ntimeout http-request {timeout}s\n"
    )
    assert (tmp_path / "args").read_text().split() == ["-db", "-f", str(cfg), "-sf", "1"]
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "9999")
    three = ingress_env(ServeConfig(ingress="haproxy"))
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in three  # variables already set win
    assert ingress_env(ServeConfig(ingress="proxy")) == {}

    def missing() -> str:
        raise ServingError("no haproxy")

    monkeypatch.setattr(ingress, "haproxy_binary", missing)
    assert ingress_env(ServeConfig()) == {}  # auto without a binary: Serve's proxy
    with pytest.raises(ServingError):
        ingress_env(ServeConfig(ingress="haproxy"))
    for env in (one, two, three):
        shutil.rmtree(os.path.dirname(env["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]))


def test_wait_routable_waits_through_404_until_the_app_answers() -> None:
    """The ingress can 404 a moment after serve.run returns (HAProxy reloading): deploy must wait it out."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from raypipe.errors import ServingError
    from raypipe.serve.deploy import wait_routable

    seen: list[str] = []

    class Ingress(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            self.send_response(404 if len(seen) < 4 else 200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_routable(f"http://127.0.0.1:{server.server_port}", timeout_s=10)
        assert seen == ["/healthz"] * 4
        seen.clear()
        server.RequestHandlerClass = type("Never", (Ingress,), {"do_GET": lambda self: self.send_error(404)})
        with pytest.raises(ServingError, match=r"/healthz did not answer within 1 s \(HTTP 404\)"):
            wait_routable(f"http://127.0.0.1:{server.server_port}", timeout_s=1)
    finally:
        server.shutdown()


def test_wait_routable_waits_until_every_replica_answers_then_gives_up_with_a_warning(caplog) -> None:
    """A client that connects before the ingress knows every replica stays on one: deploy waits for all."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from raypipe.serve.deploy import wait_routable

    answers: list[str] = []
    replicas = iter(["a"] * 5 + ["b"] * 100)

    class Ingress(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            answers.append(next(replicas))
            body = json.dumps({"status": "ok", "replica": answers[-1]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ingress)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        wait_routable(base, timeout_s=10, replicas=2)
        assert answers == ["a"] * 5 + ["b"]
        replicas = iter(["a"] * 1000)  # the second replica never becomes reachable
        with caplog.at_level(logging.WARNING, logger="raypipe.serve.deploy"):
            wait_routable(base, timeout_s=10, replicas=2, spread_s=0.3)
        assert "1 of 2 replicas reached through" in caplog.text
    finally:
        server.shutdown()
        server.server_close()


def test_reap_orphans_stops_the_haproxy_of_a_dead_owner_and_keeps_a_live_ones(tmp_path) -> None:
    """A `raypipe serve` killed outright leaves its haproxy holding the port; the next one ends it."""
    import subprocess
    import sys

    from raypipe.serve.ingress import _OWNER, _PRIVATE_PREFIX, reap_orphans

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer exists
    dead, live = tmp_path / f"{_PRIVATE_PREFIX}dead", tmp_path / f"{_PRIVATE_PREFIX}live"
    procs = {}
    for folder, owner in ((dead, gone.pid), (live, os.getpid())):
        (folder / "nested").mkdir(parents=True)
        (folder / _OWNER).write_text(str(owner))
        # Stands in for haproxy: its command line names the config in the private folder.
        procs[folder] = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", "-f", str(folder / "nested" / "haproxy.cfg")]
        )
    try:
        assert reap_orphans(str(tmp_path)) == 1
        assert procs[dead].wait(timeout=10) == -signal.SIGTERM and not dead.exists()
        assert procs[live].poll() is None and live.is_dir()
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
