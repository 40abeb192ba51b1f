"""The Serve replica's inter-deployment gRPC server binds every interface (``[::]:0``, in Ray's
``Replica._on_initialized``); raypipe relies on Ray's token authentication there. A client
without the session token, or with a wrong one, is refused; the same call with the token gets
past authentication, so the refusal is the token check and this test fails if Ray drops it."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest
from _mlflow_store import sqlite_store
from _serving import MODEL_NAME, register_tiny_model

from raypipe.config import ServeConfig
from raypipe.serve.deploy import deploy

pytestmark = pytest.mark.integration

_METHOD = "/ray.serve.ASGIService/HandleRequest"


def _internal_grpc_port(app: str) -> int:
    import ray

    names = ray.util.list_named_actors(all_namespaces=True)
    replica = next(a["name"] for a in names if a["name"].startswith(f"SERVE_REPLICA::{app}#"))
    actor = ray.get_actor(replica, namespace="serve")
    return ray.get(actor.__ray_call__.remote(lambda self: self._replica_impl._internal_grpc_port))


def _call(port: int, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = channel.unary_unary(_METHOD, request_serializer=None, response_deserializer=None)
        try:
            stub(b"", metadata=metadata, timeout=10)
        except grpc.RpcError as e:
            return e.code()
    return grpc.StatusCode.OK


def _non_loopback_ipv4() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent, only a route is chosen
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_the_replica_grpc_port_refuses_a_client_without_the_ray_token(ray_session, tmp_path: Path) -> None:
    from ray import serve
    from ray._private.authentication import authentication_utils
    from ray._private.authentication.grpc_authentication_client_interceptor import (
        _get_authentication_metadata_tuple,
    )

    assert authentication_utils.is_token_auth_enabled()  # raypipe's local Ray runs with a token
    uri = sqlite_store(tmp_path)
    register_tiny_model(uri, tmp_path, rounds=3)
    cfg = ServeConfig(port=0, app_name="grpc-auth", log_predictions=False)
    deploy(f"models:/{MODEL_NAME}@champion", uri, cfg)
    try:
        port = _internal_grpc_port(cfg.app_name)
        assert port > 0
        # Still on every interface (what the issue found): reachable on a non-loopback address too.
        external = _non_loopback_ipv4()
        if external:
            with socket.create_connection((external, port), timeout=5):
                pass
        assert _call(port, ()) == grpc.StatusCode.UNAUTHENTICATED
        assert _call(port, (("authorization", "Bearer not-the-token"),)) == grpc.StatusCode.UNAUTHENTICATED
        token = _get_authentication_metadata_tuple()
        assert token, "the driver has no token to send"
        # With the token the empty request gets past authentication (and fails on its content).
        assert _call(port, token) != grpc.StatusCode.UNAUTHENTICATED
    finally:
        serve.delete(cfg.app_name)
