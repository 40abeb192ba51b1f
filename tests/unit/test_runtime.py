"""The CPU budget, the token file and the work dir (no Ray is started)."""

from __future__ import annotations

import math
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raypipe.config import TrainConfig, load_config
from raypipe.errors import ConfigError
from raypipe.runtime import CpuBudget, RaySession, free_port, resolve_paths
from raypipe.runtime.token import secure_token_file

EPS = 1e-9


def _session(node_cpus: list[float]) -> RaySession:
    """What connect() reports for a cluster with these per-node CPU counts."""
    with_cpus = [c for c in node_cpus if c > 0]
    return RaySession(
        address=None,
        started_here=False,
        total_cpus=float(sum(node_cpus)),
        num_nodes=max(1, len(with_cpus)),
        min_node_cpus=float(min(with_cpus, default=1.0)),
        max_node_cpus=float(max(node_cpus, default=1.0)),
    )


def _plan(node_cpus, data=0.5, serve=0.25, **train) -> CpuBudget:
    return CpuBudget.plan(_session(node_cpus), TrainConfig(**train), data_cpus=data, serve_cpus=serve)


def _check_fits(b: CpuBudget, node_cpus: list[float], auto_cpus: bool = True) -> None:
    total = sum(node_cpus)
    assert b.num_workers >= 1 and b.cpus_per_worker > 0
    assert b.num_workers * b.cpus_per_worker + b.data_cpus + b.serve_cpus <= total + EPS
    if auto_cpus:
        assert b.cpus_per_worker <= max(node_cpus) + EPS  # a worker fits on a node
    assert b.nthread == math.ceil(b.cpus_per_worker - EPS) >= 1


@pytest.mark.parametrize(
    "node_cpus, serve, workers, per",
    [
        ([2], 0.25, 1, 1.25),  # the 2-core laptop: Data and Serve keep 0.75
        ([2], 0.0, 1, 1.5),
        ([4], 0.25, 1, 3.25),
        ([16], 1.0, 1, 14.5),
        ([8, 8], 0.25, 2, 7.5),  # one worker per node
        ([0, 4, 4, 4], 0.25, 3, 3.75),  # a CPU-less head does not count as a node
        ([8, 2], 0.25, 2, 1.5),  # the smallest node bounds the per-worker share
    ],
)
def test_auto_plan_fits_the_cluster(node_cpus: list[float], serve: float, workers: int, per: float) -> None:
    b = _plan(node_cpus, serve=serve)
    _check_fits(b, node_cpus)
    assert (b.num_workers, b.cpus_per_worker) == (workers, per)
    assert b.total_cpus == sum(node_cpus)


@pytest.mark.parametrize(
    "node_cpus, num_workers, cpus_per_worker",
    [([2], 3, "auto"), ([4], 2, 1.5), ([8], "auto", 2), ([8, 8], 4, "auto")],
)
def test_explicit_workers_or_cpus_still_fit(node_cpus, num_workers, cpus_per_worker) -> None:
    b = _plan(node_cpus, num_workers=num_workers, cpus_per_worker=cpus_per_worker)
    _check_fits(b, node_cpus, auto_cpus=cpus_per_worker == "auto")
    if num_workers != "auto":
        assert b.num_workers == num_workers
    if cpus_per_worker != "auto":
        assert b.cpus_per_worker == cpus_per_worker


@pytest.mark.parametrize(
    "per, nthread", [(0.25, 1), (0.5, 1), (1.0, 1), (1.25, 2), (1.5, 2), (2.0, 2), (3.75, 4), (8.0, 8)]
)
def test_nthread_is_the_cpu_share_rounded_up(per: float, nthread: int) -> None:
    b = _plan([32], num_workers=1, cpus_per_worker=per)
    assert b.cpus_per_worker == per and b.nthread == nthread


def test_no_cpus_left_for_training_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match=r"no CPUs left for training.*cluster has 1.*data_cpus=0\.75.*serve needs 0\.25"
    ):
        _plan([1], data=0.75, serve=0.25)


def test_oversized_explicit_request_names_the_settings() -> None:
    with pytest.raises(ConfigError) as exc:
        _plan([4], num_workers=2, cpus_per_worker=2)
    msg = str(exc.value)
    assert "train.num_workers=2" in msg and "train.cpus_per_worker=2" in msg and "3.25" in msg


