"""`raypipe submit` and multi-node storage, without a cluster.

* the runtime_env template (jobs/runtime_env.yaml): parses, pins raypipe's
  dependencies (never ray), excludes data, .git and virtualenvs;
* the working-dir size check, compared file-for-file with Ray's own packaging;
* the entrypoint, address and exit-code rules;
* node-local path detection and the shared-storage check (pure functions);
* RAY_AUTH_MODE=token for clients joining by address.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from raypipe import runtime
from raypipe.config import load_config
from raypipe.errors import ConfigError
from raypipe.runtime import RaySession
from raypipe.runtime.submit import (
    MAX_UPLOAD_BYTES,
    check_working_dir,
    entrypoint,
    exit_code_for,
    load_runtime_env,
    resolve_address,
    submit,
    working_dir_size,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "jobs" / "runtime_env.yaml"


# --------------------------------------------------------------------------- the template


def _requirement_name(req: str) -> str:
    for sep in ("[", "=", ">", "<", "~", "!", ";", " "):
        req = req.split(sep)[0]
    return req.strip().lower().replace("_", "-")


def test_template_parses_and_pins_every_dependency_but_ray() -> None:
    env = load_runtime_env(TEMPLATE, working_dir=ROOT)
    pins = env["pip"]["packages"]
    assert all(p.count("==") == 1 for p in pins), pins
    pinned = {_requirement_name(p): p.split("==")[1] for p in pins}
    assert "ray" not in pinned, "ray comes from the cluster image; pinning it in runtime_env breaks the job"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    wanted = {_requirement_name(d) for d in deps} - {"ray"}
    assert wanted <= set(pinned), f"not pinned: {wanted - set(pinned)}"
    # Each pin satisfies pyproject's bounds. Not "equals what is installed here": a fresh install
    # takes the newest release, so that check failed whenever a dependency published one.
    bounds = {_requirement_name(d): Requirement(d).specifier for d in deps}
    for name, pin in pinned.items():
        if name in bounds:
            assert bounds[name].contains(pin, prereleases=True), f"{name}: pin {pin} outside pyproject's {bounds[name]}"


def test_template_has_no_secrets_and_only_string_env_vars() -> None:
    raw = yaml.safe_load(TEMPLATE.read_text())
    for k, v in (raw.get("env_vars") or {}).items():
        assert isinstance(v, str)
        assert not any(s in k.upper() for s in ("TOKEN", "PASSWORD", "SECRET", "KEY")), k


def test_template_excludes_data_git_and_virtualenvs(tmp_path: Path) -> None:
    excludes = load_runtime_env(TEMPLATE, working_dir=tmp_path)["excludes"]
    files = {
        ".git/objects/ab/cdef": 10,
        ".venv/lib/python3.11/site-packages/x.py": 10,
        ".raypipe/mlflow.db": 10,
        ".raypipe/datasets/flights/month=1/part-0.parquet": 10,
        "data/big.csv": 10,
        "mlruns/0/meta.yaml": 10,
        "raypipe/__pycache__/cli.cpython-311.pyc": 10,
        "raypipe/cli.py": 10,
        "raypipe/data/ingest.py": 10,  # a package named data is code, not data
        "jobs/flights.yaml": 10,
        "jobs/runtime_env.yaml": 10,
    }
    for rel, n in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * n)
    kept = _uploaded(tmp_path, excludes)
    assert kept == {"raypipe/cli.py", "raypipe/data/ingest.py", "jobs/flights.yaml", "jobs/runtime_env.yaml"}


def test_template_options(tmp_path: Path) -> None:
    env = load_runtime_env(TEMPLATE, working_dir=tmp_path, pip=False, env_vars={"MLFLOW_TRACKING_URI": "x"})
    assert "pip" not in env
    assert env["working_dir"] == str(tmp_path.resolve())
    assert env["env_vars"]["MLFLOW_TRACKING_URI"] == "x"
    assert env["env_vars"]["RAY_DATA_DISABLE_PROGRESS_BARS"] == "1"  # the template's own stay


@pytest.mark.parametrize(
    "text, match",
    [
        ("- a\n- b\n", "must be a mapping"),
        ("excludes: .git\n", "list of gitignore-style patterns"),
        ("working_dir: s3://bucket/x.zip\n", "local folder"),
        ("env_vars: {N: 3}\n", "must be a string"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_templates_are_config_errors(tmp_path: Path, text: str, match: str) -> None:
    p = tmp_path / "env.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_runtime_env(p)


def test_missing_template(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_runtime_env(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- size check


def _uploaded(root: Path, excludes: list[str]) -> set[str]:
    """Files Ray 2.60 itself would put in the working-dir zip (its own packaging code)."""
    from ray._private.ray_constants import get_runtime_env_default_excludes
    from ray._private.runtime_env.packaging import _zip_files

    out = root.parent / f"{root.name}-pkg.zip"
    _zip_files(str(root), get_runtime_env_default_excludes() + excludes, str(out), include_gitignore=True)
    with zipfile.ZipFile(out) as z:
        names = {n for n in z.namelist() if not n.endswith("/")}
    out.unlink()
    ours = working_dir_size(root, excludes, include_gitignore=True)
    assert ours.files == len(names), "raypipe's walk and Ray's packaging disagree"
    return names


def test_size_walk_matches_rays_packaging(tmp_path: Path) -> None:
    tree = {
        "a.py": 100,
        "big.bin": 5000,
        "sub/keep.txt": 10,
        "sub/skip.log": 20,
        "sub/.gitignore": "*.log\n",
        "sub/deeper/x.log": 30,
        "sub/deeper/y.txt": 40,
        "other/x.log": 50,  # the sub/.gitignore does not reach here
        ".rayignore": "/other/\n",
        "nested/.rayignore": "y.txt\n",
        "nested/y.txt": 60,
        "nested/z.txt": 70,
        ".gitignore": "big.bin\n",
        ".git/HEAD": 10,  # Ray's default excludes
        "venv/bin/python": 10,
        "pkg/__pycache__/m.pyc": 10,
    }
    for rel, content in tree.items():
        p = tmp_path / "wd" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content) if isinstance(content, str) else p.write_bytes(b"0" * content)
    root = tmp_path / "wd"
    names = _uploaded(root, ["a.py"])
    assert names == {
        "sub/keep.txt",
        "sub/.gitignore",
        "sub/deeper/y.txt",
        ".rayignore",
        "nested/.rayignore",
        "nested/z.txt",
        ".gitignore",
    }
    size = working_dir_size(root, ["a.py"])
    assert size.total_bytes == sum((root / n).stat().st_size for n in names)
    assert size.largest[0] == ("nested/z.txt", 70)


def test_gitignore_and_default_excludes_can_be_switched_off_like_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".gitignore").write_text("secret.bin\n")
    (tmp_path / "secret.bin").write_bytes(b"0" * 1000)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref")
    assert working_dir_size(tmp_path).files == 1  # .gitignore itself
    monkeypatch.setenv("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "1")
    assert working_dir_size(tmp_path).files == 2
    monkeypatch.setenv("RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES", "")
    assert working_dir_size(tmp_path).files == 3


def test_check_working_dir_names_the_largest_files(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"0" * 4096)
    (tmp_path / "code.py").write_bytes(b"0" * 100)
    with pytest.raises(ConfigError) as e:
        check_working_dir(tmp_path, [], limit_bytes=2048)
    assert "model.bin (0.0 MiB)" in str(e.value) and "excludes" in str(e.value)
    assert check_working_dir(tmp_path, ["model.bin"], limit_bytes=2048).files == 1


def test_this_checkout_fits_in_one_upload() -> None:
    env = load_runtime_env(TEMPLATE, working_dir=ROOT)
    size = check_working_dir(ROOT, env["excludes"])
    assert size.upload_bytes < MAX_UPLOAD_BYTES / 10
    assert not any(rel.startswith((".git/", ".venv/", ".raypipe/")) for rel, _ in size.largest)


# --------------------------------------------------------------------------- the job


def test_entrypoint_quotes_overrides_and_uses_the_uploaded_package() -> None:
    cmd = entrypoint(
        "jobs/flights.yaml", ["data.filter=month <= 2"], tracking_uri="sqlite:////tmp/a b/m.db", no_serve=True
    )
    assert shlex.split(cmd) == [
        "python",
        "-m",
        "raypipe",
        "run",
        "jobs/flights.yaml",
        "--set",
        "data.filter=month <= 2",
        "--tracking-uri",
        "sqlite:////tmp/a b/m.db",
        "--no-serve",
    ]


def test_entrypoint_runs_ci_when_asked_and_ci_never_takes_no_serve() -> None:
    cmd = entrypoint("jobs/flights.yaml", ["train.num_boost_round=5"], no_serve=True, command="ci")
    assert shlex.split(cmd) == [
        *("python", "-m", "raypipe", "ci", "jobs/flights.yaml"),
        *("--set", "train.num_boost_round=5"),
    ]


def test_address_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # a GCS address is not the Jobs API
    assert resolve_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.1:8265")
    assert resolve_address(None) == "http://10.0.0.1:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9999")
    assert resolve_address(None) == "http://127.0.0.1:9999"
    assert resolve_address("http://h:1") == "http://h:1"


@pytest.mark.parametrize(
    "status, driver, code", [("SUCCEEDED", 0, 0), ("FAILED", 4, 4), ("FAILED", None, 1), ("STOPPED", None, 130)]
)
def test_exit_code_follows_the_job(status: str, driver: int | None, code: int) -> None:
    assert exit_code_for(status, driver) == code


def test_submit_validates_locally_before_contacting_the_cluster(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "runtime_env.yaml").write_text(TEMPLATE.read_text())
    (tmp_path / "jobs" / "x.yaml").write_text("data: {path: d, label: y}\n")
    nowhere = "http://127.0.0.1:9"  # nothing listens: any request would fail differently
    with pytest.raises(ConfigError, match="unknown key 'train.nope'"):
        submit("jobs/x.yaml", address=nowhere, working_dir=tmp_path, overrides=["train.nope=1"])
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    outside.write_text("data: {path: d, label: y}\n")
    with pytest.raises(ConfigError, match="outside the working dir"):
        submit(str(outside), address=nowhere, working_dir=tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        submit("jobs/missing.yaml", address=nowhere, working_dir=tmp_path)


# --------------------------------------------------------------------------- storage


@pytest.mark.parametrize(
    "uri, local",
    [
        ("/data/flights", True),
        ("relative/dir", True),
        ("file:///mnt/x", True),
        ("local:///tmp/x", True),
        ("sqlite:////tmp/mlflow.db", True),
        ("http://127.0.0.1:5000", True),
        ("http://localhost:5000", True),
        ("postgresql://user@localhost/mlflow", True),
        ("https://mlflow.internal", False),
        ("postgresql://db.internal/mlflow", False),
        ("s3://bucket/path", False),
        ("gs://bucket/path", False),
        ("abfs://container@account.dfs.core.windows.net/p", False),
        ("hdfs://namenode:8020/p", False),
        ("databricks", False),
        (None, False),
        ("", False),
    ],
)
def test_is_node_local(uri: str | None, local: bool) -> None:
    assert runtime.is_node_local(uri) is local


def _session(hosts: tuple[str, ...], nodes: int = 2) -> RaySession:
    return RaySession(None, False, 4.0, nodes, 2.0, hosts)


PATHS = {"data.path": "/srv/flights", "MLflow tracking store": "sqlite:////srv/m.db", "checkpoints": "s3://b/ckpt"}


def test_multi_host_cluster_rejects_local_paths_with_an_explanation() -> None:
    with pytest.raises(ConfigError) as e:
        runtime.check_shared_storage(_session(("10.0.0.1/a", "10.0.0.2/b")), PATHS)
    msg = str(e.value)
    assert "data.path: /srv/flights" in msg and "sqlite:////srv/m.db" in msg and "s3://b/ckpt" not in msg
    assert "shared storage" in msg and "s3://" in msg and "runtime.shared_storage: true" in msg
    assert e.value.context["paths"] == {k: v for k, v in PATHS.items() if k != "checkpoints"}


def test_one_host_or_declared_shared_storage_allows_local_paths() -> None:
    runtime.check_shared_storage(_session(("192.0.2.2/box",)), PATHS)  # cluster/local.sh: nodes share a host
    runtime.check_shared_storage(_session(("10.0.0.1/a", "10.0.0.2/b")), PATHS, shared_storage=True)
    runtime.check_shared_storage(_session(("10.0.0.1/a", "10.0.0.2/b")), {"data.path": "gs://b/d", "x": None})


def test_node_hosts_ignores_dead_nodes_and_counts_cpu_less_heads() -> None:
    nodes = [
        {"Alive": True, "NodeManagerAddress": "192.0.2.2", "NodeManagerHostname": "box", "Resources": {}},
        {"Alive": True, "NodeManagerAddress": "192.0.2.2", "NodeManagerHostname": "box", "Resources": {"CPU": 2}},
        {"Alive": False, "NodeManagerAddress": "10.0.0.9", "NodeManagerHostname": "gone", "Resources": {}},
    ]
    assert runtime.node_hosts(nodes) == ("192.0.2.2/box",)
    nodes.append({"Alive": True, "NodeManagerAddress": "10.0.0.3", "NodeManagerHostname": "w1", "Resources": {}})
    assert len(runtime.node_hosts(nodes)) == 2


def test_two_node_budget_leaves_room_for_data_and_serve_and_knows_the_nodes() -> None:
    from raypipe.config import TrainConfig
    from raypipe.runtime import CpuBudget

    b = CpuBudget.plan(_session(("192.0.2.2/box",)), TrainConfig(), data_cpus=0.5, serve_cpus=0.25)
    assert (b.num_workers, b.cpus_per_worker, b.num_nodes) == (2, 1.5, 2)  # one worker per node (SPREAD)
    assert b.num_workers * b.cpus_per_worker + b.data_cpus + b.serve_cpus <= 4.0


def test_storage_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    raw = {"data": {"path": "d", "label": "y"}}
    assert runtime.storage_path(load_config(raw=raw), tmp_path) == str(tmp_path / "train")
    cfg = load_config(raw=raw | {"runtime": {"storage_path": "ckpt", "shared_storage": True}})
    assert runtime.storage_path(cfg, tmp_path) == str(tmp_path / "ckpt")
    cfg = load_config(raw=raw | {"runtime": {"storage_path": "s3://bucket/raypipe"}})
    assert runtime.storage_path(cfg, tmp_path) == "s3://bucket/raypipe"


# --------------------------------------------------------------------------- token


def _auth_probe(env: dict[str, str]) -> dict:
    """ensure_client_token_auth in a fresh process that imported Ray first (as the CLI does)."""
    code = (
        "import json, os, ray\n"
        "from ray._raylet import AuthenticationMode, get_authentication_mode\n"
        "from raypipe.runtime.token import ensure_client_token_auth\n"
        "on = ensure_client_token_auth()\n"
        "print(json.dumps({'on': on, 'env': os.environ.get('RAY_AUTH_MODE'),"
        " 'ray_token_mode': get_authentication_mode() == AuthenticationMode.TOKEN}))\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    r = subprocess.run([sys.executable, "-c", code], env=base | env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_token_mode_is_switched_on_when_a_token_exists(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 32)
    token.chmod(0o644)
    got = _auth_probe({"RAY_AUTH_TOKEN_PATH": str(token), "HOME": str(tmp_path)})
    assert got == {"on": True, "env": "token", "ray_token_mode": True}
    assert token.stat().st_mode & 0o777 == 0o600  # tightened on the way


def test_explicit_auth_mode_is_respected_and_no_token_means_no_change(tmp_path: Path) -> None:
    assert _auth_probe({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x" * 32})["on"] is False
    got = _auth_probe({"HOME": str(tmp_path)})  # no ~/.ray/auth_token there
    assert got == {"on": False, "env": None, "ray_token_mode": False}
