"""Defaults on tables built to hold traps, through the real pipeline (session Ray, SQLite MLflow):
a repeated entity key is kept and carries its signal, a row id is dropped, date strings become
date parts, a class with 3 rows does not break a multiclass run, and ``train.preset: best`` searches."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from _mlflow_store import sqlite_store

from raypipe.data.datasets import traps
from raypipe.pipeline.run import run_pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("traps")


def _run(make_config, tmp_path: Path, path: Path, label: str, **sections):
    sections = {"serve": {"enabled": False}, "report": {"enabled": False}, **sections}
    sections["train"] = {"num_boost_round": 300, **sections.get("train", {})}
    cfg = make_config(tmp_path / "work", {"path": str(path), "label": label}, **sections)
    return run_pipeline(cfg, tracking_uri=sqlite_store(tmp_path))


def test_a_repeated_entity_key_is_kept_and_a_row_id_dropped(ray_session, tables, make_config, tmp_path) -> None:
    path, label = traps.entity(tables, n=30_000)
    kept = _run(make_config, tmp_path, path, label)
    notes = "\n".join(kept.notes)
    # The distinct count is a sketch estimate (about 3 % error): nearly one value per row.
    assert re.search(r"'rating_id' looks like a row identifier \((0\.9\d|1\.0\d) distinct values per row", notes)
    assert "'user_id' is named like an identifier but repeats" in notes and "'item_id'" in notes
    from raypipe.registry import load_model

    prep = load_model(kept.model_uri, kept.tracking_uri).bundle.preprocessor
    assert set(prep.target) == {"user_id", "item_id"}  # 3,000 and 800 levels: target + frequency encoded
    without = _run(make_config, tmp_path, path, label, features={"exclude": ["user_id", "item_id"]})
    # The keys hold most of the signal: the AUC shows they were used.
    assert kept.metrics["test_auc"] > without.metrics["test_auc"] + 0.05, (kept.metrics, without.metrics)


def test_date_strings_and_a_rare_class(ray_session, tables, make_config, tmp_path) -> None:
    path, label = traps.dates(tables, n=20_000)
    dated = _run(make_config, tmp_path, path, label, register={"enabled": False})
    assert any("'opened' holds dates as strings (format %d-%b-%Y)" in n for n in dated.notes)
    as_category = _run(make_config, tmp_path, path, label, register={"enabled": False},
                       features={"categorical": ["opened"]})  # fmt: skip
    assert dated.metrics["test_auc"] > as_category.metrics["test_auc"] + 0.02
    path, label = traps.rare(tables, n=6_000)
    rare = _run(make_config, tmp_path, path, label)
    (policy,) = [n for n in rare.notes if n.startswith("class 'unknown'")]
    assert "kept as a class" in policy and "metrics there are undefined" in policy
    assert rare.metrics["test_auc_ovr"] > 0.9 and rare.model_version == "1"


def test_preset_best_runs_a_budgeted_search_and_refits(ray_session, tables, make_config, tmp_path) -> None:
    path, label = traps.imbalanced(tables, n=8_000)
    cfg = make_config(
        tmp_path / "work",
        {"path": str(path), "label": label},
        train={"preset": "best", "num_boost_round": 60},
        tune={"time_budget_s": 20, "grace_period_rounds": 10},
        serve={"enabled": False},
        report={"enabled": False},
        register={"enabled": False},
    )
    assert cfg.tune.enabled and "min_child_weight" in cfg.tune.search_space
    result = run_pipeline(cfg)
    assert result.tune["num_trials"] >= 2 and set(result.tune["best_params"]) >= {"eta", "max_depth"}
    assert result.metrics["test_auc"] > 0.7
