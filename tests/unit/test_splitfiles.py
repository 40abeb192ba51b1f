"""Split files: round trip, sharding by rows, moving into a cache entry, cleaning up after killed runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raypipe.data.splitfiles import SplitFiles, read_file, staging_folder, write_file
from raypipe.runtime.orphans import host_tag


def _batch(rows: int, seed: int = 0, weights: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 5)).astype(np.float32)
    X[::7, 2] = np.nan
    out = {"X": X, "y": rng.integers(0, 3, rows).astype(np.float32)}
    if weights:
        out["w"] = rng.random(rows).astype(np.float32)
    return out


def test_a_file_reads_back_the_same_columns_mapped_not_copied(tmp_path: Path) -> None:
    batch = _batch(1000, weights=True)
    name, rows = write_file(tmp_path, batch)
    assert rows == 1000 and name.endswith(".arrow")
    got = read_file(str(tmp_path / name))
    assert set(got) == {"X", "y", "w"} and got["X"].shape == (1000, 5)
    for k in batch:
        np.testing.assert_array_equal(got[k], batch[k])
    assert not got["X"].flags.owndata  # a view of the mapped file


def test_file_names_depend_on_the_rows_not_their_order(tmp_path: Path) -> None:
    batch = _batch(500)
    perm = np.random.default_rng(1).permutation(500)
    a, _ = write_file(tmp_path, batch)
    b, _ = write_file(tmp_path, {k: v[perm] for k, v in batch.items()})
    c, _ = write_file(tmp_path, _batch(500, seed=2))
    assert a.split("-")[0] == b.split("-")[0] != c.split("-")[0]
    assert a != b  # a suffix keeps equal contents apart


@pytest.mark.parametrize(("sizes", "workers"), [([100, 50, 7], 2), ([10], 3), ([40, 40, 40, 40], 4), ([5, 0, 5], 1)])
def test_shards_cover_every_row_once_in_equal_parts(tmp_path: Path, sizes: list[int], workers: int) -> None:
    files = [write_file(tmp_path, _batch(n, seed=i)) for i, n in enumerate(sizes) if n]
    part = SplitFiles(tmp_path, sorted(files))
    shards = part.shards(workers)
    assert len(shards) == workers
    counts = [sum(stop - start for _, start, stop in shard) for shard in shards]
    assert sum(counts) == sum(sizes) and max(counts) - min(counts) <= 1
    seen = np.concatenate([read_file(p)["X"][a:b] for shard in shards for p, a, b in shard])
    whole = np.concatenate([b["X"] for b in part.iter_batches()])
    np.testing.assert_array_equal(seen, whole)


def test_iter_batches_slices_files_to_the_batch_size(tmp_path: Path) -> None:
    part = SplitFiles(tmp_path, sorted([write_file(tmp_path, _batch(250)), write_file(tmp_path, _batch(100, 1))]))
    sizes = [len(b["y"]) for b in part.iter_batches(batch_size=64)]
    assert sum(sizes) == part.count() == 350 and max(sizes) == 64
    with pytest.raises(ValueError, match="NumPy"):
        next(part.iter_batches(batch_format="pandas"))


def test_moved_files_are_found_by_their_index_and_a_missing_one_is_named(tmp_path: Path) -> None:
    src = tmp_path / "stage"
    src.mkdir()
    part = SplitFiles(src, sorted([write_file(src, _batch(30)), write_file(src, _batch(20, 1))]))
    before = np.concatenate([b["X"] for b in part.iter_batches()])
    part.move_to(tmp_path / "entry" / "train")
    assert part.folder == tmp_path / "entry" / "train" and not list(src.iterdir())
    loaded = SplitFiles.load(tmp_path / "entry" / "train")
    assert loaded.files == part.files
    np.testing.assert_array_equal(np.concatenate([b["X"] for b in loaded.iter_batches()]), before)
    gone = part.files[0][0]
    (part.folder / gone).unlink()
    with pytest.raises(FileNotFoundError, match=gone):
        SplitFiles.load(part.folder)


def test_staging_removes_folders_of_dead_runs_only(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / f".splits-{host_tag()}-{int(dead.stdout)}-abcd"
    left.mkdir()
    (left / "big.arrow").write_bytes(b"x")
    mine = staging_folder(tmp_path)
    ours = staging_folder(tmp_path)  # another of this live process's folders is kept
    assert not left.exists() and mine.is_dir() and ours.is_dir() and mine != ours
