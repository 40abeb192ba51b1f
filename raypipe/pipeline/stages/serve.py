"""serve: deploy the champion on Ray Serve and check it with one real HTTP request (never cached)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raypipe.errors import ServingError
from raypipe.serve.deploy import deploy, post_json, serve_settings

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext
    from raypipe.pipeline.stages.profile import Profiled
    from raypipe.pipeline.stages.register import Registered


@dataclass
class Served:
    endpoint: str
    prediction: dict[str, Any]


def serve(ctx: RunContext, profile: Profiled, register: Registered) -> Served:
    uri = f"models:/{register.model_name}@{ctx.cfg.register.alias}"
    endpoint = deploy(uri, ctx.paths.tracking_uri, serve_settings(ctx.cfg, ctx.paths))
    status, body = post_json(endpoint + "/predict", profile.example)
    if status != 200:
        raise ServingError(f"smoke request to {endpoint}/predict returned {status}: {body}")
    return Served(endpoint, body)


def describe(ctx: RunContext, result: Served) -> str:
    return f"{result.endpoint}/predict -> {result.prediction.get('prediction')}"
