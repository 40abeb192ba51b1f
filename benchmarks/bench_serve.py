"""HTTP serving: raypipe on Ray Serve against a plain FastAPI + uvicorn app, same model, same run.

    flock /tmp/raypipe-heavy.lock python benchmarks/bench_serve.py --duration 8

Both sides do the same work per request (body limit, contract parser, preprocessor +
``inplace_predict``, the same JSON answer via orjson) on the same 8-feature, 100-tree model.
The baselines are ``benchmarks/_fastapi_baseline.py`` under one uvicorn worker and under as many
workers as cores (what a user on this machine would run); the second is measured again after every
Serve variant (interleaved: the machine's other load drifts during a run). Each Serve variant
runs in its own child process that starts its own local Ray (2 CPUs), because the ingress mode
is read from the environment when Ray starts. The load tool is ``wrk`` (keep-alive, loopback),
the same for every target: concurrency 1 and 16 with one record per request, and concurrency 16
with 100 records per request (rows/s).

Variants (``--variants``), each a lever studied on its own:
- ``default``: what ``raypipe serve`` ships (HAProxy ingress when a binary is found), 1 replica.
- ``default-r2`` / ``default-r4``: the same with 2 / 4 replicas (0.25 CPU each).
- ``default-r2-nobatch``: 2 replicas, ``max_batch_size=1``.
- ``proxy``: Serve's default HTTP proxy actor -> replica (the shipped default).
- ``proxy-nobatch``: the same with ``max_batch_size=1`` (what ``@serve.batch`` gives).
- ``direct``: ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1``: the replica itself serves HTTP.
- ``haproxy``: ``RAY_SERVE_ENABLE_HA_PROXY=1`` with Debian's haproxy in front of the replicas.
- ``proxy-close``: the default proxy with ``Connection: close`` on every request (no keep-alive).
- ``*-tp``: the same with ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (user code and router on the main
  loop, gRPC between proxy and replica, no per-request log to stderr).

Results go to ``benchmarks/results/serve.json``; ratios are Serve / FastAPI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))


def _haproxy() -> str:
    from raypipe.serve.ingress import haproxy_binary

    return haproxy_binary()


VARIANTS = {
    # What `raypipe serve` / `raypipe run` do: raypipe.serve.ingress.use_ingress(ServeConfig()) in the child.
    "default": ({"RAYPIPE_BENCH_DEFAULT_INGRESS": "1"}, {}),
    "default-r2": ({"RAYPIPE_BENCH_DEFAULT_INGRESS": "1"}, {"num_replicas": 2}),
    "default-r4": ({"RAYPIPE_BENCH_DEFAULT_INGRESS": "1"}, {"num_replicas": 4}),
    "default-r2-nobatch": ({"RAYPIPE_BENCH_DEFAULT_INGRESS": "1"}, {"num_replicas": 2, "max_batch_size": 1}),
    "proxy": ({}, {}),
    "proxy-nobatch": ({}, {"max_batch_size": 1}),
    "direct": ({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"}, {}),
    "haproxy": ({"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_BINARY_PATH": _haproxy()}, {}),
    "proxy-close": ({}, {}),
    "proxy-tp": ({"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {}),
    "direct-tp": ({"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}, {}),
    "haproxy-tp": (
        {
            "RAY_SERVE_ENABLE_HA_PROXY": "1",
            "RAY_SERVE_HAPROXY_BINARY_PATH": _haproxy(),
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        },
        {},
    ),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _serves(url: str, bundle: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/metadata", timeout=1) as r:
            return json.loads(r.read()).get("model_uri") == bundle
    except (OSError, ValueError):
        return False


def _wait_ready(proc: subprocess.Popen, timeout_s: float = 180) -> str:
    """The child prints ``READY <url>`` once the endpoint answers."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            continue
        if line.startswith("READY "):
            return line.split()[1]
    raise TimeoutError("server did not become ready")


# --- the load tool ---------------------------------------------------------------


