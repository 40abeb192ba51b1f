"""The model the serving benchmarks use: 8 features (numeric, categorical, boolean), 100 trees of depth 6.

Written as a raypipe bundle folder, which ``registry.load_model`` serves without MLflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from raypipe.data.schema import ColumnSpec, Contract, LabelSpec

CARRIERS = [f"C{i}" for i in range(10)]
CONTRACT = Contract(
    features=[ColumnSpec(f"x{i}", "numeric", "double") for i in range(6)]
    + [
        ColumnSpec("carrier", "categorical", "string", categories=CARRIERS),
        ColumnSpec("weekend", "boolean", "bool"),
    ],
    label=LabelSpec("y", "binary", "bool", classes=["false", "true"]),
)


def table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    cols = {f"x{i}": rng.normal(size=n) for i in range(6)}
    cols["carrier"] = rng.choice(CARRIERS, n)
    cols["weekend"] = rng.random(n) < 0.3
    cols["y"] = (cols["x0"] + cols["x1"] * cols["x2"] + (cols["carrier"] == "C3") + rng.normal(size=n)) > 0.5
    return pa.table(cols)


def record(i: int = 0) -> dict:
    row = table(1, seed=i).drop(["y"]).to_pylist()[0]
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}


def build_bundle(out: Path) -> Path:
    import xgboost

    from raypipe.features import Preprocessor
    from raypipe.model import write_bundle

    prep = Preprocessor.fit(CONTRACT)
    batch = prep.transform_batch(table(20_000))
    dtrain = xgboost.DMatrix(batch["X"], batch["y"], feature_types=prep.feature_types, enable_categorical=True)
    params = {"objective": "binary:logistic", "max_depth": 6, "nthread": 2, "seed": 0}
    booster = xgboost.train(params, dtrain, 100)
    write_bundle(out, booster, prep, CONTRACT)
    return out
