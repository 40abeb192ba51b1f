"""A Ray Data datasource that reads whole Parquet files per task, with no planning pass.

Ray Data's Parquet readers plan each read on the driver: V2 starts footer-reading
actors, V1 samples files with remote tasks to estimate sizes. On a small node
that costs 0.1-0.7 s per read, every read (measured by benchmarks/bench_ingest.py),
while raypipe already knows the files, their sizes and the schema from
``ingest.discover``. So each read task gets whole files, balanced by bytes, and
casts each file to the discovered schema, hive partition columns added typed.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

# Decoded Arrow is about this many times the Parquet bytes (a planning estimate only).
_DECODED_PER_FILE_BYTE = 3


class WholeFileParquet(Datasource):
    """Read ``files`` (cast to ``schema``) in ``tasks`` whole-file groups of about equal bytes.

    Args:
        files: file paths on ``filesystem``.
        sizes: their sizes in bytes (balancing and estimates).
        filesystem: the pyarrow filesystem.
        schema: the output schema, partition columns included.
        partitions: per file, the hive partition values (column -> value), typed as in ``schema``.
        tasks: number of read tasks.
    """

    def __init__(
        self,
        files: tuple[str, ...],
        sizes: tuple[int, ...],
        filesystem: pafs.FileSystem,
        schema: pa.Schema,
        partitions: list[dict[str, object]],
        tasks: int,
    ) -> None:
        super().__init__()
        self._files, self._sizes, self._fs = files, sizes, filesystem
        self._schema, self._partitions, self._tasks = schema, partitions, max(1, tasks)

    def get_name(self) -> str:
        return "ReadParquet"

    def estimate_inmemory_data_size(self) -> int:
        return sum(self._sizes) * _DECODED_PER_FILE_BYTE

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        # Largest file first onto the lightest group: balanced bytes per task.
        groups: list[tuple[int, int, list[int]]] = [(0, g, []) for g in range(min(self._tasks, len(self._files)))]
        heapq.heapify(groups)
        for i in sorted(range(len(self._files)), key=lambda i: -self._sizes[i]):
            load, g, members = heapq.heappop(groups)
            members.append(i)
            heapq.heappush(groups, (load + self._sizes[i], g, members))
        tasks = []
        for _, _, members in sorted(groups, key=lambda x: x[1]):
            members.sort()
            files = [self._files[i] for i in members]
            parts = [self._partitions[i] for i in members]
            meta = BlockMetadata(
                num_rows=None,
                size_bytes=sum(self._sizes[i] for i in members) * _DECODED_PER_FILE_BYTE,
                input_files=files,
                exec_stats=None,
            )
            read = functools.partial(_read_files, files, parts, self._fs, self._schema)
            tasks.append(ReadTask(read, meta, self._schema, per_task_row_limit))
        return tasks


def _read_files(
    files: list[str], partitions: list[dict[str, object]], fs: pafs.FileSystem, schema: pa.Schema
) -> Iterator[pa.Table]:
    for path, values in zip(files, partitions):
        file_fields = [f for f in schema if f.name not in values]
        try:
            table = pq.read_table(path, filesystem=fs, columns=[f.name for f in file_fields])
            table = table.cast(pa.schema(file_fields))  # safe: an overflowing value raises
        except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as e:
            from raypipe.errors import DataError

            raise DataError(f"cannot read Parquet file '{path}': {e}", path=path) from None
        for idx, field in enumerate(schema):  # in schema order, so each index exists when used
            if field.name in values:
                value = pa.scalar(values[field.name], field.type)
                table = table.add_column(idx, field, pa.repeat(value, table.num_rows))
        yield table