def test_a_sliver_too_small_for_a_quarter_cpu_is_an_error_not_an_overcommit() -> None:
    with pytest.raises(ConfigError):
        _plan([1], data=0.5, serve=0.4)  # 0.1 CPU left: less than the smallest worker (0.25)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    node_cpus=st.lists(st.sampled_from([0, 1, 2, 3, 4, 8, 16, 32, 64]), min_size=1, max_size=6),
    data=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    serve=st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]),
    num_workers=st.one_of(st.just("auto"), st.integers(1, 8)),
    cpus_per_worker=st.one_of(st.just("auto"), st.sampled_from([0.25, 0.5, 1.0, 1.5, 4.0])),
)
def test_plan_never_exceeds_the_cluster(node_cpus, data, serve, num_workers, cpus_per_worker) -> None:
    try:
        b = _plan(node_cpus, data=data, serve=serve, num_workers=num_workers, cpus_per_worker=cpus_per_worker)
    except ConfigError as e:
        # Only refused when it really does not fit, and the message says what to change.
        assert "\n" not in str(e)
        free = sum(node_cpus) - data - serve
        if num_workers == "auto" and cpus_per_worker == "auto":
            assert free < 0.25 * max(1, sum(1 for c in node_cpus if c > 0)) + EPS
        else:
            assert "train." in str(e) or "no CPUs left" in str(e)
        return
    _check_fits(b, node_cpus, auto_cpus=cpus_per_worker == "auto")


def test_a_worker_larger_than_every_node_is_refused() -> None:
    with pytest.raises(ConfigError, match="cpus_per_worker"):
        _plan([3, 3], serve=0.0, num_workers=1, cpus_per_worker=4.0)


# --- token file --------------------------------------------------------------


def test_secure_token_file_tightens_a_world_readable_token(tmp_path: Path) -> None:
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    secure_token_file(token)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert token.read_text() == "secret"


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_secure_token_file_leaves_a_private_token_alone(tmp_path: Path, mode: int) -> None:
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(mode)
    secure_token_file(token)
    assert stat.S_IMODE(token.stat().st_mode) == mode


def test_secure_token_file_without_a_token_is_a_no_op(tmp_path: Path) -> None:
    secure_token_file(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


# --- ports and folders -------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 0 < port < 65536 and port != 8000
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_paths_precedence_flag_config_environment_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    bare = load_config(raw={"data": {"path": "x", "label": "y"}})
    assert resolve_paths(bare).work_dir == (tmp_path / ".raypipe").resolve() and (tmp_path / ".raypipe").is_dir()
    assert resolve_paths(bare).tracking_uri == f"sqlite:///{(tmp_path / '.raypipe').resolve()}/mlflow.db"
    monkeypatch.setenv("RAYPIPE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9/env")
    assert resolve_paths(bare).work_dir == (tmp_path / "home").resolve()  # environment over the default
    assert resolve_paths(bare).tracking_uri == "http://127.0.0.1:9/env"
    runtime = {"work_dir": str(tmp_path / "w"), "tracking_uri": "http://127.0.0.1:9/cfg"}
    cfg = load_config(raw={"data": {"path": "x", "label": "y"}, "runtime": runtime})
    assert resolve_paths(cfg).work_dir == (tmp_path / "w").resolve()  # config over the environment
    assert resolve_paths(cfg).tracking_uri == "http://127.0.0.1:9/cfg"
    flags = resolve_paths(cfg, work_dir=tmp_path / "f", tracking_uri="http://127.0.0.1:9/flag")
    assert (flags.work_dir, flags.tracking_uri) == ((tmp_path / "f").resolve(), "http://127.0.0.1:9/flag")
    assert not resolve_paths(work_dir=tmp_path / "plan-only", create=False).work_dir.exists()


def _routable_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))
        ip = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


@pytest.mark.skipif(_routable_ip() is None, reason="no routable address on this host")
def test_a_loopback_only_gcs_is_told_apart_from_a_ray_start_head() -> None:
    from raypipe.runtime.connect import _loopback_only_gcs

    with socket.socket() as loop_only, socket.socket() as everywhere:
        loop_only.bind(("127.0.0.1", 0))  # a Ray started by connect(): GCS on loopback only
        loop_only.listen()
        everywhere.bind(("0.0.0.0", 0))  # a `ray start` head: GCS on every interface
        everywhere.listen()
        assert _loopback_only_gcs(f"127.0.0.1:{loop_only.getsockname()[1]}")
        assert not _loopback_only_gcs(f"127.0.0.1:{everywhere.getsockname()[1]}")
        assert not _loopback_only_gcs(f"{_routable_ip()}:{everywhere.getsockname()[1]}")
    assert not _loopback_only_gcs("ray://127.0.0.1:10001") and not _loopback_only_gcs("auto")
