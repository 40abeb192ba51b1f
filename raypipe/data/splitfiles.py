"""Model-input splits as Arrow IPC files on the local disk, read back through a memory map.

Why files and not the object store: a materialised split stays resident in the object store for
the whole fit, and the store never hands freed pages back to the OS, so the fit's peak held every
split once in the store plus XGBoost's own matrices (measured: 2.7x the feature size at 8 M
rows). A memory-mapped file costs the page cache instead, which the kernel can drop, and a
restarted Train worker reads its files again. One pass over the source writes all three splits:
each Ray Data task transforms its block and writes one file per split, so no block of model
inputs ever enters the object store.

Used where every node sees the same disk (one machine, or ``cluster/local.sh``); elsewhere the
pipeline keeps materialised Ray Datasets (:func:`raypipe.steps.materialize_splits`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raypipe.runtime.orphans import host_tag, owner_gone

SUFFIX = ".arrow"
INDEX = "files.json"


@dataclass
class SplitFiles:
    """One split: ``files`` are ``(name, rows)`` inside ``folder``, in a deterministic order.

    Quacks like the parts of a materialised Ray Dataset that the trainers use: ``count()`` and
    ``iter_batches(batch_format="numpy")``.
    """

    folder: Path
    files: list[tuple[str, int]] = field(default_factory=list)

    def count(self) -> int:
        return sum(rows for _, rows in self.files)

    def paths(self) -> list[str]:
        return [str(self.folder / name) for name, _ in self.files]

    def iter_batches(
        self, batch_size: int | None = None, batch_format: str = "numpy"
    ) -> Iterator[dict[str, np.ndarray]]:
        """NumPy batches, one file (or ``batch_size`` rows of one) at a time, zero-copy from the map."""
        if batch_format != "numpy":
            raise ValueError(f"split files yield NumPy batches only, not {batch_format!r}")
        for path in self.paths():
            batch = read_file(path)
            n = len(batch["y"])
            step = batch_size or n or 1
            for start in range(0, n, step):
                yield {k: v[start : start + step] for k, v in batch.items()}

    def shards(self, n: int) -> list[list[tuple[str, int, int]]]:
        """The rows cut into ``n`` contiguous, equal parts: ``[[(path, start, stop), ...] per worker]``."""
        total = self.count()
        bounds = [total * i // n for i in range(n + 1)]
        shards: list[list[tuple[str, int, int]]] = [[] for _ in range(n)]
        offset = 0
        for path, (_, rows) in zip(self.paths(), self.files):
            for w in range(n):
                lo, hi = max(bounds[w], offset), min(bounds[w + 1], offset + rows)
                if lo < hi:
                    shards[w].append((path, lo - offset, hi - offset))
            offset += rows
        return shards

    def move_to(self, folder: Path) -> None:
        """Move the files (and an index of them) into ``folder``; this object follows them."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, _ in self.files:
            os.replace(self.folder / name, folder / name)
        (folder / INDEX).write_text(json.dumps(self.files))
        self.folder = folder

    @classmethod
    def load(cls, folder: Path) -> SplitFiles:
        files = [(str(n), int(r)) for n, r in json.loads((folder / INDEX).read_text())]
        missing = [n for n, _ in files if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} split file(s) missing under {folder}, e.g. {missing[0]}")
        return cls(folder, files)


def read_file(path: str) -> dict[str, np.ndarray]:
    """One split file as NumPy columns, backed by a memory map (no copy; 2-D for ``X``)."""
    with pa.ipc.open_file(pa.memory_map(path, "r")) as reader:
        table = reader.read_all()
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()  # one record batch per file: no copy
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
            out[name] = col.flatten().to_numpy().reshape(-1, width)
        else:
            out[name] = col.to_numpy()
    return out


def write_file(folder: Path, batch: dict[str, np.ndarray]) -> tuple[str, int]:
    """Write NumPy columns (2-D ones as fixed-size lists) as one Arrow IPC file; returns (name, rows)."""
    columns = {}
    for name, values in batch.items():
        values = np.ascontiguousarray(values)
        if values.ndim == 2:
            columns[name] = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
        else:
            columns[name] = pa.array(values)
    table = pa.table(columns)
    # Named by content (row count and column sums: Ray Data may concatenate small blocks in any
    # order), so the file order, and with it the fit, does not depend on which task ran first.
    h = hashlib.sha1(str(table.num_rows).encode())
    for name in sorted(batch):
        values = batch[name]
        if values.dtype.kind in "biuf":
            sums = np.nansum(values.reshape(len(values), -1), axis=0, dtype=np.float64)
            h.update(" ".join(f"{v:.10g}" for v in sums).encode())  # rounded: summation order varies
    name = f"{h.hexdigest()[:20]}-{uuid.uuid4().hex[:6]}{SUFFIX}"
    with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    return name, table.num_rows


def _write_block(block: pa.Table, *, prep, split_column: str, names: tuple[str, ...], folder: str) -> pa.Table:
    """Runs in a Ray Data task: the block's rows of each split, transformed, one file per split."""
    import pyarrow.compute as pc

    split = block.column(split_column)
    out: dict[str, list[Any]] = {"split": [], "file": [], "rows": []}
    for i, name in enumerate(names):
        rows = block.filter(pc.equal(split, i))
        if not rows.num_rows:
            continue
        # Train rows get out-of-fold target encodings; valid and test rows those of all train rows.
        batch = prep.transform_batch(rows, out_of_fold=name == "train")
        if not min((len(v) for v in batch.values()), default=0):
            continue  # every row of this split had a null label (a whole file can: files are blocks)
        file, n = write_file(Path(folder) / name, batch)
        out["split"].append(name)
        out["file"].append(file)
        out["rows"].append(n)
    return pa.table(out, schema=pa.schema([("split", pa.string()), ("file", pa.string()), ("rows", pa.int64())]))


def write_splits(split_ds, prep, split_column: str, names: tuple[str, ...], folder: Path) -> dict[str, SplitFiles]:
    """Transform every row of ``split_ds`` and write it to ``folder/<split>/``: one pass, one file per
    block and split. Returns ``{split: SplitFiles}`` (files sorted by name)."""
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
    written = split_ds.map_batches(
        _write_block,
        batch_format="pyarrow",
        batch_size=None,
        fn_kwargs={"prep": prep, "split_column": split_column, "names": names, "folder": str(folder)},
    ).take_all()
    parts = {name: SplitFiles(folder / name) for name in names}
    for row in sorted(written, key=lambda r: r["file"]):
        parts[row["split"]].files.append((row["file"], int(row["rows"])))
    return parts


def staging_folder(root: Path) -> Path:
    """A fresh folder for ``write_splits`` under ``root`` (on the same file system as the cache, so
    moving the files into a cache entry is a rename). Folders left by killed runs (their process is
    gone) are removed first: they hold a full copy of the model inputs."""
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob(".splits-*"):
        if owner_gone(old.name):
            remove(old)
    folder = root / f".splits-{host_tag()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
