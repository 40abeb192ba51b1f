"""raypipe on a real multi-node Ray cluster on this machine (cluster/local.sh: head + 1 worker node).

One cluster for the module, started with a throwaway token and state dir and always torn
down (only the processes cluster/local.sh started: never `ray stop`, other Ray instances
may run here). The tests run in file order; the last one kills the worker node.

1. `raypipe submit` runs the flights pipeline (Jan-Feb slice, 30 rounds) through the Jobs API:
   the job succeeds, Ray Data tasks and both Train workers ran on both nodes (state API),
   the model is registered in the test's MLflow store, and Serve still answers over HTTP
   after the job has ended.
2. Security: the HTTP surfaces of the cluster's processes (dashboard/Jobs API, Serve; no
   MLflow server here) listen on loopback only, any HTTP server reachable on another address
   demands the token (or only serves Prometheus metrics), and the Jobs API answers 401
   without the token and 403 with a wrong one.
3. Fault: the worker node's raylet is SIGKILLed mid-training. The job fails in bounded time
   with exit code 4 and a message that names the cause, and registers nothing; the
   checkpoints written before the kill are kept.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from _sockets import is_loopback
from _sockets import listeners as tree_listeners

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux" or shutil.which("bash") is None, reason="needs Linux and bash"),
]

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("_cluster_probe.py")
SLICE = ["data.filter=month <= 2"]
UP_TIMEOUT_S = 240
JOB_TIMEOUT_S = 480


def _free_port() -> int:
    from raypipe.runtime import free_port

    return free_port()


def _state(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("multinode")
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    state_dir = tmp / "cluster"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "RAYPIPE_"))}
    env |= {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "RAYPIPE_CLUSTER_DIR": str(state_dir),
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    up = subprocess.run(
        ["bash", str(ROOT / "cluster" / "local.sh"), "up", "--workers", "1", "--cpus-per-node", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=UP_TIMEOUT_S,
    )
    try:
        assert up.returncode == 0, up.stderr[-3000:]
        st = _state(state_dir / "cluster.env")
        yield {
            "tmp": tmp,
            "env": env,  # no RAY_AUTH_MODE: raypipe must switch token mode on by itself
            "dashboard": st["DASHBOARD_URL"],
            "gcs": st["GCS_ADDRESS"],
            "state_dir": state_dir,
            "token": token.read_text().strip(),
            "tracking_uri": f"sqlite:///{tmp / 'mlflow.db'}",
            "serve_port": _free_port(),
        }
    finally:
        down = subprocess.run(
            ["bash", str(ROOT / "cluster" / "local.sh"), "down"],
            cwd=ROOT,
            env=env | {"RAYPIPE_CLUSTER_STOP_TIMEOUT": "10"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        print(down.stderr[-2000:])


def _probe(c: dict, *args: str, timeout: float = 120) -> dict:
    r = subprocess.run(
        [sys.executable, str(PROBE), args[0], c["dashboard"], *args[1:]],
        env=c["env"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _submit(c: dict, sid: str, sets: list[str], *flags: str, timeout: float = JOB_TIMEOUT_S):
    cmd = [sys.executable, "-m", "raypipe", "submit", "jobs/flights.yaml", "--address", c["dashboard"], "--no-pip"]
    cmd += ["--submission-id", sid, "--tracking-uri", c["tracking_uri"], *flags]
    for s in SLICE + sets:
        cmd += ["--set", s]
    return subprocess.run(cmd, cwd=ROOT, env=c["env"], capture_output=True, text=True, timeout=timeout)


def _http(url: str, payload: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _mlflow(c: dict):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=c["tracking_uri"], registry_uri=c["tracking_uri"])


def _models(c: dict) -> list:
    return _mlflow(c).search_model_versions("name='flights'")


def _node_pids(c: dict) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in c["state_dir"].glob("*.pid")}


# --------------------------------------------------------------------------- 1. the job


def _in_range(feature: dict):
    """A value the contract accepts for ``feature`` (its minimum, or its first category)."""
    if feature["kind"] == "categorical":
        return (feature["categories"] or ["unseen"])[0]
    return int(feature["min"]) if feature["dtype"].startswith(("int", "uint")) else feature["min"]


def test_flights_job_runs_on_both_nodes_registers_and_stays_served(cluster: dict) -> None:
    sid = f"raypipe-mn-{uuid.uuid4().hex[:8]}"
    port = cluster["serve_port"]
    t0 = time.monotonic()
    r = _submit(
        cluster,
        sid,
        ["train.num_boost_round=30", f"serve.port={port}", f"runtime.storage_path={cluster['tmp'] / 'ckpt'}"],
        "--timeout",
        str(JOB_TIMEOUT_S - 30),
    )
    print(r.stdout[-6000:], r.stderr[-3000:], sep="\n")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"job {sid} SUCCEEDED" in r.stdout and "2 node(s)" in r.stdout
    print(f"job wall time {time.monotonic() - t0:.0f}s")

    # Where it ran, from Ray's state API (token-authenticated).
    p = _probe(cluster, "placement", sid)
    nodes = set(p["alive_nodes"])
    assert len(nodes) == 2, p["alive_nodes"]
    workers = [a for a in p["actors"] if a["class_name"] == "RayTrainWorker"]
    data_tasks = [
        t
        for t in p["tasks"]
        if t["node_id"] and any(k in t["name"] for k in ("ReadFiles", "MapBatches", "Filter", "ListFiles", "Footer"))
    ]
    by_node: dict[str, list[str]] = {}
    for t in data_tasks:
        by_node.setdefault(t["node_id"], []).append(t["name"])
    print("nodes:", sorted(nodes), "head:", p["head_node"])
    print("Train workers:", [(a["node_id"], a["state"]) for a in workers])
    print("Ray Data tasks per node:", {n: sorted(set(v)) for n, v in by_node.items()})
    assert {a["node_id"] for a in workers} == nodes, "Train workers did not use both nodes"
    assert set(by_node) == nodes, "Ray Data tasks did not run on both nodes"

    # Registered in the test's store (an absolute SQLite path: the job ran in a temp copy of the repo).
    versions = _models(cluster)
    assert len(versions) == 1, versions
    assert _mlflow(cluster).get_model_version_by_alias("flights", "champion").version == versions[0].version

    # Serve outlives the job (RAY_ADDRESS is set for a Ray Job: no serve.shutdown), on loopback.
    assert _probe(cluster, "job", sid)["status"] == "SUCCEEDED"
    status, body = _http(f"http://127.0.0.1:{port}/metadata")
    assert status == 200, body
    meta = json.loads(body)
    assert meta["model_name"] == "flights" and meta["model_version"] == str(versions[0].version)
    # Every nullable feature may be missing; the others (null is a 422 there) get an in-range value.
    row = {f["name"]: None if f["nullable"] else _in_range(f) for f in meta["schema"]["features"]}
    sample = {"month": 1, "day": 15, "hour": 8, "origin": "JFK", "carrier": "B6", "distance": 1000}
    row.update({k: v for k, v in sample.items() if k in row})
    status, body = _http(f"http://127.0.0.1:{port}/predict", row)
    assert status == 200, body
    answer = json.loads(body)
    assert answer["model_version"] == str(versions[0].version) and len(answer["prediction"]) == 1
    print("HTTP after the job ended:", {k: answer[k] for k in ("prediction", "probabilities", "model_version")})


# --------------------------------------------------------------------------- 2. security


def _reach(ip: str) -> str:
    """An address to connect to for a listener on ``ip`` (wildcards: this host's node address)."""
    ip = ip.removeprefix("::ffff:")
    if ip in ("0.0.0.0", "::", ""):
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent; picks the routable source address
            return s.getsockname()[0]
    return f"[{ip}]" if ":" in ip else ip


def _http_probe(host: str, port: int) -> tuple[int | None, str]:
    """Status and body start of an unauthenticated GET /api/version, or (None, why) if not HTTP/1.1."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/api/version", timeout=3) as r:
            return r.status, r.read(200).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(200).decode(errors="replace")
    except Exception as e:  # noqa: BLE001 - gRPC and other non-HTTP servers end up here
        return None, type(e).__name__


def _audit_sockets(c: dict, *, serve_port: int | None) -> list[tuple]:
    dash_port = int(c["dashboard"].rsplit(":", 1)[1])
    listeners = tree_listeners(list(_node_pids(c).values()))
    for ip, port, pid, name in sorted(listeners, key=lambda x: x[1]):
        print(f"  listen {ip:>22}:{port:<6} pid {pid:<7} {name}")
    assert any(port == dash_port for _, port, _, _ in listeners), "the dashboard was not found"
    # The HTTP surfaces: dashboard + Jobs API, Serve, and MLflow (none: the store is SQLite).
    for ip, port, _, name in listeners:
        if port == dash_port or port == serve_port:
            assert is_loopback(ip), f"{name} serves HTTP on {ip}:{port}, not loopback"
        assert "mlflow" not in name.lower() and "gunicorn" not in name.lower(), f"unexpected MLflow server {name}"
    if serve_port:
        assert any(port == serve_port for _, port, _, _ in listeners), "Serve's proxy was not found"
    # Everything else reachable off-loopback: not HTTP (Ray's token-checked gRPC), or HTTP that wants
    # the token, or Ray's Prometheus metrics (documented in cluster/README.md as unauthenticated).
    open_http = []
    for ip, port, _, name in listeners:
        if is_loopback(ip):
            continue
        status, body = _http_probe(_reach(ip), port)
        if status is None or status in (401, 403):
            continue
        if body.startswith("# HELP") or "# TYPE" in body:
            continue
        open_http.append((ip, port, name, status, body[:80]))
    assert not open_http, f"HTTP answered without a token off loopback: {open_http}"
    return listeners


def test_http_surfaces_on_loopback_and_jobs_api_requires_the_token(cluster: dict) -> None:
    _audit_sockets(cluster, serve_port=cluster["serve_port"])
    url = f"{cluster['dashboard']}/api/jobs/"
    status, body = _http(url)
    assert status == 401, (status, body)
    status, _ = _http(url, headers={"Authorization": "Bearer " + "0" * 64})
    assert status == 403
    status, body = _http(url, headers={"Authorization": f"Bearer {cluster['token']}"})
    assert status == 200 and isinstance(json.loads(body), list)
    # The CLI without a token to send: a clear one-line 401 error, non-zero exit.
    env = {k: v for k, v in cluster["env"].items() if k != "RAY_AUTH_TOKEN_PATH"} | {"HOME": str(cluster["tmp"])}
    r = subprocess.run(
        [sys.executable, "-m", "raypipe", "submit", "jobs/flights.yaml", "--address", cluster["dashboard"], "--no-pip"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    print(r.stderr[-1500:])
    assert r.returncode != 0 and "401 Unauthorized" in r.stderr and "RAY_AUTH_TOKEN" in r.stderr, r.stderr[-2000:]


# --------------------------------------------------------------------------- 3. node loss


def _raylet_of(pid: int) -> int:
    import psutil

    for child in psutil.Process(pid).children(recursive=True):
        if child.name() == "raylet":
            return child.pid
    raise AssertionError(f"no raylet under pid {pid}")


def test_losing_the_worker_node_mid_training_fails_cleanly_and_registers_nothing(cluster: dict) -> None:
    before = len(_models(cluster))
    experiment = _mlflow(cluster).get_experiment_by_name("raypipe").experiment_id
    runs_before = len(
        [r for r in _mlflow(cluster).search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    )
    ckpt = cluster["tmp"] / "ckpt-fault"
    sid = f"raypipe-fault-{uuid.uuid4().hex[:8]}"
    r = _submit(
        cluster,
        sid,
        [
            "train.num_boost_round=3000",
            "train.early_stopping_rounds=null",
            "train.checkpoint_every_rounds=20",
            "train.max_failures=1",
            "train.worker_start_timeout_s=10",
            f"runtime.storage_path={ckpt}",
        ],
        "--no-serve",
        "--no-wait",
        timeout=180,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]

    # Kill only once training is under way: a checkpoint is committed (Ray Train's snapshot names
    # it; a checkpoint folder alone may still wait for the other worker) and the job still runs.
    deadline = time.monotonic() + 300
    while not any(ckpt.glob("*/checkpoint_manager_snapshot.json")):
        assert time.monotonic() < deadline, "no committed checkpoint within 300s"
        assert _probe(cluster, "job", sid)["status"] in ("PENDING", "RUNNING")
        time.sleep(2)
    p = _probe(cluster, "placement", sid)
    worker_node = next(n for n in p["alive_nodes"] if n != p["head_node"])
    alive = [a for a in p["actors"] if a["class_name"] == "RayTrainWorker" and a["state"] == "ALIVE"]
    assert worker_node in {a["node_id"] for a in alive}, "no live Train worker on the worker node"
    print("sockets while the job trains (driver and Train workers included):")
    _audit_sockets(cluster, serve_port=None)

    raylet = _raylet_of(_node_pids(cluster)["worker1"])
    kept = sorted(x.name for x in ckpt.glob("*/checkpoint_2*"))
    os.kill(raylet, signal.SIGKILL)
    killed_at = time.monotonic()
    print(f"SIGKILL raylet {raylet} of node {worker_node}; checkpoints so far: {kept}")

    info = _probe(cluster, "wait", sid, "300", timeout=360)
    took = time.monotonic() - killed_at
    print(f"job {info['status']} {took:.0f}s after the kill, exit code {info['driver_exit_code']}")
    print("\n".join(ln for ln in info["logs"].splitlines() if "error:" in ln or "✓" in ln))
    assert info["status"] == "FAILED" and info["driver_exit_code"] == 4, info["message"]
    assert "XGBoost training failed after 1 retries" in info["logs"]
    assert "was a node lost?" in info["logs"] and "nothing is registered" in info["logs"]
    assert took < 240
    assert len(_models(cluster)) == before, "a model was registered by the failed run"
    # The failed run is visible in MLflow as FAILED (with its finished stages nested), never FINISHED.
    client = _mlflow(cluster)
    parents = [r for r in client.search_runs([experiment]) if "mlflow.parentRunId" not in r.data.tags]
    new = parents[: len(parents) - runs_before] if len(parents) > runs_before else []
    assert [r.info.status for r in new] == ["FAILED"], [r.info.status for r in new]
    assert any(ckpt.glob("*/checkpoint_2*/model.ubj")), "the checkpoints written before the kill are gone"
