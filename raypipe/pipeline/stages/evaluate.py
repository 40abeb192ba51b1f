"""evaluate: test-split metrics, and the monitoring reference profile frozen with the model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raypipe import evaluate as metrics
from raypipe.model import SCORING_BATCH_ROWS, predict_matrix
from raypipe.pipeline.stages import _datasets
from raypipe.pipeline.stages._io import read_json, write_json

if TYPE_CHECKING:
    from raypipe.data.schema import Contract
    from raypipe.pipeline.context import RunContext
    from raypipe.pipeline.stages.preprocess import Prepared
    from raypipe.pipeline.stages.profile import Profiled
    from raypipe.pipeline.stages.train import Trained


@dataclass
class Evaluated:
    report: metrics.EvalReport
    y_true: np.ndarray
    scores: np.ndarray
    """Raw test scores, kept for the gate, the report and the reference profile."""
    reference: str | None = None
    """The monitoring reference profile (JSON), saved with the model."""

    REQUIRED = ("eval.json", "y_true.npy", "scores.npy")

    def save(self, d: Path) -> None:
        write_json(d / "eval.json", asdict(self.report))
        np.save(d / "y_true.npy", self.y_true, allow_pickle=False)
        np.save(d / "scores.npy", self.scores, allow_pickle=False)
        if self.reference is not None:
            (d / "reference.json").write_text(self.reference)

    @classmethod
    def load(cls, d: Path) -> Evaluated:
        report = metrics.EvalReport(**read_json(d / "eval.json"))
        y = np.load(d / "y_true.npy", allow_pickle=False)
        p = np.load(d / "scores.npy", allow_pickle=False)
        ref = d / "reference.json"
        return cls(report, y, p, ref.read_text() if ref.exists() else None)


def evaluate(ctx: RunContext, profile: Profiled, preprocess: Prepared, train: Trained) -> Evaluated:
    ev = score_test_split(train.model, preprocess.parts["test"], profile.contract, ctx.cfg.evaluate.primary_metric)
    ev.reference = reference_profile(_datasets.split_rows(ctx, "train"), profile.contract, ev)
    return ev


def score_test_split(model, test_part, contract: Contract, primary_metric: str | None) -> Evaluated:
    """Metrics of ``model`` on the model inputs of the test split, read batch by batch."""
    ys, ps = [], []
    for b in test_part.iter_batches(batch_size=SCORING_BATCH_ROWS, batch_format="numpy"):
        if len(b["y"]):
            ys.append(b["y"])
            ps.append(predict_matrix(model, b["X"]))
    y, p = np.concatenate(ys), np.concatenate(ps)
    return Evaluated(metrics.evaluate(contract.label.task, y, p, primary_metric), y, p)


def reference_profile(train_raw, contract: Contract, ev: Evaluated) -> str:
    """The monitoring reference (raw train split + test scores) as JSON, to ship in the bundle."""
    from raypipe.monitor.reference import build_reference

    ref = build_reference(
        train_raw, contract, ev.scores, test_metrics=ev.report.metrics, primary_metric=ev.report.primary
    )
    return json.dumps(ref.to_dict(), indent=1)


def record(ctx: RunContext, result: Evaluated) -> None:
    """Cached or not: test metrics, split sizes and the dataset input on the run."""
    prof = ctx.results["profile"]
    t = ctx.tracker
    t.log_metrics(result.report.prefixed())
    t.log_metrics({f"rows_{k}": v for k, v in prof.rows.items()})
    t.set_tags({"raypipe.task": prof.contract.label.task})
    # A SQL or Iceberg source is logged as the Parquet snapshot the run read (MLflow resolves no DB URLs).
    t.log_input(ctx.data_path if ctx.cfg.data.path else ctx.source.base, ctx.cfg.name, ctx.fingerprint, prof.rows)


def describe(ctx: RunContext, result: Evaluated) -> str:
    return " ".join(f"test_{k}={v:.4f}" for k, v in result.report.metrics.items())
