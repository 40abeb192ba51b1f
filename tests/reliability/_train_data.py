"""Small, deterministic training data as the pipeline hands it to training: split files (one
machine) or materialised Ray Datasets (a cluster without a shared disk)."""

from __future__ import annotations

import numpy as np


def arrays(rows: int, features: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features)).astype(np.float32)
    logit = X[:, 0] * 1.5 - X[:, 1] + np.sin(3 * X[:, 2]) + 0.5 * X[:, 3] * X[:, 4]
    y = (logit + rng.normal(scale=0.8, size=rows) > 0).astype(np.float32)
    return X, y


def dataset(X: np.ndarray, y: np.ndarray, blocks: int = 4):
    """``{"X": tensor, "y": float}`` rows, as ``Preprocessor.transform_block`` makes them."""
    import ray.data

    from raypipe.features import _arrow_block

    parts = np.array_split(np.arange(len(y)), blocks)
    return ray.data.from_arrow([_arrow_block({"X": X[i], "y": y[i]}) for i in parts]).materialize()


def split_files(folder, X: np.ndarray, y: np.ndarray, blocks: int = 4):
    """The same rows as :func:`dataset`, as ``splitfiles.write_splits`` leaves them."""
    from raypipe.data.splitfiles import SplitFiles, write_file

    folder.mkdir(parents=True)
    files = [write_file(folder, {"X": X[i], "y": y[i]}) for i in np.array_split(np.arange(len(y)), blocks)]
    return SplitFiles(folder, sorted(files))
