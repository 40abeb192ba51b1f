"""Reliability tests run on one local Ray with 2 CPUs (reused if the integration session already started one)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def local_ray():
    import ray

    from raypipe import runtime

    if ray.is_initialized():  # the integration tests' session Ray, in the same pytest run
        yield
        return
    saved = os.environ.pop("RAY_ADDRESS", None)  # never join someone else's cluster
    runtime.connect(num_cpus=2)
    try:
        yield
    finally:
        try:
            from ray import serve

            serve.shutdown()
        finally:
            ray.shutdown()
            if saved is not None:
                os.environ["RAY_ADDRESS"] = saved
