"""Deploying the model server on Ray Serve, bound to loopback unless told otherwise."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from raypipe.config import ServeConfig
from raypipe.errors import ServingError
from raypipe.runtime import free_port


def deploy(model_uri: str, tracking_uri: str | None, cfg: ServeConfig) -> str:
    """Start Serve's HTTP proxy on ``cfg.host:cfg.port`` and deploy the model. Returns the base URL."""
    from ray import serve

    from raypipe.serve.app import ModelServer

    port = cfg.port or free_port(cfg.host)
    if not logging.getLogger("raypipe").isEnabledFor(logging.INFO):
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's start-up chatter
    try:
        serve.start(http_options={"host": cfg.host, "port": port, "request_timeout_s": cfg.request_timeout_s})
        # If Serve was already running (a cluster), its proxy keeps its own address.
        http = serve.context._get_global_client().http_config
        host, port = http.host, http.port
        app = ModelServer.options(
            num_replicas=cfg.num_replicas,
            max_ongoing_requests=cfg.max_ongoing_requests,
            max_queued_requests=cfg.max_queued_requests,
            ray_actor_options={"num_cpus": cfg.cpus_per_replica},
        ).bind(model_uri, tracking_uri, cfg.max_body_bytes)
        serve.run(app, name=cfg.app_name, route_prefix="/")
    except Exception as e:
        raise ServingError(f"deploying '{model_uri}' on Ray Serve failed: {e}".splitlines()[0]) from e
    return f"http://{host}:{port}"


def deploy_config(model_uri: str, tracking_uri: str | None, cfg: ServeConfig) -> dict[str, Any]:
    """A ``serve deploy``-ready config for the same application (loopback unless cfg says otherwise)."""
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.port or 8000, "request_timeout_s": cfg.request_timeout_s},
        "applications": [
            {
                "name": cfg.app_name,
                "route_prefix": "/",
                "import_path": "raypipe.serve.app:build_app",
                "args": {
                    "model_uri": model_uri,
                    "tracking_uri": tracking_uri,
                    "max_body_bytes": cfg.max_body_bytes,
                },
                "deployments": [
                    {
                        "name": "ModelServer",
                        "num_replicas": cfg.num_replicas,
                        "max_ongoing_requests": cfg.max_ongoing_requests,
                        "max_queued_requests": cfg.max_queued_requests,
                        "ray_actor_options": {"num_cpus": cfg.cpus_per_replica},
                    }
                ],
            }
        ],
    }


def post_json(url: str, payload: Any, timeout_s: float = 30.0) -> tuple[int, dict[str, Any]]:
    """A real HTTP POST (stdlib only); returns (status, parsed body)."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, {"error": body.decode(errors="replace")}
    except (urllib.error.URLError, TimeoutError) as e:
        raise ServingError(f"no answer from {url}: {e}") from e


def shutdown() -> None:
    from ray import serve

    serve.shutdown()
