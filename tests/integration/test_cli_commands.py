"""Every command run as a user runs it: ``raypipe ...`` in a subprocess, in a project folder whose
work folder is the default ``.raypipe`` (no --work-dir, no --tracking-uri), one success and one bad
input each. The first run starts its own local Ray; later commands join the session's Ray with
``--address`` to spare a Ray start each (``raypipe serve`` starts its own, to be reloaded from outside).

The pipeline's own failure modes (bad --set, unknown keys, missing data) are in test_cli_errors.py;
``submit`` has its cluster test in test_multinode.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from _serving import request

from raypipe.runtime import free_port

pytestmark = pytest.mark.integration

MODEL = "pipe"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "RAYPIPE_HOME")}
    env["COLUMNS"] = "250"  # rich wraps at 80 columns when not on a terminal
    return env


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raypipe", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def failed(proc: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Exit ``code`` with one ``error:`` line on stderr holding every word."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("error:"))
    assert all(w in line for w in words), line
    return line


@contextmanager
def serving(root: Path, *args: str) -> Iterator[list[str]]:
    """``raypipe serve ARGS`` in its own process group (and its own Ray): yields its output up to
    the "Serving" line (printed once the app answers), then Ctrl-C, which must exit 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "raypipe", "serve", *args],
        cwd=root,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving"):
                break
        assert lines and lines[-1].startswith("Serving"), "".join(lines)[-3000:]
        yield lines
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, ray_session) -> dict:
    """A project folder: synthetic data made by ``raypipe datasets synth``, a config, and one
    finished ``raypipe run`` (its own local Ray) in the default work folder ``.raypipe``."""
    import ray

    root = tmp_path_factory.mktemp("cli")
    out = ok(cli("datasets", "synth", "--rows", "6000", "--out", "data", cwd=root))
    assert "wrote 6,000 rows" in out and any((root / "data").rglob("*.parquet"))
    config = {
        "name": MODEL,
        "data": {"path": "data", "label": "label", "id_column": "id"},
        "train": {"num_boost_round": 20},
        "serve": {"app_name": "cli-test"},
    }
    (root / "pipe.yaml").write_text(yaml.safe_dump(config))
    out = ok(cli("run", "pipe.yaml", "--no-serve", "--summary-json", "run.json", cwd=root))
    result = json.loads((root / "run.json").read_text())
    assert "raypipe run summary" in out and result["model_version"] == "1" and result["champion"] is True
    assert (root / ".raypipe" / "mlflow.db").is_file() and result["metrics"]["test_auc"] > 0.6
    return {"root": root, "run": result, "gcs": ray.get_runtime_context().gcs_address}


def test_run_needs_a_valid_config_and_synth_a_valid_task(project) -> None:
    root = project["root"]
    failed(cli("run", "pipe.yaml", "--set", "train.nope=1", cwd=root), 2, "unknown key 'train.nope'")
    failed(cli("datasets", "synth", "--rows", "10", "--out", "other", "--task", "ranking", cwd=root), 2, "ranking")
    failed(cli("datasets", "synth", "--rows", "10", "--out", "data", cwd=root), 3, "not empty")


def test_plan_reports_cached_stages_and_why_others_rerun(project) -> None:
    root = project["root"]
    plan = json.loads(ok(cli("plan", "pipe.yaml", "--no-serve", "--json", cwd=root)))
    status = {s["stage"]: s["status"] for s in plan["stages"]}
    assert status == {
        **dict.fromkeys(
            ("ingest", "profile", "quality", "preprocess", "train", "evaluate", "register", "report"), "cached"
        ),
        "serve": "skipped",
    }
    assert {s["stage"]: s["key"] for s in plan["stages"] if s["key"]} == project["run"]["stage_keys"]
    out = ok(cli("plan", "pipe.yaml", "--no-serve", "--set", "train.params.max_depth=3", cwd=root))
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:]}
    assert "cached" in lines["preprocess"] and "will run" in lines["train"]
    assert "config changed: train.params.max_depth: (unset) -> 3" in lines["train"]
    assert "upstream reruns: train" in lines["evaluate"]
    assert "upstream reruns: train, evaluate, register" in lines["report"]
    failed(cli("plan", "missing.yaml", cwd=root), 2, "missing.yaml", "not found")


