"""Explanations over real HTTP (``POST /explain``, ``/predict`` with ``"explain": true``) on the session
Ray with a tiny model in a real MLflow store, and ``raypipe predict --explain`` as a user runs it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from _serving import CONTRACT, MODEL_NAME, RECORD, deployed, request, tiny_store, tiny_table

pytestmark = pytest.mark.integration

RECORDS = [RECORD, {**RECORD, "carrier": "EV", "distance": 200.0}, {**RECORD, "weekend": None, "distance": 4100}]
FIELDS = set(CONTRACT.feature_names)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return tiny_store(tmp_path_factory.mktemp("explain-store"))


@pytest.fixture(scope="module")
def served(ray_session, store) -> Iterator[str]:
    with deployed(store[0], "explain") as url:
        yield url


def _post(url: str, obj) -> tuple[int, dict]:
    return request(url, json.dumps(obj).encode())


def _check_additive(body: dict, n: int) -> None:
    """Each record's base + contributions is its margin, and the margin is the logit of its probability."""
    assert body["explanation_units"] == "log-odds" and len(body["explanations"]) == n
    for ex, probs in zip(body["explanations"], body["probabilities"]):
        assert set(ex["contributions"]) == FIELDS and ex["explained_class"] == "true"
        assert ex["base"] + sum(ex["contributions"].values()) == pytest.approx(ex["margin"], abs=1e-4)
        p = probs["True"]
        # p is rounded to 6 decimals: allow that rounding's effect on the logit, on top of 1e-4.
        assert math.log(p / (1 - p)) == pytest.approx(ex["margin"], abs=1e-4 + 5e-7 / (p * (1 - p)))


def test_explain_answers_like_predict_plus_contributions(served, store) -> None:
    import raypipe

    status, plain = _post(served + "/predict", RECORDS)
    assert status == 200 and "explanations" not in plain
    status, body = _post(served + "/explain", RECORDS)
    assert status == 200, body
    assert body["prediction"] == plain["prediction"] and body["probabilities"] == plain["probabilities"]
    assert {"model_name", "model_version", "request_id", "latency_ms"} <= set(body)
    _check_additive(body, 3)
    # The contributions differ between records (not one constant answer) and match the Python API.
    assert body["explanations"][0]["contributions"] != body["explanations"][1]["contributions"]
    offline = raypipe.load_model(f"models:/{MODEL_NAME}@champion", store[0]).explain(RECORDS)["explanations"]
    for got, want in zip(body["explanations"], offline):
        assert got["margin"] == pytest.approx(want["margin"], abs=1e-6)
        assert got["contributions"] == pytest.approx(want["contributions"], abs=1e-6)
    status, one = _post(served + "/explain", RECORD)  # one record object, as /predict takes
    assert status == 200 and len(one["explanations"]) == 1 and len(one["prediction"]) == 1


def test_concurrent_requests_explained_together_each_get_their_own_rows(served, store) -> None:
    """Queued /explain requests share one ``pred_contribs`` call: the split back must not mix them up."""
    from concurrent.futures import ThreadPoolExecutor

    import raypipe

    bodies = [[{**RECORD, "distance": 100 + 300 * i}] * (1 + i % 3) for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda b: _post(served + "/explain", b), bodies))
    model = raypipe.load_model(f"models:/{MODEL_NAME}@champion", store[0])
    for body, (status, answer) in zip(bodies, answers):
        assert status == 200 and len(answer["explanations"]) == len(body), answer
        want = model.explain(body)["explanations"]
        assert [e["margin"] for e in answer["explanations"]] == pytest.approx([e["margin"] for e in want], abs=1e-6)


