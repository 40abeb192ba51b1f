"""Deploying the model server on Ray Serve, bound to loopback unless told otherwise.

``deploy`` pins ``models:/name@alias`` to the version the alias points at now, so every
replica (including ones the autoscaler adds later) serves the same model. ``reload``
re-resolves the alias and, when it moved, rolls the replicas over to the new version:
replacements start before the old replicas stop (``max_surge_percent=100``) and the old
ones drain their in-flight requests, so no request fails.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypipe.config import ServeConfig
from raypipe.errors import RaypipeError, ServingError
from raypipe.runtime.net import free_port

if TYPE_CHECKING:
    from raypipe.config import PipelineConfig
    from raypipe.runtime import Paths

log = logging.getLogger(__name__)


def serve_settings(cfg: PipelineConfig, paths: Paths) -> ServeConfig:
    """``cfg.serve`` with ``log_dir`` resolved (default ``<work_dir>/predictions``, absolute)."""
    log_dir = cfg.serve.log_dir or str(paths.predictions)
    return cfg.serve.model_copy(update={"log_dir": str(Path(log_dir).expanduser().resolve())})


def pin_model_uri(model_uri: str, tracking_uri: str | None) -> str:
    """``models:/name@alias`` -> ``models:/name/<version>``; other URIs unchanged.

    Raises:
        ServingError: the alias does not exist in the registry.
    """
    from raypipe.registry.store import ModelRef

    if not ModelRef.is_registry_uri(model_uri) or "@" not in model_uri:
        return model_uri
    try:
        return str(ModelRef.parse(model_uri).pinned(tracking_uri))
    except RaypipeError as e:
        raise ServingError(str(e)) from None


def _settings(cfg: ServeConfig) -> dict[str, Any]:
    if cfg.log_predictions and cfg.log_dir:
        cfg = cfg.model_copy(update={"log_dir": str(Path(cfg.log_dir).expanduser().resolve())})
    return cfg.model_dump(mode="json")


def _deployment_options(cfg: ServeConfig) -> dict[str, Any]:
    opts: dict[str, Any] = {
        "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests,
        "ray_actor_options": {"num_cpus": cfg.cpus_per_replica},
        # Reloads start the new replicas before stopping the old ones: no gap in service.
        "max_surge_percent": 100,
    }
    if cfg.autoscaling is None:
        opts["num_replicas"] = cfg.num_replicas
    else:
        a = cfg.autoscaling
        opts["autoscaling_config"] = {
            "min_replicas": a.min_replicas,
            "max_replicas": a.max_replicas,
            "target_ongoing_requests": a.target_ongoing_requests,
            "upscale_delay_s": a.upscale_delay_s,
            "downscale_delay_s": a.downscale_delay_s,
            "look_back_period_s": a.look_back_period_s,
        }
    return opts


def _run_app(pinned_uri: str, tracking_uri: str | None, cfg: ServeConfig) -> None:
    from ray import serve

    from raypipe.serve.app import ModelServer

    app = ModelServer.options(**_deployment_options(cfg)).bind(pinned_uri, tracking_uri, _settings(cfg))
    serve.run(app, name=cfg.app_name, route_prefix="/")


def deploy(model_uri: str, tracking_uri: str | None, cfg: ServeConfig) -> str:
    """Start Serve's HTTP proxy on ``cfg.host:cfg.port`` and deploy the model. Returns the base URL.

    Raises:
        ServingError: the model cannot be resolved or the deployment failed.
    """
    from ray import serve

    port = cfg.port or free_port(cfg.host)
    if not logging.getLogger("raypipe").isEnabledFor(logging.INFO):
        logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's start-up chatter
    pinned = pin_model_uri(model_uri, tracking_uri)
    try:
        serve.start(http_options={"host": cfg.host, "port": port, "request_timeout_s": cfg.request_timeout_s})
        # If Serve was already running (a cluster), its proxy keeps its own address.
        http = serve.context._get_global_client().http_config
        host, port = http.host, http.port
        _run_app(pinned, tracking_uri, cfg)
    except Exception as e:
        raise ServingError(f"deploying '{model_uri}' on Ray Serve failed: {e}".splitlines()[0]) from e
    base = f"http://{host}:{port}"
    wait_routable(base, replicas=cfg.num_replicas if cfg.autoscaling is None else cfg.autoscaling.min_replicas)
    return base


def wait_routable(base: str, timeout_s: float = 60.0, replicas: int = 1, spread_s: float = 15.0) -> None:
    """Wait until ``GET base/healthz`` reaches the app, and reaches ``replicas`` distinct replicas.

    ``serve.run`` returns once the replicas are up, but the HTTP ingress learns the route a
    moment later (HAProxy mode reloads its config): a request sent at once could get 404.
    It also learns each replica separately, and a client connection opened before the last
    reload stays on the HAProxy process that knew only the first replica: a keep-alive client
    then reached one replica only, and when that one died its requests fell back to Serve's
    proxy (500s in a full-suite run). Waiting up to ``spread_s`` more for every replica to
    answer fresh connections avoids that; past it, a warning, since the app does serve.

    Raises:
        ServingError: no 200 from /healthz within ``timeout_s``.
    """
    import time

    url = base.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:") + "/healthz"
    start = time.monotonic()
    deadline = start + timeout_s
    last = ""
    seen: set[str] = set()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    if not seen:  # routable: from now on only the spread is waited for
                        deadline = min(deadline, time.monotonic() + spread_s)
                    seen.add(_replica_of(resp.read()))
                    if len(seen) >= replicas:
                        log.debug("%s answered after %.2f s (before: %s)", url, time.monotonic() - start, last or "-")
                        return
                    if time.monotonic() > deadline:
                        log.warning("%d of %d replicas reached through %s", len(seen), replicas, url)
                        return
                    time.sleep(0.05)
                    continue
                last = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        if time.monotonic() > deadline:
            if seen:
                log.warning("%d of %d replicas reached through %s (then: %s)", len(seen), replicas, url, last)
                return
            raise ServingError(f"the app is deployed but {url} did not answer within {timeout_s:.0f} s ({last})")
        time.sleep(0.1)


def _replica_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("replica"))
    except (ValueError, AttributeError):  # not our app's /healthz: one replica as far as we can tell
        return ""


@dataclass(frozen=True)
class ReloadResult:
    model_uri: str
    """The pinned URI now served (``models:/name/<version>``)."""
    previous_uri: str | None
    changed: bool


_loop: Any = None
_loop_lock = threading.Lock()


def _handle_loop() -> Any:
    """One long-lived event loop for handle calls from sync code.

    With ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` a handle works only inside a running loop, and the
    handle Serve caches stays bound to the loop it first ran in: so always the same loop.
    """
    global _loop
    with _loop_lock:
        if _loop is None:
            import asyncio

            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="raypipe-serve-handles", daemon=True).start()
    return _loop


def _model_info(app_name: str) -> dict[str, Any]:
    import asyncio

    from ray import serve

    async def ask() -> dict[str, Any]:
        return await asyncio.wait_for(serve.get_app_handle(app_name).model_info.remote(), 30)

    return asyncio.run_coroutine_threadsafe(ask(), _handle_loop()).result(35)


def served_model(app_name: str) -> dict[str, Any] | None:
    """What the running app serves (``model_uri``, ``model_version``...), or None if it is not deployed."""
    from ray import serve

    try:
        if app_name not in serve.status().applications:
            return None
        return _model_info(app_name)
    except Exception as e:  # noqa: BLE001 - no app, no Serve: nothing served
        log.debug("no model info from Serve app %s: %s", app_name, e)
        return None


def reload(
    model_uri_or_name: str, tracking_uri: str | None, serve_cfg: ServeConfig, alias: str = "champion"
) -> ReloadResult:
    """Roll the running app over to the version ``alias`` (or the given URI) points at now.

    Replacements start before the old replicas stop and the old ones drain, so requests
    keep being answered throughout. Nothing restarts when the served version is already
    current. Needs a connected Ray whose Serve runs the app (``deploy`` started it).

    Args:
        model_uri_or_name: ``models:/name@alias``, ``models:/name/3``, a bundle folder, or a bare
            registered-model name (then ``models:/<name>@<alias>``).
        tracking_uri: the MLflow store the alias lives in.
        serve_cfg: the ServeConfig the app was deployed with (replicas, batching, log dir).
        alias: used with a bare model name.

    Returns:
        ReloadResult with the served URI before and after.

    Raises:
        ServingError: the alias cannot be resolved, the app is not deployed, or the rollout failed.

    Example:
        >>> reload("flights", "sqlite:///.raypipe/mlflow.db", cfg.serve)  # doctest: +SKIP
        ReloadResult(model_uri='models:/flights/4', previous_uri='models:/flights/3', changed=True)
    """
    uri = model_uri_or_name
    if not uri.startswith("models:/") and not Path(uri).exists():
        uri = f"models:/{uri}@{alias}"
    pinned = pin_model_uri(uri, tracking_uri)
    current = served_model(serve_cfg.app_name)
    if current is None:
        raise ServingError(
            f"no Serve app '{serve_cfg.app_name}' is running to reload; deploy it first (`raypipe serve {uri}`)"
        )
    previous = current.get("model_uri")
    if previous == pinned:
        return ReloadResult(pinned, previous, changed=False)
    try:
        _run_app(pinned, tracking_uri, serve_cfg)
    except Exception as e:
        raise ServingError(f"reloading app '{serve_cfg.app_name}' with '{pinned}' failed: {e}".splitlines()[0]) from e
    return ReloadResult(pinned, previous, changed=True)


def deploy_config(model_uri: str, tracking_uri: str | None, cfg: ServeConfig) -> dict[str, Any]:
    """A ``serve deploy``-ready config for the same application (loopback unless cfg says otherwise).

    The URI is kept as given (an alias stays an alias): redeploying this file picks up
    whatever the alias points at then.
    """
    deployment = {"name": "ModelServer"} | _deployment_options(cfg)
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": cfg.host, "port": cfg.port or 8000, "request_timeout_s": cfg.request_timeout_s},
        "applications": [
            {
                "name": cfg.app_name,
                "route_prefix": "/",
                "import_path": "raypipe.serve.app:build_app",
                "args": {"model_uri": model_uri, "tracking_uri": tracking_uri, "settings": _settings(cfg)},
                "deployments": [deployment],
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