def test_promote_rollback_and_audit(project) -> None:
    root, gcs = project["root"], project["gcs"]
    # A second version that the gate keeps out (a floor no model reaches).
    args = ("--set", "train.num_boost_round=3", "--set", "register.floors={auc: 0.9999}")
    second = ok(cli("run", "pipe.yaml", "--no-serve", "--address", gcs, *args, cwd=root))
    assert f"{MODEL} v2" in second
    assert f"{MODEL}@champion: v1 -> v2" in ok(cli("promote", MODEL, "2", cwd=root))
    assert f"{MODEL}@champion: v2 -> v1" in ok(cli("rollback", MODEL, cwd=root))
    events = [json.loads(ln) for ln in ok(cli("audit", "--model", MODEL, "--json", cwd=root)).splitlines()]
    moves = [(e["version"], e["reason"]) for e in events if e["event"] == "alias_move"]
    assert moves == [("1", "gate passed"), ("2", "promote"), ("1", "rollback")]
    assert "audit trail" in ok(cli("audit", "--since", "1h", cwd=root))
    failed(cli("promote", MODEL, "99", cwd=root), 5, f"'{MODEL}' has no version 99")
    failed(cli("rollback", "no-such-model", cwd=root), 5, "no-such-model")
    failed(cli("audit", "--since", "yesterday", cwd=root), 2, "cannot read time 'yesterday'")


def test_reproduce_reruns_a_run_from_its_manifest(project) -> None:
    root = project["root"]
    out = ok(cli("reproduce", project["run"]["run_id"], "--address", project["gcs"], cwd=root))
    assert "code, packages and data are unchanged" in out and "metrics within tolerance" in out
    failed(cli("reproduce", "0" * 32, cwd=root), 5, "cannot read the manifest")


def test_predict_then_monitor_the_scored_rows_with_the_readme_command(project) -> None:
    root, gcs = project["root"], project["gcs"]
    out = ok(
        cli("predict", f"models:/{MODEL}@champion", "--input", "data", "--output", "scored", "--address", gcs, cwd=root)
    )
    assert "scored 6,000 rows" in out and any((root / "scored").rglob("*.parquet"))
    # As the README writes it: no --tracking-uri, the default store in .raypipe is found.
    mon = cli(
        "monitor", "pipe.yaml", "--model", f"models:/{MODEL}@champion", "--input", "scored", "--address", gcs, cwd=root
    )
    assert mon.returncode in (0, 8), mon.stderr[-2000:]
    assert f"monitor {MODEL}: 6,000 rows" in mon.stdout and "report:" in mon.stdout
    failed(cli("predict", f"models:/{MODEL}@champion", "--input", "nowhere", "--output", "x", cwd=root), 3, "'nowhere'")
    failed(cli("monitor", "pipe.yaml", "--model", "m", "--reference", "r.json", cwd=root), 2, "exactly one of")


def test_schema_infer_writes_a_contract(project) -> None:
    root = project["root"]
    out = ok(
        cli("schema", "infer", "data", "--label", "label", "--out", "c.yaml", "--address", project["gcs"], cwd=root)
    )
    contract = yaml.safe_load((root / "c.yaml").read_text())
    assert "label 'label' (binary)" in out and contract["label"]["name"] == "label"
    assert {f["name"] for f in contract["features"]} >= {"num_0", "cat_0"}
    failed(cli("schema", "infer", "data", "--label", "nope", "--address", project["gcs"], cwd=root), 3, "nope")


