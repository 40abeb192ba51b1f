"""How to encode a high-cardinality key for XGBoost: measured, to choose raypipe's default.

On the tables in ``raypipe.data.datasets.traps`` that hold such keys (``highcard``: a 4,000-level string carrying
signal; ``entity``: integer user and item ids that repeat), the same rows, the same hash split and
the same XGBoost settings, one encoding at a time:

- ``native-512``: raypipe's previous default, categorical codes for the 512 most frequent levels
  (the rest missing), split natively by XGBoost;
- ``native-all``: every level as a native categorical;
- ``numeric``: the raw value as a number (ids only; strings have none);
- ``frequency``: the level's train-split row count;
- ``target-oof``: the smoothed mean label of the level, out-of-fold (5 folds) on train rows and from
  all train rows for valid/test (no leakage into valid or test);
- ``native-512+frequency``, ``target-oof+frequency``: both columns.

Also ``flights`` (its ``tailnum``: about 4,000 planes), where the key's signal is weak.

Writes ``benchmarks/results/encodings.json`` and prints test AUC per table and encoding.

    python benchmarks/bench_encodings.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import xgboost as xgb
from sklearn.metrics import roc_auc_score

from raypipe.config import SplitConfig  # noqa: E402
from raypipe.data.datasets import traps as _tables
from raypipe.data.split import assign  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"highcard": ["zip"], "entity": ["user_id", "item_id"], "flights": ["tailnum"]}
PARAMS = {"tree_method": "hist", "eta": 0.1, "max_depth": 8, "objective": "binary:logistic", "eval_metric": "auc",
          "max_cat_to_onehot": 1, "nthread": 2, "seed": 0}  # fmt: skip


def _frequency(train: pd.Series, col: pd.Series) -> np.ndarray:
    return col.map(train.value_counts()).fillna(0).to_numpy(np.float32)


def _target(train_key: pd.Series, train_y: np.ndarray, col: pd.Series, prior: float, m: float = 20.0) -> np.ndarray:
    g = pd.DataFrame({"k": train_key.to_numpy(), "y": train_y}).groupby("k")["y"].agg(["sum", "count"])
    enc = (g["sum"] + m * prior) / (g["count"] + m)
    return col.map(enc).fillna(prior).to_numpy(np.float32)


def _target_oof(key: pd.Series, y: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    prior = float(y.mean())
    fold = np.random.default_rng(seed).integers(0, folds, len(key))
    out = np.empty(len(key), np.float32)
    for f in range(folds):
        rest = fold != f
        out[~rest] = _target(key[rest], y[rest], key[~rest], prior)
    return out


def _columns(enc: str, frames: dict[str, pd.DataFrame], key: str, y_train: np.ndarray) -> dict[str, pd.DataFrame]:
    train = frames["train"][key]
    out = {}
    for name, df in frames.items():
        cols = {}
        if enc.startswith("native"):
            keep = train.value_counts().index[:512] if "512" in enc else train.unique()
            cats = pd.Categorical(df[key].where(df[key].isin(keep)), categories=list(keep))
            cols[key] = cats
        if enc == "numeric":
            cols[key] = df[key].astype(np.float32)
        if "frequency" in enc:
            cols[f"{key}__freq"] = _frequency(train, df[key])
        if enc.startswith("target-oof"):
            prior = float(y_train.mean())
            cols[f"{key}__te"] = (
                _target_oof(train, y_train, 5) if name == "train" else _target(train, y_train, df[key], prior)
            )
        out[name] = pd.DataFrame(cols, index=df.index)
    return out


def run_table(name: str, root: Path) -> dict:
    if name == "flights":
        from raypipe.data.ingest import resolve_path

        path, label = resolve_path("dataset://flights", root / "datasets"), "delayed"
    else:
        path, label = _tables.TABLES[name](root)
    table = pads.dataset(path, partitioning="hive").to_table()
    codes = assign(table, table.column_names, SplitConfig())
    df = table.to_pandas()
    y = df.pop(label).to_numpy().astype(np.float32)
    df = df.drop(columns=[c for c in ("rating_id", "year") if c in df])
    for col in df.columns:  # the other strings as plain categories (flights: carrier, origin, dest)
        if col not in KEYS[name] and not (
            pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col])
        ):
            df[col] = df[col].astype("category")
    parts = {s: np.flatnonzero(codes == i) for i, s in enumerate(("train", "valid", "test"))}
    frames = {s: df.iloc[idx] for s, idx in parts.items()}
    encs = ["native-512", "native-all", "frequency", "target-oof", "native-512+frequency", "target-oof+frequency"]
    if name == "entity":
        encs.insert(0, "numeric")
    results = {}
    for enc in encs:
        built = {s: frames[s].drop(columns=KEYS[name]) for s in frames}
        for key in KEYS[name]:
            extra = _columns(enc, frames, key, y[parts["train"]])
            built = {s: pd.concat([built[s], extra[s]], axis=1) for s in built}
        t0 = time.perf_counter()
        d = {s: xgb.DMatrix(built[s], y[parts[s]], enable_categorical=True) for s in built}
        bst = xgb.train(PARAMS, d["train"], 2000, evals=[(d["valid"], "valid")], early_stopping_rounds=50,
                        verbose_eval=False)  # fmt: skip
        p = bst.predict(d["test"], iteration_range=(0, bst.best_iteration + 1))
        results[enc] = {"test_auc": round(float(roc_auc_score(y[parts["test"]], p)), 4),
                        "rounds": bst.best_iteration + 1, "fit_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
        print(f"{name:9s} {enc:22s} AUC {results[enc]['test_auc']:.4f}  rounds {results[enc]['rounds']}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "encodings.json")
    ap.add_argument("--tables", default=",".join(KEYS))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        res = {name: run_table(name, Path(tmp)) for name in args.tables.split(",")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "encodings", "params": PARAMS, "results": res}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