def _wrk(url: str, body: bytes, connections: int, duration_s: int, close: bool = False) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        if close:
            f.write('wrk.headers["Connection"] = "close"\n')
        f.write(f"wrk.body = {json.dumps(body.decode())}\n")
        script = f.name
    threads = 1 if connections == 1 else 2
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", script, url]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    os.unlink(script)

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def _measure(url: str, duration_s: int, close: bool = False) -> dict:
    from _bench_model import record

    one = json.dumps(record(0)).encode()
    hundred = json.dumps([record(i) for i in range(100)]).encode()
    _wrk(url + "/predict", one, 4, 2, close)  # warm-up
    out = {
        "c1": _wrk(url + "/predict", one, 1, duration_s, close),
        "c16": _wrk(url + "/predict", one, 16, duration_s, close),
        "batch100_c16": _wrk(url + "/predict", hundred, 16, duration_s, close),
    }
    out["batch100_c16"]["rows_per_s"] = out["batch100_c16"]["req_per_s"] * 100
    return out


# --- the servers -----------------------------------------------------------------


def _serve_child(bundle: str, port: int, settings: dict) -> None:
    """Runs in a child process: a local Ray, the raypipe app, READY <url>, then wait for SIGTERM."""
    import ray

    from raypipe.config import ServeConfig
    from raypipe.serve.deploy import deploy

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # for sigwait below
    os.environ.pop("RAY_ADDRESS", None)
    if os.environ.get("RAYPIPE_BENCH_DEFAULT_INGRESS"):
        from raypipe import runtime
        from raypipe.serve.ingress import use_ingress

        use_ingress(ServeConfig())
        runtime.connect(num_cpus=2, log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    cfg = ServeConfig(port=port, log_predictions=False, **settings)
    url = deploy(bundle, None, cfg)
    # Direct ingress: the replica itself listens on a port from 30000; find ours by the model it serves
    # (another Ray on this machine may hold others). Otherwise the proxy's URL.
    direct = os.environ.get("RAY_SERVE_ENABLE_DIRECT_INGRESS") == "1"
    candidates = [f"http://127.0.0.1:{p}" for p in range(30000, 30050)] if direct else [url]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        for u in candidates:
            if _serves(u, bundle):
                print(f"READY {u} {url}", flush=True)
                signal.sigwait({signal.SIGTERM, signal.SIGINT})
                ray.shutdown()
                return
        time.sleep(0.5)
    raise SystemExit("no endpoint answered /healthz")


def _start(cmd: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ | env, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _fastapi(bundle: str, duration_s: int, workers: int = 1) -> dict:
    port = _free_port()
    # One OpenMP thread, as Ray gives a replica with fractional CPUs: two spinning OpenMP threads on a
    # shared 2-core box made the baseline's p50 10 ms.
    env = {"RAYPIPE_BUNDLE": bundle, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "_fastapi_baseline:app", "--port", str(port), "--log-level", "warning"]
    cmd += ["--no-access-log", "--workers", str(workers)]
    proc = _start(cmd, env)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.2)
        return _measure(url, duration_s)
    finally:
        _stop(proc)


def _haproxy_pids() -> set[int]:
    found = subprocess.run(["pgrep", "-f", "haproxy -db -f"], capture_output=True, text=True).stdout
    return {int(p) for p in found.split()}


def _serve(bundle: str, variant: str, duration_s: int) -> dict:
    env, settings = VARIANTS[variant]
    before = _haproxy_pids()
    cmd = [sys.executable, __file__, "--child", bundle, "--port", str(_free_port()), "--settings", json.dumps(settings)]
    proc = _start(cmd, env | {"PYTHONPATH": str(ROOT)})
    try:
        url = _wait_ready(proc)
        out = _measure(url, duration_s, close=variant == "proxy-close") | {"url": url}
        explained = _explain_c16(url, duration_s) if variant.startswith("default") else None
        return out | ({"explain_c16": explained} if explained else {})
    finally:
        _stop(proc)
        # Ray's shutdown leaves the haproxy it started running: stop the ones this variant started.
        for pid in _haproxy_pids() - before:
            os.kill(pid, signal.SIGTERM)


def _explain_c16(url: str, duration_s: int) -> dict | None:
    """``POST /explain`` at c=16 (one record), when the server has it: the explanation's cost under load."""
    from _bench_model import record

    body = json.dumps(record(0)).encode()
    req = urllib.request.Request(url + "/explain", body, {"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5).close()
    except OSError:
        return None
    return _wrk(url + "/explain", body, 16, duration_s)


def _ratios(r: dict, base: dict) -> dict:
    return {
        "c16_throughput_x": round(r["c16"]["req_per_s"] / base["c16"]["req_per_s"], 3),
        "c1_p50_minus_fastapi_ms": round(r["c1"]["p50_ms"] - base["c1"]["p50_ms"], 3),
        "batch100_rows_x": round(r["batch100_c16"]["rows_per_s"] / base["batch100_c16"]["rows_per_s"], 3),
    }


def _mean(runs: list[dict]) -> dict:
    """Field-wise mean of ``_measure`` results (the baseline runs either side of a variant)."""
    out: dict = {}
    for load in ("c1", "c16", "batch100_c16"):
        keys = [k for k, v in runs[0][load].items() if isinstance(v, (int, float))]
        out[load] = {k: round(sum(r[load][k] for r in runs) / len(runs), 3) for k in keys}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    p.add_argument("--variants", default="default,default-r2,default-r4,default-r2-nobatch,proxy,direct")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _serve_child(args.child, args.port, json.loads(args.settings))
        return
    from _bench_model import build_bundle

    if shutil.which("wrk") is None:
        raise SystemExit("bench_serve.py needs the wrk load tool: apt-get install wrk")
    cores = os.cpu_count() or 1
    wide = f"fastapi-w{cores}"
    results: dict = {}
    ratios: dict = {}

    def run(name: str, measure) -> dict:
        try:
            results[name] = measure()
        except Exception as e:  # noqa: BLE001 - a lever that does not work here is a result too
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        print(name, json.dumps(results[name]), flush=True)
        return results[name]

    with tempfile.TemporaryDirectory(prefix="raypipe-bench-serve-") as tmp:
        bundle = str(build_bundle(Path(tmp) / "bundle"))
        run("fastapi", lambda: _fastapi(bundle, args.duration))
        before = run(f"{wide}#0", lambda: _fastapi(bundle, args.duration, cores))
        for i, variant in enumerate(args.variants.split(","), 1):
            r = run(variant, lambda v=variant: _serve(bundle, v, args.duration))
            # Interleaved: the wide baseline after every variant; each variant is compared with
            # the mean of the baseline runs either side of it.
            after = run(f"{wide}#{i}", lambda: _fastapi(bundle, args.duration, cores))
            if "error" in r:
                continue
            ratios[variant] = {
                f"vs_{wide}": _ratios(r, _mean([before, after])),
                "vs_fastapi_1_worker": _ratios(r, results["fastapi"]),
            }
            if "explain_c16" in r:
                ratios[variant]["explain_vs_predict_c16_x"] = round(
                    r["explain_c16"]["req_per_s"] / r["c16"]["req_per_s"], 3
                )
            before = after
        run("fastapi_end", lambda: _fastapi(bundle, args.duration))
    doc = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": cores, "python": platform.python_version()},
        "duration_s": args.duration,
        "load_tool": "wrk (keep-alive unless noted), loopback",
        "results": results,
        "ratios": ratios,
        "targets": {
            f"vs_{wide}.c16_throughput_x": ">= 1.0",
            f"vs_{wide}.batch100_rows_x": ">= 1.0",
            f"vs_{wide}.c1_p50_minus_fastapi_ms": "<= 0.5",
            "explain_vs_predict_c16_x": ">= 0.5",
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(ratios, indent=2))
    print(f"results: {os.path.relpath(args.out, ROOT)}")


if __name__ == "__main__":
    main()
