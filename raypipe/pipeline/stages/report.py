"""report: the HTML run report and the Markdown model card (metrics with CIs, plots, slices, manifest, gate)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypipe.model import score_labelled
from raypipe.pipeline import manifest
from raypipe.pipeline.stages import _datasets
from raypipe.report.run_report import write_run_report

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext
    from raypipe.pipeline.stages.evaluate import Evaluated
    from raypipe.pipeline.stages.preprocess import Prepared
    from raypipe.pipeline.stages.profile import Profiled
    from raypipe.pipeline.stages.quality import QualityResult
    from raypipe.pipeline.stages.register import Registered
    from raypipe.pipeline.stages.train import Trained


@dataclass
class Reported:
    """The run report folder: report.html, model_card.md, plots/, metrics.json."""

    folder: Path

    REQUIRED = ("report.html", "model_card.md")

    def save(self, d: Path) -> None:
        shutil.copytree(self.folder, d, dirs_exist_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)  # written to a temp folder by the stage
        self.folder = d

    def moved(self, d: Path) -> None:
        """The cache renamed the folder ``save`` filled to ``d``."""
        self.folder = d

    @classmethod
    def load(cls, d: Path) -> Reported:
        return cls(d)


def report(
    ctx: RunContext,
    profile: Profiled,
    quality: QualityResult,
    preprocess: Prepared,
    train: Trained,
    evaluate: Evaluated,
    register: Registered | None,
) -> Reported:
    """Write the run report and model card to a temp folder (the cache moves it into its entry)."""
    cfg, contract, prep = ctx.cfg, profile.contract, preprocess.preprocessor
    gate = {"model": None, "version": None, "champion": None, "reason": "not registered (register.enabled: false)"}
    if register is not None:
        gate = {"model": register.model_name, "version": register.model_version, "champion": register.champion}
        gate["reason"] = register.gate_reason
    y, p, slices = evaluate.y_true, evaluate.scores, {}
    columns = [c for c in cfg.report.slice_columns if c in contract.feature_names or c in ctx.columns]
    if columns:
        scored = score_labelled(_datasets.batches(_datasets.split_rows(ctx, "test")), prep, train.model, columns)
        if scored is not None:
            y, p, slices = scored
    out = Path(tempfile.mkdtemp(prefix="raypipe-report-"))
    man = manifest.build(ctx)
    # The report reads the model's name and version at the manifest's top level.
    man |= {"model_name": gate["model"] or cfg.name, "model_version": gate["version"] or "-"}
    findings = [f"[{f.action}] {f.rule} '{f.column}': {f.message}" for f in quality.report.findings]
    write_run_report(
        out,
        task=contract.label.task,
        y_true=y,
        scores=p,
        class_names=contract.label.classes,
        feature_importance=_importance(train.model, prep.feature_names),
        slices=slices,
        quality={"rows": quality.report.rows, "findings": findings or ["none"], "report": "quality/quality.txt"},
        data_summary={"rows": profile.rows, "features": len(contract.features), "task": contract.label.task},
        manifest=man,
        gate=gate,
        card=cfg.report,
    )
    return Reported(out)


def record(ctx: RunContext, result: Reported) -> None:
    ctx.tracker.log_artifacts(result.folder, "report")


def describe(ctx: RunContext, result: Reported) -> str:
    return str(result.folder / "report.html")


def _importance(model: Any, names: list[str]) -> dict[str, float]:
    """Gain per feature (XGBoost), or the estimator's impurity importances (scikit-learn trees)."""
    if hasattr(model, "get_score"):
        return {k: float(v) for k, v in model.get_score(importance_type="gain").items()}
    values = getattr(model, "feature_importances_", None)
    if values is not None and len(values) == len(names):
        return dict(zip(names, map(float, values)))
    return {}
