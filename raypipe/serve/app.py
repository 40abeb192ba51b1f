"""The Ray Serve application: a FastAPI ingress over the verified model bundle.

Endpoints: ``POST /predict`` (a record or a list of records), ``POST /explain`` (the same, plus
each field's contribution to each record's margin; also ``/predict`` with ``{"records": ...,
"explain": true}``), KServe v1
``POST /v1/models/<name>:predict`` (another name is a 404), MLflow ``POST /invocations``,
``GET /healthz`` (status, prediction log, batch sizes), ``GET /metadata``, and ``GET /``, a
self-contained page to try the model (``raypipe.serve.page``). ``GET /openapi.json`` is built per
replica from the contract and the validation policies, and ``GET /docs`` is Swagger UI over it
with its assets served from here (``raypipe.serve.openapi``; FastAPI's own, fieldless document and
CDN-loaded ``/docs`` and ``/redoc`` are off). Bodies must be JSON
(a 415 otherwise), are size-limited before parsing and validated against the training contract;
client mistakes are 4xx with the field named. Concurrent
requests are scored together (``@serve.batch``: one ``inplace_predict`` per batch; explanations
in their own queue, one ``pred_contribs`` per batch) and logged for monitoring by a background writer.

No ``from __future__ import annotations`` here: FastAPI must see real types to
inject ``Request`` into the handlers.
"""

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve

from raypipe.config import ServeConfig
from raypipe.data.records import RequestError, RequestParser
from raypipe.errors import ExplainError
from raypipe.explain import check_explainable
from raypipe.model import format_predictions
from raypipe.registry import load_model
from raypipe.serve.docs import DOCS_CSP, docs_asset, docs_html
from raypipe.serve.openapi import openapi_document
from raypipe.serve.page import render_page
from raypipe.serve.predlog import PredictionLogger

# FastAPI's own /openapi.json would list no fields (the handlers read the raw Request) and its
# /docs, /redoc load JS from a CDN: the replica serves its own (``raypipe.serve.openapi``).
api = FastAPI(title="raypipe model server", openapi_url=None, docs_url=None, redoc_url=None)


# Module-level helpers sit above the deployment: Serve ships the class by value,
# and names defined after it were missing in the replica.
def _field(payload: Any, name: str) -> Any:
    if not isinstance(payload, dict) or name not in payload:
        raise RequestError(422, f"body must be a JSON object with an '{name}' list of records")
    return payload[name]


def _mlflow_records(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, dict) and "dataframe_records" in payload:
        return payload["dataframe_records"]
    if isinstance(payload, dict) and "dataframe_split" in payload:
        split = payload["dataframe_split"]
        if (
            not isinstance(split, dict)
            or not isinstance(split.get("columns"), list)
            or not isinstance(split.get("data"), list)
        ):
            raise RequestError(422, "dataframe_split needs 'columns' (a list) and 'data' (a list of rows)")
        cols = split["columns"]
        rows = split["data"]
        if not all(isinstance(c, str) for c in cols):
            raise RequestError(422, "dataframe_split 'columns' must be a list of field names (strings)")
        if any(not isinstance(r, list) or len(r) != len(cols) for r in rows):
            raise RequestError(422, f"every dataframe_split row must be a list of {len(cols)} values")
        return [dict(zip(cols, r)) for r in rows]
    raise RequestError(422, "body must hold 'dataframe_records' or 'dataframe_split'")


def _json(obj: Any, status: int = 200) -> Response:
    # orjson: ~5x faster than the stdlib encoder FastAPI's JSONResponse uses.
    return Response(orjson.dumps(obj), status_code=status, media_type="application/json")


def _check_json(content_type: str | None) -> None:
    """A body declared as something other than JSON (a form, text, multipart) is a 415; none
    declared is read as JSON."""
    if content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise RequestError(
            415,
            f"Content-Type '{media}' is not JSON: send the body as application/json",
            [{"field": "Content-Type", "msg": f"got '{media}', expected 'application/json'", "type": "media_type"}],
        )


def _operations(router: Any) -> set[tuple[str, str]]:
    """``(method, path)`` of every route; FastAPI >= 0.137 nests included routers (Serve includes
    the class's routes that way)."""
    found = set()
    for route in router.routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found |= _operations(inner)
        for method in getattr(route, "methods", None) or ():
            found.add((method.lower(), route.path))
    return found


