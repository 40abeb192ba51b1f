"""Static checks of the cluster configs under cluster/ (no Ray is started).

* `ray up` YAMLs: Ray's own cluster-config JSON schema (ray/autoscaler/ray-schema.json)
  plus Ray's prepare_config/validate_config, pinned versions, token auth, loopback dashboard.
* KubeRay manifests: apiVersion/kind/name, cluster spec shape, images, resources, token auth,
  RayJob entrypoint, RayService serveConfigV2 (validated with Ray Serve's own schema).
* No inline secrets anywhere.
* cluster/local.sh: `bash -n` and `--help`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
RAY_UP_CONFIGS = ["aws.yaml", "gcp.yaml"]
KUBERAY = {
    "raycluster.yaml": "RayCluster",
    "rayjob.yaml": "RayJob",
    "rayservice.yaml": "RayService",
}
RAY_VERSION = "2.60.0"
RAY_PIN = f"ray[data,train,tune,serve]=={RAY_VERSION}"
RAY_IMAGE = f"rayproject/ray:{RAY_VERSION}-py311"
LOCAL_SH = CLUSTER / "local.sh"


def _load(path: Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def _all_config_files() -> list[Path]:
    return [CLUSTER / n for n in RAY_UP_CONFIGS] + [CLUSTER / "kuberay" / n for n in KUBERAY]


# --------------------------------------------------------------------------- ray up


@pytest.fixture(scope="module")
def ray_schema() -> dict:
    import ray.autoscaler

    path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_config_matches_ray_schema(name: str, ray_schema: dict) -> None:
    import jsonschema

    config = _load(CLUSTER / name)
    validator = jsonschema.Draft7Validator(ray_schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_config_passes_ray_prepare_and_validate(name: str) -> None:
    # What `ray up` does before touching the cloud: merge provider defaults, then validate.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_load(CLUSTER / name))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_node_types(name: str) -> None:
    config = _load(CLUSTER / name)
    types = config["available_node_types"]
    head = config["head_node_type"]
    workers = {k: v for k, v in types.items() if k != head}
    cpu = [v for v in workers.values() if not v["resources"].get("GPU")]
    gpu = [v for v in workers.values() if v["resources"].get("GPU")]
    assert cpu, "need a CPU worker type"
    assert gpu, "need an (optional) GPU worker type"
    assert all(v.get("min_workers", 0) == 0 for v in gpu), "GPU workers must scale from 0"
    for v in gpu:
        assert v.get("docker", {}).get("worker_image", "").startswith(RAY_IMAGE)
    assert config["docker"]["image"] == RAY_IMAGE


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_installs_pinned_ray_and_raypipe(name: str) -> None:
    config = _load(CLUSTER / name)
    setup = "\n".join(config["setup_commands"])
    assert f'"{RAY_PIN}"' in setup
    assert re.search(r"pip install .*raypipe", setup), "setup_commands must install raypipe"


@pytest.mark.parametrize("name", RAY_UP_CONFIGS)
def test_ray_up_keeps_token_auth_and_loopback_dashboard(name: str) -> None:
    config = _load(CLUSTER / name)
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    for cmd in (head, worker):
        assert "RAY_AUTH_MODE=token" in cmd
        assert "0.0.0.0" not in cmd
    assert "~/.ray/auth_token" in config["file_mounts"], "the cluster token must reach every node"
    text = (CLUSTER / name).read_text()
    assert "RAY_AUTH_MODE=disabled" not in text
    assert "--dashboard-host=0.0.0.0" not in text


# --------------------------------------------------------------------------- KubeRay


def _cluster_spec(doc: dict) -> dict:
    kind = doc["kind"]
    if kind == "RayCluster":
        return doc["spec"]
    if kind == "RayJob":
        return doc["spec"]["rayClusterSpec"]
    if kind == "RayService":
        return doc["spec"]["rayClusterConfig"]
    raise AssertionError(f"unexpected kind {kind}")


def _pod_groups(spec: dict) -> list[tuple[str, dict]]:
    groups = [("head", spec["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in spec["workerGroupSpecs"]]
    return groups


@pytest.mark.parametrize("name,kind", sorted(KUBERAY.items()))
def test_kuberay_manifest_header(name: str, kind: str) -> None:
    docs = list(yaml.safe_load_all((CLUSTER / "kuberay" / name).read_text()))
    assert len(docs) == 1
    doc = docs[0]
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == kind
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_cluster_spec(name: str) -> None:
    spec = _cluster_spec(_load(CLUSTER / "kuberay" / name))
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["authOptions"]["mode"] == "token"
    head = spec["headGroupSpec"]
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"
    assert not head.get("enableIngress", False)
    assert spec["workerGroupSpecs"], "need at least one worker group"
    for group_name, group in _pod_groups(spec):
        assert isinstance(group["rayStartParams"], dict), group_name
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), group_name
        assert "dashboard-host" not in group["rayStartParams"] or group_name == "head"
        containers = group["template"]["spec"]["containers"]
        assert containers, group_name
        for c in containers:
            assert c["image"].startswith(RAY_IMAGE), (group_name, c["image"])
            res = c["resources"]
            for kind in ("requests", "limits"):
                assert res[kind].get("cpu") and res[kind].get("memory"), (group_name, kind)
        if group_name != "head":
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group_name
    gpu = [g for _, g in _pod_groups(spec)[1:] if "nvidia.com/gpu" in str(g["template"])]
    for g in gpu:
        assert g["minReplicas"] == 0, "GPU group must scale from 0"


def test_rayjob_entrypoint() -> None:
    doc = _load(CLUSTER / "kuberay" / "rayjob.yaml")
    assert doc["spec"]["entrypoint"] == "raypipe run jobs/flights.yaml"
    runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict)
    assert doc["spec"].get("shutdownAfterJobFinishes") is True


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydantic deprecations inside ray.serve
def test_rayservice_serves_champion() -> None:
    doc = _load(CLUSTER / "kuberay" / "rayservice.yaml")
    serve_cfg = yaml.safe_load(doc["spec"]["serveConfigV2"])
    apps = serve_cfg["applications"]
    assert len(apps) == 1
    assert apps[0]["import_path"] == "raypipe.serve.app:build_app"
    assert apps[0]["args"] == {"model_uri": "models:/flights@champion"}

    from ray.serve.schema import ServeDeploySchema

    parsed = ServeDeploySchema.model_validate(serve_cfg)
    assert parsed.applications[0].import_path == "raypipe.serve.app:build_app"


# --------------------------------------------------------------------------- secrets

_SECRET_WORDS = {"secret", "password", "passwd", "token", "credential", "credentials"}
_SECRET_PAIRS = {("private", "key"), ("access", "key"), ("api", "key"), ("secret", "key")}


def _is_secretish(name: str) -> bool:
    """MLFLOW_TRACKING_TOKEN, aws_secret_access_key, clientSecret, apiKey - but not HttpTokens."""
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)]
    return bool(_SECRET_WORDS.intersection(words)) or any(p in _SECRET_PAIRS for p in zip(words, words[1:]))


_SECRET_TEXT_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+=]{20,}"),
    re.compile(r"(?i)\b(RAY_AUTH_TOKEN|MLFLOW_TRACKING_PASSWORD|MLFLOW_TRACKING_TOKEN)=[^\s$'\"]{8,}"),
    re.compile(r"(?i)\"private_key\"\s*:"),  # GCP service-account JSON
    re.compile(r"https?://[^/\s:@]+:[^/\s@]+@"),  # credentials in a URL
]


_COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


def _inline_secrets(node: Any, path: str = "") -> list[str]:
    """Paths where a secret-looking name carries a literal value."""
    found: list[str] = []
    if isinstance(node, dict) and path.endswith(".file_mounts"):
        return found  # REMOTE_PATH: LOCAL_PATH - file names, not values (e.g. ~/.ray/auth_token)
    if isinstance(node, dict):
        # Kubernetes env entries: {name: X, value: literal} vs {name: X, valueFrom: ...}
        name = node.get("name")
        if isinstance(name, str) and _is_secretish(name) and "value" in node:
            found.append(f"{path}.{name}")
        for key, value in node.items():
            sub = f"{path}.{key}"
            if isinstance(key, str) and _is_secretish(key) and isinstance(value, (str, int)):
                if key not in ("secretName",) and str(value).strip():
                    found.append(sub)
            if isinstance(value, str) and key in ("serveConfigV2", "runtimeEnvYAML"):
                found += _inline_secrets(yaml.safe_load(value), sub)
            else:
                found += _inline_secrets(value, sub)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            found += _inline_secrets(item, f"{path}[{i}]")
    return found


def _secret_text_hits(text: str) -> list[str]:
    return [p.pattern for p in _SECRET_TEXT_PATTERNS if p.search(text)]


@pytest.mark.parametrize("path", _all_config_files(), ids=lambda p: str(p.relative_to(CLUSTER)))
def test_no_inline_secrets(path: Path) -> None:
    text = path.read_text()
    assert not _secret_text_hits(text)
    for doc in yaml.safe_load_all(text):
        assert not _inline_secrets(doc)
        # ray up configs: no `SOME_SECRET=...` assignments inside shell commands either
        if isinstance(doc, dict):
            for key in _COMMAND_KEYS:
                for cmd in doc.get(key) or []:
                    assert not re.search(r"(?i)\b[a-z_]*(SECRET|PASSWORD|TOKEN)[a-z_]*=", cmd), cmd


@pytest.mark.parametrize(
    "bad",
    [
        {"env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}]},
        {"env": [{"name": "RAY_AUTH_TOKEN", "value": "abc"}]},
        {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
        {"spec": {"serveConfigV2": "applications:\n- runtime_env:\n    env_vars:\n      MLFLOW_TRACKING_PASSWORD: x"}},
    ],
)
def test_secret_detector_catches_inline_values(bad: dict) -> None:
    assert _inline_secrets(bad) or _secret_text_hits(yaml.safe_dump(bad))


@pytest.mark.parametrize(
    "name,expected",
    [
        ("AWS_SECRET_ACCESS_KEY", True),
        ("aws_secret_access_key", True),
        ("MLFLOW_TRACKING_TOKEN", True),
        ("RAY_AUTH_TOKEN", True),
        ("clientSecret", True),
        ("apiKey", True),
        ("HttpTokens", False),
        ("RAY_AUTH_MODE", False),
        ("MLFLOW_TRACKING_URI", False),
    ],
)
def test_secretish_names(name: str, expected: bool) -> None:
    assert _is_secretish(name) is expected


def test_secret_detector_allows_references() -> None:
    ok = {
        "env": [
            {"name": "MLFLOW_TRACKING_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "RAY_AUTH_MODE", "value": "token"},
        ]
    }
    assert not _inline_secrets(ok)


# --------------------------------------------------------------------------- local.sh


def test_local_sh_is_valid_bash() -> None:
    assert os.access(LOCAL_SH, os.X_OK), "cluster/local.sh must be executable"
    subprocess.run(["bash", "-n", str(LOCAL_SH)], check=True, capture_output=True, timeout=10)


def test_local_sh_help(tmp_path: Path) -> None:
    env = {**os.environ, "RAYPIPE_CLUSTER_DIR": str(tmp_path / "state")}
    out = subprocess.run([str(LOCAL_SH), "--help"], capture_output=True, text=True, timeout=10, env=env)
    assert out.returncode == 0, out.stderr
    for word in ("up", "down", "status", "--workers", "--cpus-per-node", "RAYPIPE_CLUSTER_DIR", "ray stop"):
        assert word in out.stdout


def test_local_sh_rejects_unknown_command(tmp_path: Path) -> None:
    env = {**os.environ, "RAYPIPE_CLUSTER_DIR": str(tmp_path / "state")}
    out = subprocess.run([str(LOCAL_SH), "bogus"], capture_output=True, text=True, timeout=10, env=env)
    assert out.returncode != 0


def test_local_sh_status_and_down_without_cluster_do_not_start_ray(tmp_path: Path) -> None:
    # Empty state dir: `status` reports "not running", `down` is a no-op; neither calls ray.
    env = {**os.environ, "RAYPIPE_CLUSTER_DIR": str(tmp_path / "state"), "RAY_BIN": "/bin/false"}
    status = subprocess.run([str(LOCAL_SH), "status"], capture_output=True, text=True, timeout=10, env=env)
    assert status.returncode == 1 and "not running" in status.stdout
    down = subprocess.run([str(LOCAL_SH), "down"], capture_output=True, text=True, timeout=10, env=env)
    assert down.returncode == 0, down.stderr


def test_local_sh_binds_loopback_and_forces_token_auth() -> None:
    text = LOCAL_SH.read_text()
    assert "--dashboard-host=127.0.0.1" in text
    assert "export RAY_AUTH_MODE=token" in text
    assert "chmod 600" in text
    # `ray stop` only behind `down --all`
    stop_lines = [ln for ln in text.splitlines() if re.search(r'"\$RAY_BIN" stop\b', ln)]
    assert len(stop_lines) == 1


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_local_sh_shellcheck() -> None:
    subprocess.run(["shellcheck", str(LOCAL_SH)], check=True, capture_output=True, timeout=30)
