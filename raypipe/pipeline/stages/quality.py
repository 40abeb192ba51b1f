"""quality: the data-quality rules over the profile; a failing rule names the column, files and values."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from raypipe.data import quality as rules
from raypipe.data.profile import combine
from raypipe.pipeline.stages import _datasets
from raypipe.pipeline.stages._io import read_json, write_json

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext
    from raypipe.pipeline.stages.profile import Profiled

log = logging.getLogger(__name__)


@dataclass
class QualityResult:
    report: rules.QualityReport

    REQUIRED = ("quality.json",)

    def save(self, d: Path) -> None:
        write_json(d / "quality.json", self.report.to_dict())

    @classmethod
    def load(cls, d: Path) -> QualityResult:
        raw = read_json(d / "quality.json")
        return cls(rules.QualityReport(raw["rows"], raw["columns"], [rules.Finding(**f) for f in raw["findings"]]))

    @property
    def notes(self) -> list[str]:
        return [f"data quality [{f.action}] {f.rule} '{f.column}': {f.message}" for f in self.report.findings]


def quality(ctx: RunContext, profile: Profiled) -> QualityResult:
    cfg = ctx.cfg.data
    declared = _datasets.declared(ctx)
    dups = None
    if cfg.id_column and cfg.quality.duplicate_ids != "off":
        # The profile pass proved the ids unique, or they need the exact (distributed) count.
        unique = profile.repeated_ids == 0
        dups = (0, []) if unique else rules.count_duplicate_ids(_datasets.source(ctx), cfg.id_column)
    report = rules.check(combine(profile.profile), profile.contract, declared, cfg.quality, dups)
    rules.enforce(report, ctx.source, declared)
    return QualityResult(report)


def record(ctx: RunContext, result: QualityResult) -> None:
    """Cached or not: the report beside the run's manifest, in the log and in MLflow."""
    report = result.report
    report.save(ctx.paths.runs(ctx.cfg.name))
    for f in report.findings:
        log.info("data quality [%s] %s '%s': %s", f.action, f.rule, f.column, f.message)
    ctx.tracker.log_text(json.dumps(report.to_dict(), indent=2, default=str), "quality/quality.json")
    ctx.tracker.log_text(report.to_text(), "quality/quality.txt")


def describe(ctx: RunContext, result: QualityResult) -> str:
    findings = result.report.findings
    return " ".join([f"{len(findings)} finding(s)", *(f"[{f.action}] {f.rule}:{f.column}" for f in findings[:5])])
