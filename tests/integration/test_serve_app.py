"""The Serve app over real HTTP on the session Ray, with a tiny model in a real MLflow store:
validation policies from config, fuzzed bodies (no 5xx), the prediction log, backpressure, reload."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from _serving import CONTRACT, MODEL_NAME, RECORD, Load, register_tiny_model, request, tiny_store
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raypipe.config import ServeConfig
from raypipe.serve.deploy import deploy, reload

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return tiny_store(tmp_path_factory.mktemp("serve-store"))


@pytest.fixture(scope="module")
def served(ray_session, store) -> tuple[str, ServeConfig]:
    from ray import serve

    tracking_uri, root = store
    cfg = ServeConfig(
        port=0,
        unknown_fields="ignore",
        unseen_categories="reject",
        max_body_bytes=64_000,
        log_dir=str(root / "predictions"),
        log_flush_s=0.3,
        log_flush_rows=50,
    )
    url = deploy(f"models:/{MODEL_NAME}@champion", tracking_uri, cfg)
    yield url, cfg
    serve.delete(cfg.app_name)


def _post(url: str, obj) -> tuple[int, dict]:
    return request(url, json.dumps(obj).encode())


def test_predict_answers_with_version_and_request_id(served) -> None:
    url, _ = served
    status, body = _post(url + "/predict", [RECORD, {**RECORD, "carrier": "EV"}])
    assert status == 200, body
    assert body["model_name"] == MODEL_NAME and body["model_version"] == "1"
    assert len(body["prediction"]) == 2 and len(body["request_id"]) >= 16
    status, meta = request(url + "/metadata", None, "GET")
    assert status == 200
    assert meta["model_uri"] == f"models:/{MODEL_NAME}/1"  # the alias was pinned at deploy time
    assert meta["validation"] == {
        "unknown_fields": "ignore",
        "unseen_categories": "reject",
        "out_of_range": "flag",
        "nan_inf": "reject",
        "wrong_kind": "reject",
        "null_in_never_null": "reject",
    }


def test_python_model_predict_matches_http_for_tables_frames_and_records(served, store) -> None:
    """``raypipe.load_model(...).predict`` validates and answers as ``POST /predict`` does."""
    import pandas as pd
    import pyarrow as pa

    import raypipe

    url, _ = served
    records = [RECORD, {**RECORD, "carrier": "EV", "distance": 200.0}, {**RECORD, "weekend": None}]
    status, body = _post(url + "/predict", records)
    assert status == 200
    model = raypipe.load_model(f"models:/{MODEL_NAME}@champion", store[0])
    assert (model.name, model.version) == (MODEL_NAME, "1") and model.contract.feature_names == CONTRACT.feature_names
    want = {k: body[k] for k in ("prediction", "probabilities")}
    assert model.predict(records) == want
    assert model.predict(pd.DataFrame(records)) == want
    assert model.predict(pa.Table.from_pylist(records)) == want
    assert model.predict(RECORD)["prediction"] == want["prediction"][:1]
    with pytest.raises(raypipe.SchemaError, match="record 1 field 'distance'") as err:
        model.predict([RECORD, {**RECORD, "distance": "far"}])
    assert err.value.context["errors"][0]["field"] == "distance"
    status, bad = _post(url + "/predict", [RECORD, {**RECORD, "distance": "far"}])
    assert status == 422 and bad["detail"][0]["field"] == "distance"  # the same field, over HTTP


def test_a_body_that_is_not_json_gets_a_415_and_a_wrong_kserve_name_a_404(served) -> None:
    url, _ = served
    body = json.dumps(RECORD).encode()
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        status, answer = request(url + "/predict", body, content_type=ctype)
        assert status == 415 and answer["detail"][0]["field"] == "Content-Type", (ctype, answer)
        assert ctype.split(";")[0] in answer["error"]
    for ctype in (None, "application/json; charset=utf-8", "application/vnd.example+json"):
        status, answer = request(url + "/predict", body, content_type=ctype)
        assert status == 200 and len(answer["prediction"]) == 1, (ctype, answer)

    instances = json.dumps({"instances": [RECORD]}).encode()
    status, answer = request(url + "/v1/models/other:predict", instances)
    assert status == 404 and answer["detail"][0]["field"] == "name", answer
    assert answer["error"] == f"model 'other' is not served here; this server serves '{MODEL_NAME}'"
    status, answer = request(url + f"/v1/models/{MODEL_NAME}:predict", instances)
    assert status == 200 and len(answer["predictions"]) == 1, answer


def test_validation_policies_from_config_over_http(served) -> None:
    url, _ = served
    # unknown_fields=ignore: an extra field is dropped, the record scores as without it.
    ok, with_extra = _post(url + "/predict", {**RECORD, "arr_delay": 12})
    _, plain = _post(url + "/predict", RECORD)
    assert ok == 200 and with_extra["probabilities"] == plain["probabilities"]
    # unseen_categories=reject: 422 naming the record and the field.
    status, body = _post(url + "/predict", [RECORD, {**RECORD, "carrier": "ZZ"}])
    assert status == 422 and body["detail"][0]["record"] == 1 and body["detail"][0]["field"] == "carrier"
    assert "unseen category 'ZZ'" in body["error"]
    # NaN is rejected naming the field; non-JSON is a 400; too large a body a 413.
    status, body = request(url + "/predict", json.dumps(RECORD).replace("1400", "NaN").encode())
    assert status == 422 and body["detail"][0]["field"] == "distance"
    status, body = request(url + "/predict", b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = request(url + "/predict", b"[" * 50_000 + b"]" * 50_000)
    assert status in (400, 413), body
    status, body = request(url + "/predict", json.dumps([RECORD] * 3000).encode())
    assert status == 413 and "64000-byte limit" in body["error"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_field_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | _json_values
_records = st.fixed_dictionaries(
    {}, optional={name: _field_values for name in [*CONTRACT.feature_names, "extra"]}
) | st.builds(lambda k, v: {**RECORD, k: v}, st.sampled_from(CONTRACT.feature_names), _field_values)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda v: json.dumps(v).encode()),
    _records.map(lambda r: json.dumps(r).encode()),
    st.lists(_records, max_size=5).map(lambda r: json.dumps(r).encode()),
    st.builds(lambda r: json.dumps({"instances": r}).encode(), st.lists(_records, max_size=3) | _json_values),
    st.builds(
        lambda c, d: json.dumps({"dataframe_split": {"columns": c, "data": d}}).encode(),
        st.lists(st.sampled_from(CONTRACT.feature_names) | _json_values, max_size=4),
        st.lists(st.lists(_field_values, max_size=4) | _json_values, max_size=3),
    ),
)
_paths = st.sampled_from(["/predict", f"/v1/models/{MODEL_NAME}:predict", "/invocations"])


def test_fuzzed_bodies_never_get_a_5xx_and_the_server_keeps_serving(served) -> None:
    url, _ = served
    seen: list[int] = []

    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(path=_paths, body=_bodies)
    def check(path: str, body: bytes) -> None:
        status, answer = request(url + path, body)
        seen.append(status)
        assert status < 500, (path, body[:300], status, answer)

    check()
    assert len(seen) >= 500
    assert any(s == 200 for s in seen) and any(400 <= s < 500 for s in seen)  # both paths were exercised
    status, body = _post(url + "/predict", RECORD)
    assert status == 200 and body["prediction"]


def test_prediction_log_is_partitioned_parquet_with_the_contract_columns(served) -> None:
    url, cfg = served
    status, body = _post(url + "/predict", [RECORD, {**RECORD, "distance": None, "carrier": "B6"}])
    assert status == 200
    root = Path(cfg.log_dir)
    deadline = time.monotonic() + 30
    table = None
    while time.monotonic() < deadline:  # the writer flushes every 0.3 s, off the request path
        if any(root.rglob("*.parquet")):
            table = pads.dataset(root, format="parquet", partitioning="hive").to_table()
            if body["request_id"] in table.column("request_id").to_pylist():
                break
        time.sleep(0.2)
    assert table is not None
    files = list(root.rglob("*.parquet"))
    assert all(f.parent.parent.name == f"model={MODEL_NAME}" and f.parent.name.startswith("date=") for f in files)
    mine = table.filter(pads.field("request_id") == body["request_id"]).sort_by("row")
    assert mine.num_rows == 2 and mine.column("row").to_pylist() == [0, 1]
    schema = mine.schema
    assert str(schema.field("ts").type) == "timestamp[ms, tz=UTC]" and str(schema.field("row").type) == "int32"
    assert str(schema.field("distance").type) == "int16"  # cast to the contract dtype
    assert mine.column("distance").to_pylist() == [1400, None] and mine.column("carrier").to_pylist() == ["UA", "B6"]
    assert mine.column("model_version").to_pylist() == ["1", "1"]
    assert mine.column("prediction").to_pylist() == [str(p).lower() for p in body["prediction"]]
    p_true = [p["True"] for p in body["probabilities"]]
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(mine.column("score").to_pylist(), p_true))
    status, health = request(url + "/healthz", None, "GET")
    assert health["prediction_log"]["dropped_rows"] == 0 and health["prediction_log"]["written_rows"] >= 2


def _hold_open(url: str, path: str = "/predict") -> socket.socket:
    """A request whose body never finishes arriving: it occupies its slot until the socket closes.

    32 KB of a 60 KB body (under the app's 64,000-byte limit): HAProxy holds a body until it is whole
    or fills its 16 KB buffer, so only a body past the buffer reaches the replica unfinished (a small
    one would wait in HAProxy).
    """
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n"
    s.sendall(head.encode() + b"\r\n[" + b" " * 32_767)
    return s


def test_past_the_queue_bound_requests_get_a_fast_503(served, store) -> None:
    url, cfg = served
    tight = cfg.model_copy(update={"max_ongoing_requests": 1, "max_queued_requests": 1, "max_batch_size": 1})
    deploy(f"models:/{MODEL_NAME}@champion", store[0], tight)
    held = []
    try:
        held.append(_hold_open(url))  # takes the replica's one slot
        time.sleep(0.5)
        held.append(_hold_open(url))  # waits in the one queue place
        time.sleep(0.5)
        t0 = time.perf_counter()
        status, body = _post(url + "/predict", RECORD)
        elapsed = time.perf_counter() - t0
        assert status == 503, (status, body)
        assert elapsed < 2.0
    finally:
        for s in held:
            s.close()
        deploy(f"models:/{MODEL_NAME}@champion", store[0], cfg)  # back to the module's settings, pass or fail
    assert _post(url + "/predict", RECORD)[0] == 200


def test_a_slow_sender_of_a_small_body_waits_in_haproxy_and_gets_a_408(served) -> None:
    """HAProxy holds a small body until it is whole (so a retry can replay it): a sender that stalls
    ties up no replica, and is answered 408 after serve.request_timeout_s."""
    from raypipe.serve.ingress import resolve_mode

    if resolve_mode(ServeConfig(ingress=os.environ.get("RAYPIPE_TEST_INGRESS", "auto"))) != "haproxy":
        pytest.skip("HAProxy ingress only")
    url, cfg = served
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=cfg.request_timeout_s + 10) as s:
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        t0 = time.perf_counter()
        assert _post(url + "/predict", RECORD)[0] == 200  # meanwhile, others are served
        answer = s.recv(200)
        waited = time.perf_counter() - t0
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert cfg.request_timeout_s - 1 <= waited <= cfg.request_timeout_s + 3, waited


def test_concurrent_distinct_requests_are_batched_and_each_gets_its_own_answer(served, store) -> None:
    """400 different records from 16 clients at once: batches of several requests form (``/healthz``
    counts them), and every answer is that record's own offline prediction under its own request id."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from raypipe import load_model

    url, _ = served
    tracking_uri, _ = store
    rng = np.random.default_rng(7)
    records = [
        {"distance": int(d), "carrier": str(c), "weekend": bool(w)}
        for d, c, w in zip(rng.integers(10, 5000, 400), rng.choice(["UA", "B6", "EV"], 400), rng.random(400) < 0.3)
    ]
    before = request(url + "/healthz", None, "GET")[1]["batching"]

    def ask(i: int) -> tuple[int, dict]:
        return request(url + "/predict", json.dumps(records[i]).encode(), headers={"x-request-id": f"req-{i}"})

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(len(records))))
    after = request(url + "/healthz", None, "GET")[1]["batching"]

    assert all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    assert [body["request_id"] for _, body in answers] == [f"req-{i}" for i in range(len(records))]
    for version in {body["model_version"] for _, body in answers}:
        offline = load_model(f"models:/{MODEL_NAME}/{version}", tracking_uri).predict(records)
        for i, (_, body) in enumerate(answers):
            if body["model_version"] == version:
                assert body["prediction"] == [offline["prediction"][i]], i
                got, want = body["probabilities"][0], offline["probabilities"][i]
                assert got.keys() == want.keys() and all(math.isclose(got[k], want[k], abs_tol=1e-6) for k in got), i
    # The replica's counters: every request went through a batch, and some batches held several.
    assert after["requests"] - before["requests"] == len(records)
    grew = {int(k): n - before["batch_sizes"].get(k, 0) for k, n in after["batch_sizes"].items()}
    print(f"batches by size (requests per inplace_predict) for {len(records)} requests: {grew}")
    assert sum(k * n for k, n in grew.items()) == len(records)
    assert sum(n for k, n in grew.items() if k > 1) > 0, after
    assert max(grew) <= after["max_batch_size"]


def test_reload_moves_to_the_new_champion_with_no_failed_request(served, store) -> None:
    url, cfg = served
    tracking_uri, root = store
    new_version = register_tiny_model(tracking_uri, root, rounds=8, seed=1)
    load = Load(url + "/predict", json.dumps(RECORD).encode(), total=100_000, threads=4)
    with load.in_background():
        load.wait_until_sent(100)
        result = reload(MODEL_NAME, tracking_uri, cfg)
        sent = load.sent
        load.wait_until_sent(sent + 200)  # keeps loading after the rollout
        load.stop()
    assert result.changed and result.model_uri == f"models:/{MODEL_NAME}/{new_version}"
    assert result.previous_uri == f"models:/{MODEL_NAME}/1"
    assert load.failures == 0, load.codes
    assert load.versions["1"] > 0 and load.versions[new_version] > 0, load.versions
    assert request(url + "/metadata", None, "GET")[1]["model_version"] == new_version
    assert not reload(MODEL_NAME, tracking_uri, cfg).changed  # already current: nothing restarts
