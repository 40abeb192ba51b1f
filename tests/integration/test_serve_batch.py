"""Batch scoring on Ray Data with an actor pool: partitioned Parquet in and out, same scores as in process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from _mlflow_store import sqlite_store
from _serving import MODEL_NAME, register_tiny_model, tiny_table

from raypipe.errors import DataError
from raypipe.registry import load_model
from raypipe.serve.batch import score_parquet, score_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scored_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("batch")
    uri = sqlite_store(root)
    register_tiny_model(uri, root, rounds=5, seed=3)
    data = root / "input"
    for month in (1, 2):
        (data / f"month={month}").mkdir(parents=True)
        pq.write_table(tiny_table(3000, seed=month).drop(["delayed"]), data / f"month={month}" / "part-0.parquet")
    return uri, data


def test_scores_partitioned_parquet_like_the_in_process_path(ray_session, scored_input, tmp_path: Path) -> None:
    uri, data = scored_input
    result = score_parquet(f"models:/{MODEL_NAME}@champion", uri, str(data), str(tmp_path / "out"), actors=2)
    assert result.rows == 6000 and result.model_uri == f"models:/{MODEL_NAME}/1"
    months = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert months == ["month=1", "month=2"]  # partitioned like the input
    got = pads.dataset(tmp_path / "out", format="parquet", partitioning="hive").to_table()
    assert {"distance", "carrier", "weekend", "prediction", "score", "warnings"} <= set(got.column_names)
    assert set(map(tuple, got.column("warnings").to_pylist())) == {()}  # the input is inside the contract
    # Same preprocessor, same model: identical scores to scoring the file in this process.
    bundle = load_model(result.model_uri, uri).bundle
    for month in (1, 2):
        want = score_table(bundle, pq.read_table(data / f"month={month}"))
        keys = [("distance", "ascending"), ("carrier", "ascending"), ("weekend", "ascending")]
        mine = got.filter(pads.field("month") == month).sort_by(keys)
        want = want.sort_by(keys)
        assert mine.num_rows == want.num_rows
        np.testing.assert_allclose(np.asarray(mine.column("score")), np.asarray(want.column("score")))
    assert set(got.column("prediction").to_pylist()) <= {"false", "true"}


def test_missing_feature_columns_are_named(ray_session, scored_input, tmp_path: Path) -> None:
    uri, _ = scored_input
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"distance": [1, 2]}), bad)
    with pytest.raises(DataError, match=r"lacks the model's feature column\(s\) \['carrier', 'weekend'\]"):
        score_parquet(f"models:/{MODEL_NAME}@champion", uri, str(bad), str(tmp_path / "out"))


def test_out_of_contract_rows_are_named_in_warnings_and_rejected_by_policy(
    ray_session, scored_input, tmp_path: Path
) -> None:
    uri, _ = scored_input
    data = tmp_path / "odd.parquet"
    distance = pa.array([1400, 9000, 14, 3], pa.int16())  # inside, above the max, inside, below the min
    pq.write_table(pa.table({"distance": distance, "carrier": ["UA"] * 4, "weekend": [False] * 4}), data)
    for policy in ("flag", "reject"):
        out = tmp_path / policy
        score_parquet(f"models:/{MODEL_NAME}@champion", uri, str(data), str(out), actors=1, out_of_range=policy)
        got = pq.read_table(out).sort_by([("distance", "ascending")])
        assert got.column("distance").to_pylist() == [3, 14, 1400, 9000]
        assert got.column("warnings").to_pylist() == [["distance"], [], [], ["distance"]]
        nulls = [s is None for s in got.column("score").to_pylist()]
        assert nulls == ([True, False, False, True] if policy == "reject" else [False] * 4), policy