def _split(scores: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    return np.split(scores, np.cumsum(counts)[:-1]) if len(counts) > 1 else [scores]


def _unwrap_explain(payload: Any, features: list[str]) -> tuple[Any, bool]:
    """``{"records": <record or list>, "explain": true}`` -> (records, explain); any other body is
    the records themselves (so is a record of a contract with a field named ``records``)."""
    if not isinstance(payload, dict) or "records" not in payload or "records" in features:
        return payload, False
    explain, extra = payload.get("explain", False), sorted(set(payload) - {"records", "explain"})
    if extra or not isinstance(explain, bool):
        name = extra[0] if extra else "explain"
        msg = f"unknown key '{name}' beside 'records'" if extra else "'explain' must be true or false"
        raise RequestError(422, msg, [{"field": name, "msg": msg, "type": "request_wrapper"}])
    return payload["records"], explain


def _check_explainable(model: Any) -> None:
    try:
        check_explainable(model)
    except ExplainError as e:
        raise RequestError(
            422, e.message, [{"field": "explain", "msg": e.message, "type": "unsupported_model"}]
        ) from None


@serve.deployment
@serve.ingress(api)
class ModelServer:
    """One replica: the verified model, the contract-generated parser, the batch queue and the log writer.

    ``settings`` is ``ServeConfig.model_dump()`` (plain data, so the deployment ships without raypipe
    types); ``log_dir`` is resolved by the deployer.
    """

    def __init__(self, model_uri: str, tracking_uri: str | None = None, settings: dict[str, Any] | None = None) -> None:
        # ServeConfig holds every default; a bare ``build_app`` with no log_dir logs nothing.
        s = ServeConfig.model_validate(settings or {}).model_dump()
        self._model = load_model(model_uri, tracking_uri)
        contract = self._model.bundle.contract
        self._parser = RequestParser(
            contract,
            max_records=s["max_records"],
            unknown_fields=s["unknown_fields"],
            unseen_categories=s["unseen_categories"],
            out_of_range=s["out_of_range"],
        )
        self._max_body_bytes = s["max_body_bytes"]
        self._score.set_max_batch_size(s["max_batch_size"])
        self._max_batch_size = s["max_batch_size"]
        self._score.set_batch_wait_timeout_s(s["batch_wait_timeout_s"])
        self._explain.set_max_batch_size(s["max_batch_size"])
        self._explain.set_batch_wait_timeout_s(s["batch_wait_timeout_s"])
        # Batches formed by @serve.batch, by size (requests per inplace_predict): /healthz shows them.
        self._batch_sizes: Counter[int] = Counter()
        self._version = self._model.version or "local"
        self._replica = serve.get_replica_context().replica_id.unique_id  # which replica answered /healthz
        self._name = self._model.name or Path(model_uri).name
        self._page = render_page(contract, self._name, self._version)  # once: the contract is fixed
        self._openapi: bytes | None = None  # built on the first GET /openapi.json, once the routes are known
        self._log: PredictionLogger | None = None
        if s["log_predictions"] and s["log_dir"]:
            self._log = PredictionLogger(
                Path(s["log_dir"]),
                self._model.name or Path(model_uri).name,
                contract,
                flush_rows=s["log_flush_rows"],
                flush_s=s["log_flush_s"],
                max_queued_rows=s["log_queue_rows"],
            )

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown (a reload, a downscale): flush the log.
        if getattr(self, "_log", None) is not None:
            self._log.close()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _score(self, tables: list[pa.Table]) -> list[np.ndarray]:
        """Every queued request's rows in one vectorised transform + ``inplace_predict``."""
        counts = [t.num_rows for t in tables]
        self._batch_sizes[len(tables)] += 1
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        return _split(self._model.bundle.predict_table(table), counts)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def _explain(self, tables: list[pa.Table]) -> list[tuple[list[dict[str, Any]], str]]:
        """Queued requests' rows explained together (one DMatrix + ``pred_contribs``), in a thread:
        XGBoost releases the GIL, so the replica keeps answering meanwhile."""
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        ex = await asyncio.to_thread(self._model.bundle.explain_table, table)
        records, ends = ex.records(), np.cumsum([t.num_rows for t in tables]).tolist()
        return [(records[a:b], ex.units) for a, b in zip([0, *ends], ends)]

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_body_bytes:
            raise RequestError(413, f"body of {declared} bytes exceeds the {self._max_body_bytes}-byte limit")
        chunks, size = [], 0
        async for chunk in request.stream():  # chunked bodies have no content-length
            size += len(chunk)
            if size > self._max_body_bytes:
                raise RequestError(413, f"body exceeds the {self._max_body_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _answer(self, request: Request, unwrap, shape, explain: bool | None = False) -> Response:
        """Shared path of every predict protocol: limit, parse, validate, predict, shape, log.

        ``explain``: True always adds explanations, None when the body's wrapper asks (``/predict``)."""
        arrival_ms = int(time.time() * 1000)
        t0 = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            _check_json(request.headers.get("content-type"))
            payload = self._parser.load_json(await self._body(request))
            if explain is not False:
                payload, asked = _unwrap_explain(payload, self._model.bundle.contract.feature_names)
                explain = explain or asked
            table, warnings = self._parser.validate(unwrap(payload))
            if explain:
                _check_explainable(self._model.bundle.model)
        except RequestError as e:
            return _json(e.body() | {"request_id": request_id}, e.status)
        scores = await self._score(table)
        out = format_predictions(self._model.bundle.preprocessor.label, scores)
        ex = await self._explain(table) if explain else None
        ms = (time.perf_counter() - t0) * 1000
        if self._log is not None:
            self._log.log(request_id, arrival_ms, self._version, ms, table, scores, warnings)
        body = shape(out, request_id, ms)
        if ex is not None:
            body |= {"explanations": ex[0], "explanation_units": ex[1]}
        if warnings:  # only when flagged: the common answer keeps its shape
            body["warnings"] = warnings
        return _json(body)

    def _full(self, out: dict[str, Any], request_id: str, ms: float) -> dict[str, Any]:
        return out | {
            "model_name": self._model.name,
            "model_version": self._model.version,
            "request_id": request_id,
            "latency_ms": round(ms, 3),
        }

    @api.post("/predict")
    async def predict(self, request: Request) -> Response:
        """One record or a list of records -> predictions (+ probabilities), model version, request id;
        ``{"records": ..., "explain": true}`` answers as ``/explain``."""
        return await self._answer(request, lambda p: p, self._full, explain=None)

    @api.post("/explain")
    async def explain(self, request: Request) -> Response:
        """``/predict``'s bodies and answer plus per-record, per-field contributions (XGBoost models)."""
        return await self._answer(request, lambda p: p, self._full, explain=True)

    @api.post("/v1/models/{name}:predict")
    async def kserve_v1(self, name: str, request: Request) -> Response:
        """KServe v1 protocol: ``{"instances": [records]}`` -> ``{"predictions": [...]}``."""
        if name != self._name:
            message = f"model '{name}' is not served here; this server serves '{self._name}'"
            detail = [{"field": "name", "msg": message, "type": "unknown_model"}]
            return _json({"error": message, "detail": detail}, 404)
        return await self._answer(
            request, lambda p: _field(p, "instances"), lambda out, rid, ms: {"predictions": out["prediction"]}
        )

    @api.post("/invocations")
    async def invocations(self, request: Request) -> Response:
        """MLflow scoring protocol: ``dataframe_records`` or ``dataframe_split``."""
        return await self._answer(request, _mlflow_records, lambda out, rid, ms: {"predictions": out["prediction"]})

    def model_info(self) -> dict[str, Any]:
        """For ``deploy.reload`` through a handle: which model this replica serves."""
        return {"model_uri": self._model.uri, "model_version": self._version, "model_name": self._model.name}

    @api.get("/", include_in_schema=False)
    async def page(self) -> Response:
        """The try-it page: a form from the contract that posts to /explain (or /predict)."""
        return Response(self._page, media_type="text/html; charset=utf-8")

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> Response:
        """This replica's OpenAPI document: the contract's fields under its validation policies."""
        if self._openapi is None:
            doc = openapi_document(
                self._model.bundle.contract,
                self._parser,
                model_name=self._name,
                model_version=self._version,
                operations=_operations(request.app),
            )
            self._openapi = orjson.dumps(doc)
        return Response(self._openapi, media_type="application/json")

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> Response:
        """Swagger UI over ``/openapi.json``, its files served from here (nothing from other hosts)."""
        root = request.scope.get("root_path", "").rstrip("/")
        page = docs_html(root + "/openapi.json", root + "/docs", f"{self._name} - raypipe API")
        return Response(page, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": DOCS_CSP})

    @api.get("/docs/{asset}", include_in_schema=False)
    async def docs_file(self, asset: str) -> Response:
        found = docs_asset(asset)
        if found is None:
            msg = f"no docs asset '{asset}'"
            return _json({"error": msg, "detail": [{"field": "asset", "msg": msg, "type": "not_found"}]}, 404)
        body, media = found
        return Response(body, media_type=media, headers={"Cache-Control": "public, max-age=86400"})

    @api.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "model_version": self._version,
            "replica": self._replica,
            "prediction_log": self._log_stats(),
            "batching": self._batch_stats(),
        }

    def _batch_stats(self) -> dict[str, Any]:
        """This replica's batches since it started: how many requests each ``inplace_predict`` served."""
        sizes = self._batch_sizes
        return {
            "requests": sum(k * n for k, n in sizes.items()),
            "batches": sum(sizes.values()),
            "batch_sizes": {str(k): sizes[k] for k in sorted(sizes)},
            "max_batch_size": self._max_batch_size,
        }

    def _log_stats(self) -> dict[str, Any]:
        if self._log is None:
            return {"enabled": False}
        return {"enabled": True, "root": str(self._log.root)} | self._log.stats()

    @api.get("/metadata")
    async def metadata(self) -> dict[str, Any]:
        m = self._model
        return {
            "model_name": m.name,
            "model_version": m.version,
            "model_uri": m.uri,
            "run_id": m.run_id,
            "task": m.bundle.contract.label.task,
            "classes": m.bundle.contract.label.classes,
            "schema": m.bundle.contract.to_dict(),
            "validation": {
                "unknown_fields": self._parser.unknown_fields,
                "unseen_categories": self._parser.unseen_categories,
                "out_of_range": self._parser.out_of_range,
                "nan_inf": "reject",
                "wrong_kind": "reject",
                "null_in_never_null": "reject",
            },
            "prediction_log": self._log_stats(),
        }


def build_app(args: dict[str, Any]) -> serve.Application:
    """Entry point for ``serve deploy`` / KubeRay: ``raypipe.serve.app:build_app``."""
    return ModelServer.bind(args["model_uri"], args.get("tracking_uri"), args.get("settings") or {})
