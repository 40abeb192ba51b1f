"""Fault-injection tests: they use the session Ray of tests/conftest.py (`ray_session`, `local_ray`)."""
