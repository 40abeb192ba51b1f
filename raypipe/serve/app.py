"""The Ray Serve application: a FastAPI ingress over the verified model bundle.

Endpoints: ``POST /predict`` (a record or a list of records), ``GET /healthz``,
``GET /metadata``. Bodies are size-limited before parsing and validated
against the training contract; client mistakes are 4xx with the field named.

No ``from __future__ import annotations`` here: FastAPI must see real types to
inject ``Request`` into the handlers.
"""

import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from raypipe.registry import load_model
from raypipe.serve.predict import format_predictions
from raypipe.serve.schema import RequestError, RequestParser

api = FastAPI(title="raypipe model server")


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
        if any(not isinstance(r, list) or len(r) != len(cols) for r in rows):
            raise RequestError(422, f"every dataframe_split row must be a list of {len(cols)} values")
        return [dict(zip(cols, r)) for r in rows]
    raise RequestError(422, "body must hold 'dataframe_records' or 'dataframe_split'")


@serve.deployment
@serve.ingress(api)
class ModelServer:
    def __init__(self, model_uri: str, tracking_uri: str | None = None, max_body_bytes: int = 1_000_000) -> None:
        self._model = load_model(model_uri, tracking_uri)
        self._parser = RequestParser(self._model.bundle.contract)
        self._max_body_bytes = max_body_bytes

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

    async def _answer(self, request: Request, unwrap, shape) -> JSONResponse:
        """Shared path of every predict protocol: limit, parse, validate, predict, shape."""
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        t0 = time.perf_counter()
        try:
            payload = self._parser.load_json(await self._body(request))
            table = self._parser.parse_records(unwrap(payload))
        except RequestError as e:
            return JSONResponse(e.body() | {"request_id": request_id}, status_code=e.status)
        scores = self._model.bundle.predict_table(table)
        out = format_predictions(self._model.bundle.preprocessor.label, scores)
        return JSONResponse(shape(out, request_id, (time.perf_counter() - t0) * 1000))

    def _full(self, out: dict[str, Any], request_id: str, ms: float) -> dict[str, Any]:
        return out | {
            "model_name": self._model.name,
            "model_version": self._model.version,
            "request_id": request_id,
            "latency_ms": round(ms, 3),
        }

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        """One record or a list of records -> predictions (+ probabilities), model version, request id."""
        return await self._answer(request, lambda p: p, self._full)

    @api.post("/v1/models/{name}:predict")
    async def kserve_v1(self, name: str, request: Request) -> JSONResponse:
        """KServe v1 protocol: ``{"instances": [records]}`` -> ``{"predictions": [...]}``."""
        return await self._answer(
            request, lambda p: _field(p, "instances"), lambda out, rid, ms: {"predictions": out["prediction"]}
        )

    @api.post("/invocations")
    async def invocations(self, request: Request) -> JSONResponse:
        """MLflow scoring protocol: ``dataframe_records`` or ``dataframe_split``."""
        return await self._answer(request, _mlflow_records, lambda out, rid, ms: {"predictions": out["prediction"]})

    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

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
        }


def build_app(args: dict[str, Any]) -> serve.Application:
    """Entry point for ``serve deploy`` / KubeRay: ``raypipe.serve.app:build_app``."""
    return ModelServer.bind(args["model_uri"], args.get("tracking_uri"), int(args.get("max_body_bytes", 1_000_000)))
