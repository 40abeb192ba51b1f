"""What a Train worker feeds XGBoost: its share of the rows, one file or block at a time."""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost

from raypipe.data.splitfiles import read_file


class BatchIter(xgboost.DataIter):
    """Feeds NumPy batches to ``QuantileDMatrix`` one at a time, without concatenating them.

    ``source`` is a list of batches already in memory, of split-file slices ``(path, start, stop)``
    (memory-mapped), or of Ray Data blocks ``(block_ref, (start, end) or None)`` (zero-copy from
    the object store). A file or block is opened when XGBoost asks for it and dropped once XGBoost
    moves on, so the worker never maps its whole shard, and a restarted worker can read it again.
    """

    def __init__(self, source: list, feature_names: list[str], feature_types: list[str]) -> None:
        self._source = source
        self._names = feature_names
        self._types = feature_types
        self._i = 0
        super().__init__(release_data=True)

    def next(self, input_data) -> bool:
        while self._i < len(self._source):
            b = self._source[self._i]
            self._i += 1
            if isinstance(b, tuple) and isinstance(b[0], str):
                path, start, stop = b
                b = {k: v[start:stop] for k, v in read_file(path).items()}
            elif isinstance(b, tuple):
                b = _read_block(*b)
            if len(b["y"]):
                input_data(
                    data=b["X"], label=b["y"], weight=b.get("w"), feature_names=self._names, feature_types=self._types
                )
                return True
        return False

    def reset(self) -> None:
        self._i = 0


def collect_shard(shard) -> list[dict[str, np.ndarray]]:
    # Whole blocks (batch_size=None): re-batching to a fixed size would copy every row once more.
    return [b for b in shard.iter_batches(batch_size=None, batch_format="numpy") if len(b["y"])]


def block_shards(ds, num_workers: int) -> list[list[tuple[Any, tuple[int, int] | None]]] | None:
    """The dataset's blocks dealt to ``num_workers`` (largest first, to the least-loaded worker).

    Returns ``[[(block_ref, (start, end) or None), ...] per worker]``, or None when a worker would
    get no rows (then the caller lets Ray Train shard the dataset by rows).
    """
    entries = []
    for bundle in ds.iter_internal_ref_bundles():
        for entry, sl in zip(bundle.blocks, bundle.slices):
            rows = entry.metadata.num_rows if sl is None else sl.num_rows
            if rows:
                entries.append((rows, entry.ref, None if sl is None else (sl.start_offset, sl.end_offset)))
    shards: list[list[tuple[Any, tuple[int, int] | None]]] = [[] for _ in range(num_workers)]
    loads = [0] * num_workers
    for rows, ref, sl in sorted(entries, key=lambda e: -e[0]):
        i = loads.index(min(loads))
        shards[i].append((ref, sl))
        loads[i] += rows
    return shards if all(loads) else None


def _read_block(ref, sl: tuple[int, int] | None) -> dict[str, np.ndarray]:
    """A block -> NumPy batch; zero-copy views of the object store where the layout allows."""
    import ray
    from ray.data.block import BlockAccessor

    block = ray.get(ref)
    if sl is not None:
        block = block.slice(sl[0], sl[1] - sl[0])
    return BlockAccessor.for_block(block).to_batch_format("numpy")
