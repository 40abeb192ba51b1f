"""Deterministic train/valid/test assignment by a content hash.

A row's split depends only on its key values and the seed, never on file
order, block boundaries or cluster size, so reruns and repartitioned copies of
the data agree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.config import SplitConfig

SPLIT_COLUMN = "__split"
TRAIN, VALID, TEST = 0, 1, 2

_MIX = np.uint64(0x9E3779B97F4A7C15)
_NULL_HASH = np.uint64(0xC2B2AE3D27D4EB4F)
# What pandas' hash_array gives a null (None) in an object array.
_OBJECT_NULL_HASH = pd.util.hash_array(np.array([None], dtype=object), categorize=False)[0]


def _hash_strings(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Hash each distinct string once, then gather per row.

    Siphashing every row's Python string is most of a split's cost on string keys; the hash is
    per value, so hashing the dictionary and indexing it gives the very same uint64s.
    """
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    parts = [np.empty(0, dtype=np.uint64)]
    for chunk in chunks:
        if not pa.types.is_dictionary(chunk.type):
            head = chunk.slice(0, 1024)
            if len(pc.unique(head)) > len(head) // 2:  # mostly distinct (ids): encoding would not pay
                parts.append(pd.util.hash_array(chunk.to_numpy(zero_copy_only=False), categorize=False))
                continue
            chunk = pc.dictionary_encode(chunk)
        values = pd.util.hash_array(chunk.dictionary.to_numpy(zero_copy_only=False), categorize=False)
        table = np.append(values, _OBJECT_NULL_HASH)
        parts.append(table[pc.fill_null(chunk.indices.cast(pa.int64()), len(table) - 1).to_numpy()])
    return np.concatenate(parts)


def hash_column(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A stable uint64 per value (nulls hash alike), the same in every process and batch."""
    value_type = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if pa.types.is_string(value_type) or pa.types.is_large_string(value_type):
        return _hash_strings(col)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if col.null_count and (pa.types.is_integer(col.type) or pa.types.is_boolean(col.type)):
        # to_numpy makes a nullable int/bool batch float/object, which hashes differently from the
        # same values in a batch without nulls: hash the values in their own dtype, nulls apart.
        nulls = col.is_null().to_numpy(zero_copy_only=False)
        filled = col.fill_null(False if pa.types.is_boolean(col.type) else 0)
        h = pd.util.hash_array(filled.to_numpy(zero_copy_only=False), categorize=False)
        h[nulls] = _NULL_HASH
        return h
    # pandas' hash_array is vectorised C (siphash for objects) and stable across processes.
    values = col.to_numpy(zero_copy_only=False)
    return pd.util.hash_array(values, categorize=False)


def row_hash(table: pa.Table, key: list[str], seed: int) -> np.ndarray:
    """A uint64 per row from the key columns and the seed."""
    with np.errstate(over="ignore"):  # multiplication mod 2**64 is the mixing
        h = np.full(table.num_rows, np.uint64(seed) * _MIX + np.uint64(1), dtype=np.uint64)
        for name in key:
            h = (h ^ hash_column(table.column(name))) * _MIX
            h ^= h >> np.uint64(31)
    return h


def assign(table: pa.Table, key: list[str], cfg: SplitConfig) -> np.ndarray:
    """Split code per row: 0 train, 1 valid, 2 test."""
    if cfg.method == "time":
        return _by_time(table.column(cfg.time_column), cfg)
    u = (row_hash(table, key, cfg.seed) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    codes = np.full(table.num_rows, TEST, dtype=np.int8)
    codes[u < cfg.train + cfg.valid] = VALID
    codes[u < cfg.train] = TRAIN
    return codes


def _by_time(col: pa.ChunkedArray, cfg: SplitConfig) -> np.ndarray:
    """Before ``valid_after``: train; before ``test_after``: valid; else test (nulls: train)."""
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        col = pc.strptime(col, format="%Y-%m-%dT%H:%M:%S", unit="us", error_is_null=True)
    elif pa.types.is_date(t):
        col = pc.cast(col, pa.timestamp("us"))
    elif not pa.types.is_timestamp(t):
        from raypipe.errors import SchemaError

        raise SchemaError(
            f"data.split.time_column '{cfg.time_column}' must be a timestamp, date or ISO string, got {t}"
        )
    if getattr(col.type, "tz", None):
        col = pc.cast(col, pa.timestamp(col.type.unit))  # compare wall-clock times
    micros = pc.cast(pc.cast(col, pa.timestamp("us")), pa.int64()).to_numpy(zero_copy_only=False)
    micros = np.nan_to_num(np.asarray(micros, dtype=np.float64), nan=-np.inf)

    def _at(text: str) -> float:
        return float(np.datetime64(text, "us").astype(np.int64))

    codes = np.full(len(micros), TRAIN, dtype=np.int8)
    if cfg.valid_after:
        codes[micros >= _at(cfg.valid_after)] = VALID
    codes[micros >= _at(cfg.test_after)] = TEST
    return codes


def add_split_column(batch: pa.Table, key: list[str], cfg: SplitConfig) -> pa.Table:
    """Ray Data map step: append the split code column."""
    return batch.append_column(SPLIT_COLUMN, pa.array(assign(batch, key, cfg)))
