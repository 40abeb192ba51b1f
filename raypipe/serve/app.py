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

    @api.post("/predict")
    async def predict(self, request: Request) -> JSONResponse:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        t0 = time.perf_counter()
        try:
            table = self._parser.parse(await self._body(request))
        except RequestError as e:
            return JSONResponse(e.body() | {"request_id": request_id}, status_code=e.status)
        scores = self._model.bundle.predict_table(table)
        out: dict[str, Any] = format_predictions(self._model.bundle.preprocessor.label, scores)
        out.update(
            model_name=self._model.name,
            model_version=self._model.version,
            request_id=request_id,
            latency_ms=round((time.perf_counter() - t0) * 1000, 3),
        )
        return JSONResponse(out)

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