def test_tune_searches_and_registers_the_winner(project) -> None:
    root = project["root"]
    space = "tune.search_space={eta: {loguniform: [0.05, 0.3]}, max_depth: {randint: [2, 5]}}"
    keep = "register.floors={auc: 0.9999}"  # v1 stays champion for the serving test
    args = ("--set", space, "--set", "tune.num_samples=2", "--set", keep, "--address", project["gcs"])
    out = ok(cli("tune", "pipe.yaml", *args, cwd=root))
    assert "best of 2 trials" in out and f"{MODEL} v" in out
    failed(cli("tune", "pipe.yaml", cwd=root), 2, "tune.search_space")


def test_datasets_flights_builds_once_and_refuses_foreign_folders(project) -> None:
    root = project["root"]
    out = ok(cli("datasets", "flights", "--out", "flights", cwd=root))
    assert "flights dataset at" in out and len(list((root / "flights").glob("month=*"))) == 12
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("keep me")
    failed(cli("datasets", "flights", "--out", "mine", cwd=root), 3, "not a flights build")
    assert (root / "mine" / "notes.txt").read_text() == "keep me"


def test_serve_then_reload_from_another_process(project) -> None:
    """``raypipe serve CONFIG`` (its own Ray) serves the champion; after ``promote``, ``raypipe serve
    CONFIG --reload --address ...`` from a second process rolls the app over to it."""
    root = project["root"]
    failed(cli("serve", f"models:/{MODEL}@nope", cwd=root), 6, f"models:/{MODEL}@nope")
    failed(cli("serve", "pipe.yaml", "--reload", "--address", project["gcs"], cwd=root), 6, "no Serve app 'cli-test'")
    port = free_port()
    try:
        with serving(root, "pipe.yaml", "--port", str(port)) as lines:
            reload_cmd = next(ln for ln in lines if "--reload --address" in ln).split(": ", 1)[1].split()
            assert reload_cmd[:4] == ["raypipe", "serve", "pipe.yaml", "--reload"], lines
            url = f"http://127.0.0.1:{port}/predict"
            record = project["run"]["example"]
            status, body = request(url, json.dumps(record).encode())
            assert status == 200 and body["model_version"] == "1"
            ok(cli("promote", MODEL, "2", cwd=root))
            out = ok(cli(*reload_cmd[1:], cwd=root))
            assert f"now serves models:/{MODEL}/2 (was models:/{MODEL}/1)" in out
            deadline = time.monotonic() + 60
            while request(url, json.dumps(record).encode())[1].get("model_version") != "2":
                assert time.monotonic() < deadline, "the app never answered with v2"
                time.sleep(0.2)
    finally:
        ok(cli("rollback", MODEL, cwd=root))


