"""Fault-injection tests on one local Ray with 2 CPUs (reused if the integration session started one)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs for this session (reused if the integration tests already started one)."""
    import ray

    from raypipe import runtime

    if ray.is_initialized():  # the integration tests' session Ray, in the same pytest run
        yield None
        return
    saved = os.environ.pop("RAY_ADDRESS", None)  # never join someone else's cluster
    session = runtime.connect(num_cpus=2)
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
def local_ray(ray_session):
    """The same Ray, by the name the serving fault tests use."""
    yield ray_session
