"""Tables built to hold the traps a config that names only the data and the label must survive.

Each writes Parquet under ``out/<name>/`` (a few files) and returns ``(path, label)``. Seeded and
deterministic, so raypipe and the plain script read the very same rows.

- ``entity``: a ratings-style join; ``user_id`` and ``item_id`` repeat across rows and carry most of
  the signal (user and item biases), plus a unique ``rating_id`` that must still be dropped.
- ``highcard``: a string column with thousands of levels (a zip-code-like key) carrying signal.
- ``dates``: the signal sits in the month and weekday of a ``"01-Jan-1995"`` string column.
- ``rare``: a multiclass label where one class has only 3 rows.
- ``regression``: a numeric target with interactions and noise.
- ``imbalanced``: 2 % positives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def _write(out: Path, name: str, table: pa.Table, files: int = 4) -> Path:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-table.num_rows // files)
    for i in range(files):
        pq.write_table(table.slice(i * step, step), folder / f"part-{i}.parquet")
    return folder


def _noise(rng: np.random.Generator, n: int, k: int) -> dict[str, np.ndarray]:
    return {f"x{i}": rng.normal(size=n).astype(np.float32) for i in range(k)}


def entity(out: Path, n: int = 80_000, seed: int = 0) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    users, items = 3000, 800
    u_bias, i_bias = rng.normal(0, 1.2, users), rng.normal(0, 1.0, items)
    user = rng.integers(0, users, n)
    item = (rng.zipf(1.3, n) - 1) % items
    x = _noise(rng, n, 3)
    logit = u_bias[user] + i_bias[item] + 0.5 * x["x0"] - 0.3
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    table = pa.table(
        {
            "rating_id": np.arange(n, dtype=np.int64) * 7 + 1000,
            "user_id": (user + 1).astype(np.int64),
            "item_id": (item + 1).astype(np.int64),
            **x,
            "liked": y,
        }
    )
    return _write(out, "entity", table), "liked"


def highcard(out: Path, n: int = 80_000, seed: int = 1) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    levels = 4000
    effect = rng.normal(0, 1.0, levels)
    code = (rng.zipf(1.2, n) - 1) % levels
    x = _noise(rng, n, 4)
    logit = effect[code] + 0.8 * x["x0"] - 0.5 * x["x1"]
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    zips = np.array([f"Z{c:05d}" for c in range(levels)], dtype=object)
    table = pa.table({"zip": pa.array(zips[code]), **x, "churned": y})
    return _write(out, "highcard", table), "churned"


def dates(out: Path, n: int = 60_000, seed: int = 2) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    days = rng.integers(0, 3650, n)
    when = np.datetime64("1995-01-01") + days.astype("timedelta64[D]")
    month = when.astype("datetime64[M]").astype(int) % 12 + 1
    weekday = (days + 6) % 7  # 1995-01-01 was a Sunday
    x = _noise(rng, n, 3)
    logit = 1.5 * np.isin(month, (11, 12, 1)) - 1.2 * (weekday >= 5) + 0.5 * x["x0"]
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    text = [f"{d.item():%d-%b-%Y}" for d in when]
    table = pa.table({"opened": pa.array(text), **x, "converted": y})
    return _write(out, "dates", table), "converted"


def rare(out: Path, n: int = 30_000, seed: int = 3) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    x = _noise(rng, n, 5)
    score = x["x0"] + 0.5 * x["x1"]
    label = np.where(score < -0.5, "low", np.where(score > 0.7, "high", "mid")).astype(object)
    label[rng.choice(n, 3, replace=False)] = "unknown"  # a class too rare for every split
    table = pa.table({**x, "segment": pa.array(label)})
    return _write(out, "rare", table), "segment"


def regression(out: Path, n: int = 60_000, seed: int = 4) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    x = _noise(rng, n, 8)
    cat = rng.choice(np.array(["a", "b", "c", "d"], dtype=object), n)
    y = 2 * x["x0"] + np.sin(3 * x["x1"]) + x["x2"] * x["x3"] + (cat == "b") * 1.5 + rng.normal(0, 0.5, n)
    table = pa.table({**x, "kind": pa.array(cat), "price": y.astype(np.float64)})
    return _write(out, "regression", table), "price"


def imbalanced(out: Path, n: int = 100_000, seed: int = 5) -> tuple[Path, str]:
    rng = np.random.default_rng(seed)
    x = _noise(rng, n, 10)
    logit = 1.5 * x["x0"] - x["x1"] + 0.8 * x["x2"] * x["x3"] - 5.0
    y = rng.random(n) < 1 / (1 + np.exp(-logit))
    table = pa.table({**x, "fraud": y})
    return _write(out, "imbalanced", table), "fraud"


TABLES = {"entity": entity, "highcard": highcard, "dates": dates, "rare": rare, "regression": regression,
          "imbalanced": imbalanced}  # fmt: skip
