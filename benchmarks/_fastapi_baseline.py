"""The baseline: a plain FastAPI app under uvicorn doing the same work as the Serve replica
(size limit, contract parser, preprocessor + inplace_predict, the same response) in one process.

Run: ``RAYPIPE_BUNDLE=<bundle dir> uvicorn benchmarks._fastapi_baseline:app --port P``.
"""

import os
import time
import uuid

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from raypipe.data.records import RequestError, RequestParser
from raypipe.model import format_predictions
from raypipe.registry import load_model

_model = load_model(os.environ["RAYPIPE_BUNDLE"])
_parser = RequestParser(_model.bundle.contract)
_MAX_BODY = 1_000_000
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> Response:
    t0 = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    try:
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise RequestError(413, "body too large")
        table = _parser.parse_records(_parser.load_json(body))
    except RequestError as e:
        return Response(orjson.dumps(e.body()), status_code=e.status, media_type="application/json")
    out = format_predictions(_model.bundle.preprocessor.label, _model.bundle.predict_table(table))
    out |= {"model_version": "local", "request_id": request_id, "latency_ms": (time.perf_counter() - t0) * 1000}
    return Response(orjson.dumps(out), media_type="application/json")


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}
