"""Fixtures shared by the unit, integration and reliability tests."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import _haproxy_log
import pyarrow as pa
import pytest

# Environment variables that would silently redirect raypipe away from the test's tmp dirs.
_REDIRECTING_ENV = ("RAYPIPE_HOME", "MLFLOW_TRACKING_URI", "RAY_ADDRESS")


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _REDIRECTING_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def column_stats() -> Callable[..., dict]:
    """Column statistics of an Arrow table, computed by raypipe's own profile map step
    (the function Ray Data runs per batch), merged as the reduce step does; no Ray."""
    from raypipe.data.profile import ColumnStats, profile_batch

    def compute(*tables: pa.Table, level_columns: Iterable[str] = ()) -> dict[str, ColumnStats]:
        stats: dict[str, ColumnStats] = {}
        for table in tables:
            summary = json.loads(profile_batch(table, None, frozenset(level_columns))["profile"][0])["all"]
            for col, s in summary.items():
                stats.setdefault(col, ColumnStats()).merge(s)
        return stats

    return compute


@pytest.fixture
def contract_for(column_stats) -> Callable[..., object]:
    """The schema contract raypipe infers for an in-memory table (train stats = all stats)."""
    from raypipe.config import DataConfig, FeaturesConfig
    from raypipe.data.schema import infer_contract

    def build(table: pa.Table, label: str, *, data: dict | None = None, features: dict | None = None):
        stats = column_stats(table, level_columns=(features or {}).get("categorical", ()))
        return infer_contract(
            table.schema,
            stats,
            stats,
            DataConfig(path="memory", label=label, **(data or {})),
            FeaturesConfig(**(features or {})),
        )

    return build


@pytest.fixture(scope="session")
def ray_session():
    """A fresh local Ray with 2 CPUs, shared by the whole test session and shut down at its end."""
    import ray

    from raypipe import runtime

    # Never join a cluster someone else runs on this machine.
    saved = os.environ.pop("RAY_ADDRESS", None)
    assert not ray.is_initialized()
    from raypipe.config import ServeConfig
    from raypipe.serve.ingress import use_ingress

    # HAProxy's access log, so a fault test can say which hop failed a request (read when Ray starts).
    runtime.add_local_ray_env({"RAY_SERVE_HAPROXY_LOG_TARGET": _haproxy_log.start().target})
    # Serve tests run through the default ingress, as `raypipe run` and `raypipe serve` do.
    use_ingress(ServeConfig(ingress=os.environ.get("RAYPIPE_TEST_INGRESS", "auto")))
    session = runtime.connect(num_cpus=2)
    assert session.started_here and session.total_cpus == 2
    try:
        yield session
    finally:
        try:
            from ray import serve

            serve.shutdown()
        finally:
            ray.shutdown()
            from raypipe.serve.ingress import stop_haproxy

            stop_haproxy()
            _haproxy_log.stop()
            if saved is not None:
                os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="session")
def haproxy_log(ray_session) -> _haproxy_log.SyslogCollector:
    """HAProxy's access log for the session's Ray (empty under another ingress)."""
    assert _haproxy_log.collector is not None
    return _haproxy_log.collector


@pytest.fixture(scope="session")
def local_ray(ray_session):
    """The same Ray, by the name the serving fault tests use."""
    yield ray_session
