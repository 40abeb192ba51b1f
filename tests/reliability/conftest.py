"""Fault-injection tests: a real local Ray (2 CPUs); faults are real signals to real processes."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs for this session (reused if the integration tests already started one)."""
    import ray

    from raypipe import runtime

    if ray.is_initialized():  # tests/integration's session fixture ran first in this pytest run
        yield None
        return
    saved = os.environ.pop("RAY_ADDRESS", None)
    session = runtime.connect(num_cpus=2)
    try:
        yield session
    finally:
        ray.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved
