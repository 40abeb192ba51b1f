"""Defaults decided from the data: row identifiers vs repeated keys (distinct counts), date strings,
rare classes, the distinct-count sketch, and ``train.preset: best``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from raypipe.config import DataConfig, FeaturesConfig, load_config
from raypipe.data import sketch
from raypipe.data.records import RequestParser
from raypipe.data.schema import infer_contract
from raypipe.errors import ConfigError
from raypipe.evaluate import evaluate
from raypipe.features import Preprocessor
from raypipe.pipeline.stages.profile import level_columns, rare_class_notes

rng = np.random.default_rng(0)


def _contract(column_stats, table: pa.Table, label: str, batches: int = 4, **features):
    cfg = load_config(raw={"data": {"path": "m", "label": label}, "features": features})
    step = -(-table.num_rows // batches)
    stats = column_stats(
        *(table.slice(i, step) for i in range(0, table.num_rows, step)),
        level_columns=level_columns(cfg, table.schema),
    )
    return infer_contract(table.schema, stats, stats, DataConfig(path="m", label=label), FeaturesConfig(**features))


def test_sketch_counts_exactly_when_small_and_within_a_few_percent_when_large() -> None:
    from raypipe.data.split import hash_column

    small = sketch.sketch(hash_column(pa.array(np.arange(500) % 300)))
    assert sketch.estimate(small) == 300
    parts = [sketch.sketch(hash_column(pa.array(np.arange(i, 200_000, 4)))) for i in range(4)]
    assert abs(sketch.estimate(sketch.merge(parts)) / 200_000 - 1) < 0.1
    # Merging is order-free and idempotent: a value seen in two batches counts once.
    assert sketch.merge([parts[0], parts[0]]) == parts[0]
    assert sketch.merge(parts[::-1]) == sketch.merge(parts)


def test_a_unique_id_is_dropped_and_a_repeated_key_kept_with_the_measured_ratio(column_stats) -> None:
    n = 20_000
    users = rng.integers(1, 2001, n)
    table = pa.table(
        {
            "row_id": np.arange(n, dtype=np.int64) * 3,
            "customer_id": users.astype(np.int64),
            "reading": rng.normal(size=n),  # unique floats, not named like an id: a feature
            "y": rng.random(n) < 0.5,
        }
    )
    contract = _contract(column_stats, table, "y")
    assert contract.feature_names == ["customer_id", "reading"]
    key = contract.feature("customer_id")
    assert key.kind == "categorical" and len(key.categories) == len(np.unique(users))
    dropped = next(n for n in contract.notes if n.startswith("'row_id'"))
    assert "looks like a row identifier (1.00 distinct values per row" in dropped
    kept = next(n for n in contract.notes if n.startswith("'customer_id'"))
    assert "repeats (0.10 distinct values per row" in kept and "kept, as a categorical key" in kept
    # Naming it keeps a unique id; declaring it numeric keeps a key numeric.
    assert "row_id" in _contract(column_stats, table, "y", include=["row_id", "reading"]).feature_names
    assert _contract(column_stats, table, "y", numeric=["customer_id"]).feature("customer_id").kind == "numeric"


def test_date_strings_become_date_parts_and_serving_takes_the_same_strings(column_stats) -> None:
    days = np.datetime64("1995-01-01") + rng.integers(0, 3000, 5000).astype("timedelta64[D]")
    written = [f"{d.item():%d-%b-%Y}" for d in days]
    iso = [str(d) for d in days]
    table = pa.table(
        {
            "opened": written,
            "closed": iso,
            "zip": [f"{z:05d}" for z in rng.integers(0, 300, 5000) * 7],  # digits: not dates
            "mostly": [w if i % 5 else "n/a" for i, w in enumerate(written)],  # 80 % dates: a category
            "y": rng.random(5000) < 0.5,
        }
    )
    contract = _contract(column_stats, table, "y")
    kinds = {f.name: (f.kind, f.format) for f in contract.features}
    assert kinds["opened"] == ("timestamp", "%d-%b-%Y") and kinds["closed"] == ("timestamp", "ISO8601")
    assert kinds["zip"][0] == "categorical" and kinds["mostly"][0] == "categorical"
    assert any("'opened' holds dates as strings (format %d-%b-%Y)" in n for n in contract.notes)
    prep = Preprocessor.fit(contract)
    assert "opened__month" in prep.feature_names and "opened" not in prep.feature_names
    X = prep.transform_features(table.slice(0, 3))
    month = prep.feature_names.index("opened__month")
    assert list(X[:, month]) == [d.item().month for d in days[:3]]
    # Serving parses the request's string as training did; an unparseable one is missing, not a 500.
    record = {c: table.column(c)[0].as_py() for c in contract.feature_names}
    parsed = RequestParser(contract).parse_records([record, {**record, "opened": "someday"}])
    got = prep.transform_features(parsed)
    assert got[0, month] == days[0].item().month and np.isnan(got[1, month])


def test_a_class_too_rare_for_every_split_is_kept_with_its_policy_stated(column_stats) -> None:
    from raypipe.data.profile import ColumnStats

    labels = {"train": {"a": 50, "b": 40, "rare": 3}, "valid": {"a": 6, "b": 5}, "test": {"a": 7, "b": 4}}
    profile = {s: {"y": ColumnStats(count=sum(v.values()), levels=__import__("collections").Counter(v))}
               for s, v in labels.items()}  # fmt: skip
    table = pa.table({"x": np.arange(9.0), "y": ["a", "b", "rare"] * 3})
    contract = _contract(column_stats, table, "y", batches=1)
    (note,) = rare_class_notes(contract, profile)
    assert note.startswith("class 'rare' has 3 labelled rows (train 3, valid 0, test 0): kept as a class")
    assert "absent from valid and test" in note
    # Its metrics: the AUC averages the classes present instead of turning NaN.
    y = np.array([0, 1, 0, 1, 0, 1])
    p = np.column_stack([1 - y * 0.8 - 0.1, y * 0.8 + 0.05, np.full(6, 0.05)])
    assert evaluate("multiclass", y, p).metrics["auc_ovr"] == pytest.approx(1.0)


def test_preset_best_fills_the_search_and_the_budget() -> None:
    base = {"data": {"path": "d", "label": "y"}}
    cfg = load_config(raw={**base, "train": {"preset": "best"}})
    assert cfg.tune.enabled and cfg.tune.scheduler == "asha" and cfg.tune.time_budget_s == 240
    assert {"eta", "max_depth", "min_child_weight", "subsample", "colsample_bytree", "lambda"} == set(
        cfg.tune.search_space
    )
    own = load_config(raw={**base, "train": {"preset": "best"}, "tune": {"time_budget_s": 30, "num_samples": 4}})
    assert (own.tune.time_budget_s, own.tune.num_samples) == (30, 4)
    assert load_config(raw=cfg.model_dump(mode="json")).tune == cfg.tune  # the resolved config round-trips
    with pytest.raises(ConfigError, match="train.preset best searches XGBoost"):
        load_config(raw={**base, "train": {"preset": "best", "model": "random_forest"}})
    assert not load_config(raw=base).tune.enabled


def test_timestamps_still_parse_from_datetimes_in_requests(column_stats) -> None:
    table = pa.table({"at": pa.array([dt.datetime(2020, 1, 2, 3)] * 20), "y": [True, False] * 10})
    contract = _contract(column_stats, table, "y", batches=1)
    assert contract.feature("at").kind == "timestamp" and contract.feature("at").format is None
    parsed = RequestParser(contract).parse_records([{"at": "2020-01-02T03:00:00"}])
    assert Preprocessor.fit(contract).transform_features(parsed)[0, 0] == 2020


def _high_card_table(n: int = 6000, levels: int = 600) -> pa.Table:
    code = rng.integers(0, levels, n)
    effect = np.random.default_rng(1).normal(0, 2, levels)
    y = rng.random(n) < 1 / (1 + np.exp(-effect[code]))
    return pa.table({"shop": [f"s{c}" for c in code], "x": rng.normal(size=n), "y": y})


def test_target_encoding_is_out_of_fold_on_train_rows_and_full_elsewhere(column_stats) -> None:
    from raypipe import target_encoding as te

    table = _high_card_table()
    contract = _contract(column_stats, table, "y", batches=1)
    prep = Preprocessor.fit(contract, native_max_levels=512)
    levels = contract.feature("shop").categories
    assert len(levels) > 512 and len(prep.columns[0].categories) == 512  # native codes capped...
    acc = te.partial(table, {"shop": levels}, prep.encode_label, 1, te.fold_of(table, ["shop", "x", "y"], 0))
    prep = prep.with_targets(te.finish(acc, {"shop": levels}), ["shop", "x", "y"], 0)
    assert prep.feature_names == ["shop__freq", "shop__te", "x"] and prep.feature_types == ["q", "q", "q"]
    full, oof = prep.transform_features(table), prep.transform_features(table, out_of_fold=True)
    y = table.column("y").to_numpy(zero_copy_only=False).astype(float)
    folds = te.fold_of(table, ["shop", "x", "y"], 0)
    # By hand for one row: its level's label mean without its own fold's rows, smoothed to the prior.
    i = 17
    same = (np.asarray(table.column("shop").to_pylist()) == table.column("shop")[i].as_py()) & (folds != folds[i])
    want = (y[same].sum() + te.SMOOTHING * y.mean()) / (same.sum() + te.SMOOTHING)
    assert oof[i, 1] == pytest.approx(want, rel=1e-5)
    assert full[i, 0] == (np.asarray(table.column("shop").to_pylist()) == table.column("shop")[i].as_py()).sum()
    # Out of fold differs from the full encoding (the row's own label is not in it)...
    assert not np.allclose(oof[:, 1], full[:, 1])
    # ...and the encoding carries the signal: AUC of the OOF column alone.
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, oof[:, 1]) > 0.7
    # Unseen levels get the prior; the encoding survives a save and load (JSON).
    unseen = prep.transform_features(pa.table({"shop": ["never"], "x": [0.0], "y": [True]}))
    assert unseen[0, 0] == 0 and unseen[0, 1] == pytest.approx(y.mean(), rel=1e-5)
    again = Preprocessor.from_dict(__import__("json").loads(__import__("json").dumps(prep.to_dict())))
    np.testing.assert_array_equal(again.transform_features(table), full)


def test_multiclass_targets_have_one_column_per_class(column_stats) -> None:
    from raypipe import target_encoding as te

    table = _high_card_table().drop_columns(["y"]).append_column("y", pa.array(rng.choice(["a", "b", "c"], 6000)))
    contract = _contract(column_stats, table, "y", batches=1)
    prep = Preprocessor.fit(contract)
    levels = {"shop": contract.feature("shop").categories}
    acc = te.partial(table, levels, prep.encode_label, 3, te.fold_of(table, ["x"], 0))
    prep = prep.with_targets(te.finish(acc, levels), ["x"], 0)
    assert prep.feature_names[:4] == ["shop__freq", "shop__te=a", "shop__te=b", "shop__te=c"]
    X = prep.transform_features(table)
    np.testing.assert_allclose(X[:, 1:4].sum(axis=1), 1.0, rtol=1e-5)  # class means sum to one
