"""The deterministic hash split: a row's split depends on its key values and the seed only."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from raypipe.config import SplitConfig
from raypipe.data.split import SPLIT_COLUMN, TEST, TRAIN, VALID, add_split_column, assign

N = 100_000


def _table(n: int, seed: int = 0, null_every: int = 0) -> pa.Table:
    """Unique rows (a row number column) plus typed columns; optional nulls in every typed column."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, bool)
    if null_every:
        mask[::null_every] = True
    start = dt.datetime(2024, 1, 1)
    return pa.table(
        {
            "row": np.arange(n, dtype=np.int64),
            "i": pa.array(rng.integers(-50, 50, n), mask=mask),
            "f": pa.array(rng.normal(size=n), mask=mask),
            "s": pa.array(rng.choice(["JFK", "EWR", "LGA"], n), mask=mask),
            "b": pa.array(rng.random(n) < 0.5, mask=mask),
            "t": pa.array([start + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 10**6, n)], mask=mask),
            "d": pa.array(rng.choice(["x", "y"], n)).dictionary_encode(),
        }
    )


def _codes_by_row(table: pa.Table, key: list[str], cfg: SplitConfig, chunk: int | None = None) -> np.ndarray:
    """Split codes indexed by the `row` column, computed batch by batch like Ray Data does."""
    chunk = chunk or table.num_rows
    out = np.full(table.num_rows, -1, dtype=np.int8)
    for start in range(0, table.num_rows, chunk):
        batch = table.slice(start, chunk)
        out[batch.column("row").to_numpy()] = assign(batch, key, cfg)
    assert (out >= 0).all()
    return out


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return _table(20_000)


def test_same_row_same_split_regardless_of_order_and_batching(table: pa.Table) -> None:
    cfg = SplitConfig()
    key = ["row", "i", "f", "s", "b", "t", "d"]
    reference = _codes_by_row(table, key, cfg)
    shuffled = table.take(np.random.default_rng(1).permutation(table.num_rows))
    for chunk in (None, 1, 7, 1000, 4096):
        np.testing.assert_array_equal(_codes_by_row(shuffled, key, cfg, chunk), reference)
    # The same rows arriving as a multi-chunk (e.g. concatenated files) table.
    multi = pa.concat_tables([shuffled.slice(0, 5000), shuffled.slice(5000)])
    assert multi.column("row").num_chunks == 2
    np.testing.assert_array_equal(_codes_by_row(multi, key, cfg), reference)


@pytest.mark.parametrize("column", ["i", "f", "s", "b", "t"])
def test_nullable_key_columns_split_identically_in_every_batching(column: str) -> None:
    # Some batches hold nulls in the key column and some do not: a row's split must not
    # depend on whether its batch happened to contain a null elsewhere.
    table = _table(10_000, null_every=97)
    cfg = SplitConfig()
    key = [column, "row"]
    reference = _codes_by_row(table, key, cfg)
    for chunk in (50, 333):
        np.testing.assert_array_equal(_codes_by_row(table, key, cfg, chunk), reference)


def test_fractions_are_approximately_right_on_100k_rows() -> None:
    table = pa.table({"row": np.arange(N, dtype=np.int64)})
    for train, valid, test in ((0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.9, 0.0, 0.1)):
        codes = assign(table, ["row"], SplitConfig(train=train, valid=valid, test=test))
        # Binomial standard deviation at 100k rows is < 0.0016; 0.01 is > 6 sigma.
        assert abs(np.mean(codes == TRAIN) - train) < 0.01
        assert abs(np.mean(codes == VALID) - valid) < 0.01
        assert abs(np.mean(codes == TEST) - test) < 0.01
        assert set(np.unique(codes)) <= {TRAIN, VALID, TEST}


def test_seed_changes_the_assignment_but_not_the_fractions() -> None:
    table = pa.table({"row": np.arange(N, dtype=np.int64)})
    a = assign(table, ["row"], SplitConfig(seed=0))
    b = assign(table, ["row"], SplitConfig(seed=1))
    again = assign(table, ["row"], SplitConfig(seed=0))
    np.testing.assert_array_equal(a, again)
    # Independent assignments agree on about 0.8^2 + 0.1^2 + 0.1^2 = 66% of rows.
    assert 0.6 < np.mean(a == b) < 0.72
    assert abs(np.mean(b == TRAIN) - 0.8) < 0.01


def test_key_columns_decide_and_other_columns_do_not() -> None:
    table = _table(5000)
    cfg = SplitConfig()
    by_row = assign(table, ["row"], cfg)
    # Changing a non-key column does not move any row.
    changed = table.set_column(table.schema.get_field_index("f"), "f", pa.array(np.zeros(table.num_rows)))
    np.testing.assert_array_equal(assign(changed, ["row"], cfg), by_row)
    # Rows with equal key values always share a split (e.g. every flight of one tail number).
    by_s = assign(table, ["s"], cfg)
    for value in ("JFK", "EWR", "LGA"):
        rows = np.asarray(table.column("s").to_pylist()) == value
        assert len(np.unique(by_s[rows])) == 1


def test_dictionary_and_plain_strings_split_alike() -> None:
    table = _table(5000)
    plain = table.set_column(table.schema.get_field_index("d"), "d", table.column("d").cast(pa.string()))
    np.testing.assert_array_equal(
        assign(table, ["d", "row"], SplitConfig()), assign(plain, ["d", "row"], SplitConfig())
    )


def test_add_split_column_appends_codes() -> None:
    table = _table(1000)
    out = add_split_column(table, ["row"], SplitConfig())
    assert out.column_names == [*table.column_names, SPLIT_COLUMN]
    np.testing.assert_array_equal(out.column(SPLIT_COLUMN).to_numpy(), assign(table, ["row"], SplitConfig()))