def test_predict_with_the_explain_wrapper(served) -> None:
    status, body = _post(served + "/predict", {"records": RECORDS, "explain": True})
    assert status == 200, body
    _check_additive(body, 3)
    status, explained = _post(served + "/explain", {"records": RECORDS})  # /explain takes the wrapper too
    assert status == 200 and explained["explanations"] == body["explanations"]
    for off in ({"records": RECORDS, "explain": False}, {"records": RECORDS}):
        status, plain = _post(served + "/predict", off)
        assert status == 200 and "explanations" not in plain and len(plain["prediction"]) == 3
    status, single = _post(served + "/predict", {"records": RECORD, "explain": True})
    assert status == 200 and len(single["explanations"]) == 1
    status, bad = _post(served + "/predict", {"records": RECORDS, "explain": "yes"})
    assert status == 422 and bad["detail"][0]["field"] == "explain", bad
    status, bad = _post(served + "/predict", {"records": RECORDS, "explian": True})
    assert status == 422 and bad["detail"][0]["field"] == "explian", bad


def test_a_bad_record_gets_the_same_422_on_every_path(served) -> None:
    bodies = [
        ("/predict", [RECORD, {**RECORD, "distance": "far"}]),
        ("/explain", [RECORD, {**RECORD, "distance": "far"}]),
        ("/predict", {"records": [RECORD, {**RECORD, "distance": "far"}], "explain": True}),
        ("/explain", [RECORD, {**RECORD, "color": "red"}]),  # unknown field: rejected by default
    ]
    answers = []
    for path, obj in bodies:
        status, answer = _post(served + path, obj)
        assert status == 422, (path, answer)
        answers.append((answer["error"], answer["detail"]))
    assert answers[0] == answers[1] == answers[2] and answers[0][1][0]["field"] == "distance"
    assert answers[3][1][0]["field"] == "color"


def test_explain_errors_for_scikit_learn_models_and_a_records_field() -> None:
    """Without a deployment: the replica's helpers (a second model would cost a second deploy)."""
    from sklearn.dummy import DummyClassifier

    from raypipe.data.records import RequestError
    from raypipe.serve.app import _check_explainable, _unwrap_explain

    with pytest.raises(RequestError, match="XGBoost.*DummyClassifier") as err:
        _check_explainable(DummyClassifier())
    assert err.value.status == 422 and err.value.errors[0]["field"] == "explain"
    record = {"records": 3.0, "explain": True}
    assert _unwrap_explain(record, ["records", "explain"]) == (record, False)  # a contract field stays a field
    assert _unwrap_explain({"records": [record]}, ["x"]) == ([record], False)


def test_cli_predict_explain_writes_contribution_columns(
    ray_session, store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ``raypipe predict`` command, in process: 6 s here against 20 s as a subprocess (Python, Ray
    and MLflow imports and a Ray connect). Only its shutdown of the Ray it would own is skipped."""
    from typer.testing import CliRunner

    import raypipe.cli.serve
    from raypipe.cli import app

    monkeypatch.setattr(raypipe.cli.serve, "shutdown_local", lambda: None)  # the session's Ray stays up
    table = tiny_table(300, seed=5).drop_columns(["delayed"])
    # One row a request would get a 422 for (NaN distance): it stays unscored, its contributions null.
    table = table.set_column(0, "distance", pa.array([math.nan, *table.column("distance").to_pylist()[1:]]))
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "part-0.parquet")
    args = ["predict", f"models:/{MODEL_NAME}@champion", "--input", str(tmp_path / "in"), "--explain"]
    args += ["--output", str(tmp_path / "out"), "--tracking-uri", store[0], "--actors", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "scored 300 rows" in result.output, result.output
    got = pads.dataset(tmp_path / "out", format="parquet").to_table()
    names = [f"contribution__{f}" for f in CONTRACT.feature_names] + ["contribution__base"]
    assert got.num_rows == 300 and all(got.schema.field(n).type == pa.float64() for n in names)
    unscored = got.filter(pads.field("score").is_null())
    assert unscored.num_rows == 1 and all(unscored.column(n).null_count == 1 for n in names)
    scored = got.filter(pads.field("score").is_valid())
    margin = sum(np.asarray(scored.column(n)) for n in names)
    p = np.asarray(scored.column("score"))
    np.testing.assert_allclose(margin, np.log(p / (1 - p)), atol=1e-4)
