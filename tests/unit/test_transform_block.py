"""Preprocessor.transform_block: the very Arrow block Ray Data would build from transform_batch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raypipe.features import Preprocessor, _arrow_block


def _table(n: int) -> pa.Table:
    rng = np.random.default_rng(n)
    num = rng.normal(size=n)
    return pa.table(
        {
            "num": pa.array(num, mask=num > 1.5),
            "cat": pa.array(rng.choice(["a", "b", "c"], n), mask=rng.random(n) < 0.1),
            "wt": rng.random(n),
            "label": pa.array(rng.choice(["yes", "no"], n), mask=rng.random(n) < 0.05),
            "__split": pa.array(rng.integers(0, 3, n).astype(np.int8)),
        }
    )


def _as_ray_builds_it(out: dict[str, np.ndarray]) -> pa.Table:
    from ray.data.block import BlockAccessor

    return BlockAccessor.batch_to_block(dict(out))


def _assert_same_block(ours: pa.Table, ray_s: pa.Table) -> None:
    from ray.data.block import BlockAccessor

    assert ours.schema == ray_s.schema
    a = BlockAccessor.for_block(ours).to_batch_format("numpy")
    b = BlockAccessor.for_block(ray_s).to_batch_format("numpy")
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])  # NaN-aware


@pytest.mark.parametrize("n", [1, 7, 5000])
def test_block_matches_ray_data_conversion(contract_for, n: int) -> None:
    train = _table(200)
    prep = Preprocessor.fit(contract_for(train, "label", data={"weight_column": "wt"}))
    table = _table(n)
    ours = prep.transform_block(table, passthrough=("__split",))
    _assert_same_block(ours, _as_ray_builds_it(prep.transform_batch(table, passthrough=("__split",))))
    assert ours.column_names == ["X", "y", "w", "__split"]


@pytest.mark.parametrize(
    "out",
    [
        {"X": np.zeros((0, 3), np.float32), "y": np.zeros(0, np.float32)},  # every row unlabelled
        {"X": np.ones((4, 2), np.float32), "y": np.zeros(4, np.float32), "s": np.array(list("abcd"), object)},
        {"X": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(4, 3)), "b": np.array([1, 0, 1, 1], bool)},
    ],
)
def test_empty_object_fortran_and_bool_columns_match_ray(out: dict[str, np.ndarray]) -> None:
    _assert_same_block(_arrow_block(dict(out)), _as_ray_builds_it(out))


@pytest.mark.parametrize("classes", [["false", "true"], ["true", "false"], ["false", "true", "x"], ["true"], []])
@pytest.mark.parametrize("n", [0, 1, 1000])
def test_boolean_label_codes_match_the_string_route(classes: list[str], n: int) -> None:
    import pyarrow.compute as pc

    from raypipe.data.schema import LabelSpec
    from raypipe.features import _label_strings, _to_float

    rng = np.random.default_rng(n)
    col = pa.array(rng.random(n) < 0.3, mask=rng.random(n) < 0.1)
    prep = Preprocessor(columns=[], label=LabelSpec(name="label", task="binary", dtype="bool", classes=classes))
    expected = _to_float(pc.index_in(_label_strings(col), value_set=pa.array(classes, pa.string())))
    for table in (pa.table({"label": col}), pa.Table.from_batches([pa.record_batch({"label": col})] * 2).slice(0, n)):
        y = prep.encode_label(table)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, expected)
