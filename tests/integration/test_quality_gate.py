"""The quality gate on real data: a declared contract is enforced, failures name files and values."""

from __future__ import annotations

import pytest

from raypipe.data.schema import Contract
from raypipe.errors import DataError
from raypipe.pipeline import infer_schema, run_pipeline

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
