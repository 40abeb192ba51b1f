"""The quality gate on real data: a declared contract is enforced, failures name files and values."""

from __future__ import annotations

import pytest

from raypipe.data.schema import Contract
from raypipe.errors import DataError
from raypipe.pipeline.run import run_pipeline
from raypipe.pipeline.stages.profile import infer_schema

pytestmark = pytest.mark.integration


def test_declared_contract_violations_stop_the_run_before_training(
    ray_session, flights_dir, make_config, tracking_uri, registered_models, tmp_path
):
    data = {"path": str(flights_dir), "label": "delayed", "filter": "month <= 2"}
    contract = infer_schema(make_config(tmp_path, data))
    assert contract.label.task == "binary" and contract.label.classes == ["false", "true"]
    assert contract.feature("carrier").kind == "categorical"
    assert contract.feature("distance").max == 4983

    contract.feature("distance").max = 2000.0  # flights go further: out of range
    contract.save(tmp_path / "contract.yaml")
    cfg = make_config(tmp_path, data | {"schema_file": str(tmp_path / "contract.yaml")})
    with pytest.raises(DataError) as err:
        run_pipeline(cfg, tracking_uri=tracking_uri, serve_model=False)
    msg = str(err.value)
    assert "out_of_range" in msg and "'distance'" in msg
    assert "month=1/" in msg and "4983" in msg  # the file and an example value
    assert registered_models(tracking_uri) == []

    # As a warning the same finding lets the run finish, and it is reported.
    cfg = make_config(
        tmp_path,
        data | {"schema_file": str(tmp_path / "contract.yaml"), "quality": {"out_of_range": "warn"}},
        train={"num_boost_round": 5},
    )
    summary = run_pipeline(cfg, tracking_uri=tracking_uri, serve_model=False)
    assert any("out_of_range" in n and "distance" in n for n in summary.notes)
    assert (tmp_path / "runs" / cfg.name / "quality.json").exists()
    assert Contract.load(tmp_path / "contract.yaml").feature("distance").max == 2000.0


def test_duplicate_ids_fail_and_a_time_split_follows_the_clock(
    ray_session, make_config, tracking_uri, registered_models, tmp_path
):
    import datetime as dt

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(size=n)
    when = [dt.datetime(2024, 1, 1) + dt.timedelta(hours=int(h)) for h in rng.integers(0, 24 * 300, n)]
    table = pa.table({"id": np.arange(n), "x": x, "when": pa.array(when), "y": x + rng.normal(scale=0.5, size=n) > 0})
    root = tmp_path / "events"
    root.mkdir()
    pq.write_table(table, root / "a.parquet")
    pq.write_table(table.slice(0, 10), root / "b.parquet")  # ten ids again

    data = {"path": str(root), "label": "y", "id_column": "id"}
    with pytest.raises(DataError, match=r"duplicate_ids failed for column 'id'.*10 id value"):
        run_pipeline(make_config(tmp_path, data), tracking_uri=tracking_uri, serve_model=False)
    assert registered_models(tracking_uri) == []

    split = {"method": "time", "time_column": "when", "valid_after": "2024-08-01", "test_after": "2024-09-01"}
    cfg = make_config(
        tmp_path,
        data | {"split": split, "quality": {"duplicate_ids": "warn"}},
        features={"exclude": ["when"]},
        train={"num_boost_round": 5},
        register={"enabled": False},
    )
    summary = run_pipeline(cfg, tracking_uri=tracking_uri, serve_model=False)
    months = np.array([w.month for w in when] + [w.month for w in when[:10]])
    assert summary.rows == {
        "train": int((months < 8).sum()),
        "valid": int((months == 8).sum()),
        "test": int((months >= 9).sum()),
    }
    assert any("duplicate_ids" in note for note in summary.notes)


def test_the_profile_pass_screens_ids_for_repeats(ray_session):
    """Unique ids screen as 0 repeats (so the quality stage skips its group-by); repeated ones are
    counted, nulls aside, across blocks; without an id column there is no screen."""
    import pyarrow as pa
    import ray

    from raypipe.data.profile import profile_pass

    def blocks(*ids):
        return ray.data.from_arrow([pa.table({"id": pa.array(i, pa.int64()), "x": [1.0] * len(i)}) for i in ids])

    assert profile_pass(blocks(range(0, 500), range(500, 1000)), id_column="id").repeated_ids == 0
    screened = profile_pass(blocks([1, 2, 3, None, None], [3, 4, 1, 1]), id_column="id")
    assert screened.repeated_ids == 2  # 1 and 3; the two nulls are not ids
    assert screened.profile["all"]["id"].count == 9
    assert profile_pass(blocks([1, 1])).repeated_ids is None
