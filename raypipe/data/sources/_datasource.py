"""A Ray Data datasource over plain read functions: one read task per function."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask


class ArrowReads(Datasource):
    """Each of ``reads`` (no arguments, yields Arrow tables of ``schema``) is one read task."""

    def __init__(self, reads: list[Callable[[], Iterator[pa.Table]]], schema: pa.Schema, name: str) -> None:
        super().__init__()
        self._reads, self._schema, self._name = reads, schema, name

    def get_name(self) -> str:
        return self._name

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        meta = BlockMetadata(num_rows=None, size_bytes=None, input_files=None, exec_stats=None)
        return [ReadTask(read, meta, self._schema, per_task_row_limit) for read in self._reads]