def test_ci_exits_0_when_the_gate_passes_1_when_the_champion_stays_and_2_on_bad_input(project) -> None:
    """`raypipe ci` as a workflow calls it: exit codes, the verdict file and its Markdown, no alias
    moved by --dry-run (a model of its own; the project's cached stages up to evaluate are reused)."""
    from mlflow import MlflowClient

    root, gcs = project["root"], project["gcs"]
    own = ("--set", "register.model_name=pipe-ci", "--address", gcs)
    first = cli("ci", "pipe.yaml", *own, "--verdict", "ci/first.json", cwd=root)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    v1 = json.loads((root / "ci" / "first.json").read_text())
    assert (v1["decision"], v1["passed"], v1["promoted"], v1["version"]) == ("passed", True, True, "1")
    assert v1["champion"]["version"] is None and "no champion yet" in v1["reason"]
    assert "passed the gate (took the alias)" in (root / "ci" / "first.md").read_text()

    # A much weaker model, judged only: exit 1, the reason on stderr and in the verdict, v1 keeps the alias.
    worse = cli(
        "ci", "pipe.yaml", *own, "--dry-run", "--set", "train.num_boost_round=1", "--set",
        "register.max_regression=0", "--verdict", "ci/worse.json", cwd=root,
    )  # fmt: skip
    assert worse.returncode == 1, worse.stdout[-3000:] + worse.stderr[-3000:]
    v2 = json.loads((root / "ci" / "worse.json").read_text())
    assert (v2["decision"], v2["passed"], v2["promoted"], v2["dry_run"]) == ("kept champion", False, False, True)
    assert v2["champion"]["version"] == "1" and v2["champion"]["scored_on"] == "this test split"
    assert v2["champion"]["metrics"]["auc"] > v2["metrics"]["auc"]
    assert "champion stays on v1" in v2["reason"] and f"gate: {v2['reason']}" in worse.stderr.replace("\n", "")
    md = (root / "ci" / "worse.md").read_text()
    assert "the champion stays" in md and "| **auc** (gate) |" in md and "▼" in md

    # The same model as the champion, judged only: it passes, and still no alias moves.
    same = cli("ci", "pipe.yaml", *own, "--dry-run", "--verdict", "ci/same.json", cwd=root)
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    v3 = json.loads((root / "ci" / "same.json").read_text())
    assert (v3["passed"], v3["promoted"]) == (True, False) and "would take the alias" in same.stdout
    client = MlflowClient(tracking_uri=f"sqlite:///{root / '.raypipe' / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("pipe-ci", "champion").version) == "1"
    tags = {v: client.get_model_version("pipe-ci", v).tags.get("raypipe.candidate") for v in ("1", "2", "3")}
    assert tags == {"1": None, "2": "failed", "3": "passed"}

    failed(cli("ci", "pipe.yaml", "--set", "train.nope=1", cwd=root), 2, "unknown key 'train.nope'")
    failed(cli("ci", "missing.yaml", cwd=root), 2, "missing.yaml")


def _replica_processes(app: str) -> int:
    import psutil

    mark = f"ServeReplica:{app}:"
    return sum(1 for p in psutil.process_iter(["cmdline"]) if any(mark in a for a in p.info["cmdline"] or ()))


def test_serve_scales_to_zero_and_answers_the_first_request_after_idle(project) -> None:
    """``serve.autoscaling.min_replicas: 0``: idle, no replica process is left; the next request waits
    for a cold start and gets a 200. A timeout shorter than a cold start is refused up front."""
    root = project["root"]
    config = yaml.safe_load((root / "pipe.yaml").read_text())
    serve = {"app_name": "zero", "autoscaling": {"min_replicas": 0, "max_replicas": 1, "downscale_delay_s": 1}}
    (root / "zero-bad.yaml").write_text(yaml.safe_dump({**config, "serve": serve}))
    failed(cli("serve", "zero-bad.yaml", cwd=root), 2, "min_replicas 0 needs request_timeout_s >= 30")
    (root / "zero.yaml").write_text(yaml.safe_dump({**config, "serve": {**serve, "request_timeout_s": 60}}))
    port = free_port()
    with serving(root, "zero.yaml", "--port", str(port)):
        t0 = time.monotonic()
        while (left := _replica_processes("zero")) and time.monotonic() - t0 < 90:
            time.sleep(0.5)
        idle_s = time.monotonic() - t0
        assert left == 0, f"{left} replica process(es) left {idle_s:.0f} s after the last request"
        body = json.dumps(project["run"]["example"]).encode()
        t1 = time.monotonic()
        cold = request(f"http://127.0.0.1:{port}/predict", body, timeout_s=90)
        cold_s = time.monotonic() - t1
        assert cold[0] == 200 and cold[1]["model_version"] == "1", cold
        t2 = time.monotonic()
        assert request(f"http://127.0.0.1:{port}/predict", body)[0] == 200
        print(f"scale to zero: 0 replicas {idle_s:.1f} s after deploy; cold start {cold_s:.2f} s; "
              f"then {1000 * (time.monotonic() - t2):.0f} ms")  # fmt: skip
