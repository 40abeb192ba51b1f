"""Out-of-contract values over real HTTP: wrong kinds are a 422 naming the field; values outside
the training range are flagged (scored, ``warnings``, logged) or rejected, by ``serve.out_of_range``.
A fuzz of contract-violating values never gets a silent 200."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from _mlflow_store import sqlite_store
from _serving import CONTRACT, MODEL_NAME, RECORD, register_tiny_model, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raypipe.config import ServeConfig
from raypipe.data.schema import Contract
from raypipe.serve.deploy import deploy

pytestmark = pytest.mark.integration

STRICT = Contract(features=[replace(f, nullable=f.name != "weekend") for f in CONTRACT.features], label=CONTRACT.label)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("policy")
    uri = sqlite_store(root)
    register_tiny_model(uri, root, rounds=5, contract=STRICT)
    return uri, root


@pytest.fixture(scope="module", params=["flag", "reject"])
def app(request: pytest.FixtureRequest, ray_session, store) -> tuple[str, str, Path]:
    """The app under each policy (one route, so one at a time): (url, policy, log root)."""
    from ray import serve

    uri, root = store
    log_root = root / f"log-{request.param}"
    cfg = ServeConfig(port=0, app_name="policy", out_of_range=request.param, log_dir=str(log_root), log_flush_s=0.2)
    url = deploy(f"models:/{MODEL_NAME}@champion", uri, cfg)
    yield url, request.param, log_root
    serve.delete(cfg.app_name)


def _raw(field: str, raw: str) -> bytes:
    return json.dumps({**RECORD, field: "__V__"}).replace('"__V__"', raw).encode()


def test_wrong_kinds_are_a_422_naming_the_field_under_either_policy(app) -> None:
    url, policy, _ = app
    cases = [
        ("distance", "true"),
        ("distance", '" 12 "'),
        ("distance", "NaN"),
        ("distance", "1e400"),
        ("carrier", "NaN"),
        ("carrier", "1e400"),
        ("weekend", "null"),
    ]
    for field, raw in cases:
        status, body = request(url + "/predict", _raw(field, raw))
        assert status == 422 and body["detail"][0]["field"] == field, (field, raw, status, body)
    status, body = request(url + "/predict", json.dumps(dict.fromkeys(RECORD)).encode())
    assert status == 422 and [d["field"] for d in body["detail"]] == ["weekend"], body
    status, meta = request(url + "/metadata", None, "GET")
    assert meta["validation"]["out_of_range"] == policy


def test_out_of_range_is_flagged_and_logged_or_rejected(app) -> None:
    url, policy, log_root = app
    records = [RECORD, {**RECORD, "distance": 2**70}, {**RECORD, "distance": 14.5}]
    status, body = request(url + "/predict", json.dumps(records).encode())
    status_plain, plain = request(url + "/predict", json.dumps(RECORD).encode())
    assert status_plain == 200 and "warnings" not in plain
    if policy == "reject":
        assert status == 422, body
        assert [(d["record"], d["field"]) for d in body["detail"]] == [(1, "distance"), (2, "distance")]
        assert "above the training maximum 5000" in body["error"] and "not a whole number" in body["error"]
        return
    assert status == 200 and len(body["prediction"]) == 3, body
    assert [(w["record"], w["field"]) for w in body["warnings"]] == [(1, "distance"), (2, "distance")]
    assert "above the training maximum 5000" in body["warnings"][0]["msg"]
    mine = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the writer flushes every 0.2 s
        if list(log_root.rglob("*.parquet")):
            table = pads.dataset(log_root, format="parquet", partitioning="hive").to_table()
            mine = table.filter(pads.field("request_id") == body["request_id"]).sort_by("row")
            if mine.num_rows:
                break
        time.sleep(0.2)
    assert mine is not None and mine.column("warnings").to_pylist() == [[], ["distance"], ["distance"]]


# Each value breaks the contract of the field it is put in: a wrong kind or outside the range.
_bad_number = (
    st.booleans()
    | st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: not 10 <= v <= 5000 or v != int(v))
    | st.integers().filter(lambda v: not 10 <= v <= 5000)
    | st.text(max_size=6).map(json.dumps)
)
_violations = st.one_of(
    st.tuples(st.just("distance"), _bad_number.map(lambda v: v if isinstance(v, str) else json.dumps(v))),
    st.tuples(st.just("carrier"), st.sampled_from(["NaN", "Infinity", "1e400", "true", "[1]", "{}"])),
    st.tuples(st.just("weekend"), st.sampled_from(["null", "0", "1", '"true"', '"yes"', "1.0", "NaN"])),
)


def test_fuzzed_contract_violations_are_never_a_silent_200(app) -> None:
    url, policy, _ = app
    seen: dict[str, int] = {"422": 0, "flagged": 0}

    @settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(violation=_violations)
    def check(violation: tuple[str, str]) -> None:
        field, raw = violation
        status, body = request(url + "/predict", _raw(field, raw))
        if status == 200:
            assert policy == "flag" and [w["field"] for w in body["warnings"]] == [field], (raw, body)
            seen["flagged"] += 1
        else:
            assert status == 422 and body["detail"][0]["field"] == field, (field, raw, status, body)
            seen["422"] += 1

    check()
    print(f"contract fuzz ({policy}): {seen}")
    assert seen["422"] + seen["flagged"] >= 200 and seen["422"]
    assert (seen["flagged"] > 0) == (policy == "flag")
