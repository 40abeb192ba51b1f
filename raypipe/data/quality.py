"""The data-quality gate: rules over the distributed column profile.

Rules run on statistics already computed by Ray Data (no pandas on the
driver). A failing rule is then located: one Ray task per group of files scans
only the offending column, so the error names the file and example values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.config import QualityConfig
from raypipe.data.ingest import Source
from raypipe.data.profile import ColumnStats
from raypipe.data.schema import ColumnSpec, Contract
from raypipe.errors import DataError


@dataclass
class Finding:
    rule: str
    column: str
    action: str
    message: str
    count: int = 0
    examples: list[Any] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


@dataclass
class QualityReport:
    rows: int
    columns: dict[str, dict[str, Any]]
    findings: list[Finding]

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.action == "fail"]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": self.columns, "findings": [asdict(f) for f in self.findings]}

    def to_text(self) -> str:
        """A readable table: one line per column, then the findings."""
        lines = [f"{'column':<24} {'nulls':>8} {'min':>12} {'max':>12} {'levels':>7}"]
        for name, c in self.columns.items():
            lo = "" if c["min"] is None else f"{c['min']:.4g}"
            hi = "" if c["max"] is None else f"{c['max']:.4g}"
            lines.append(f"{name:<24} {c['null_rate']:>8.2%} {lo:>12} {hi:>12} {c['levels']:>7}")
        lines.append("")
        lines.extend(f"[{f.action}] {f.rule} {f.column}: {f.message}" for f in self.findings)
        return "\n".join(lines)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "quality.json").write_text(json.dumps(self.to_dict(), indent=2, default=str))
        (folder / "quality.txt").write_text(self.to_text())


def check(
    stats: dict[str, ColumnStats],
    contract: Contract,
    declared: Contract | None,
    cfg: QualityConfig,
    duplicate_ids: tuple[int, list[Any]] | None = None,
) -> QualityReport:
    """Apply the rules; nothing is raised here (see :func:`enforce`)."""
    findings: list[Finding] = []
    rows = max((s.count for s in stats.values()), default=0)
    for spec in contract.features:
        s = stats[spec.name]
        if cfg.null_rate != "off" and s.null_rate > cfg.max_null_rate:
            findings.append(
                Finding(
                    "null_rate",
                    spec.name,
                    cfg.null_rate,
                    f"{s.null_rate:.1%} null, above data.quality.max_null_rate={cfg.max_null_rate:g}",
                    s.nulls,
                )
            )
        if cfg.constant != "off" and _is_constant(spec, s):
            findings.append(
                Finding("constant", spec.name, cfg.constant, "has a single value; it cannot help the model")
            )
        want = _declared_spec(declared, spec.name)
        if want is None:
            continue
        if cfg.out_of_range != "off" and spec.kind == "numeric" and (want.min is not None or want.max is not None):
            lo, hi = want.min, want.max
            if (lo is not None and s.min is not None and s.min < lo) or (
                hi is not None and s.max is not None and s.max > hi
            ):
                findings.append(
                    Finding(
                        "out_of_range",
                        spec.name,
                        cfg.out_of_range,
                        f"values span [{s.min:g}, {s.max:g}], the contract allows [{lo}, {hi}]",
                        examples=[
                            v for v in (s.min, s.max) if (lo is not None and v < lo) or (hi is not None and v > hi)
                        ],
                    )
                )
        if cfg.unseen_categories != "off" and want.categories:
            allowed = set(want.categories)
            unseen = {k: v for k, v in s.levels.items() if k not in allowed}
            if unseen:
                top = sorted(unseen, key=unseen.get, reverse=True)[:5]
                findings.append(
                    Finding(
                        "unseen_categories",
                        spec.name,
                        cfg.unseen_categories,
                        f"{len(unseen)} level(s) not in the contract, e.g. {top}",
                        int(sum(unseen.values())),
                        top,
                    )
                )
    if duplicate_ids and duplicate_ids[0] and cfg.duplicate_ids != "off":
        n, examples = duplicate_ids
        findings.append(
            Finding(
                "duplicate_ids",
                contract.id_column or "",
                cfg.duplicate_ids,
                f"{n} id value(s) appear more than once, e.g. {examples[:5]}",
                n,
                examples[:5],
            )
        )
    columns = {
        name: {
            "null_rate": s.null_rate,
            "min": s.min,
            "max": s.max,
            "levels": len(s.levels) if s.levels else 0,
        }
        for name, s in stats.items()
    }
    return QualityReport(rows=rows, columns=columns, findings=findings)


def _is_constant(spec: ColumnSpec, s: ColumnStats) -> bool:
    if spec.kind in ("numeric", "boolean"):
        return s.min is not None and s.min == s.max
    return len(s.levels) == 1 and not s.levels_truncated


def _declared_spec(declared: Contract | None, name: str) -> ColumnSpec | None:
    if declared is None:
        return None
    return next((f for f in declared.features if f.name == name), None)


def count_duplicate_ids(ds, id_column: str) -> tuple[int, list[Any]]:
    """Distributed: group by the id column and count groups with more than one row."""
    from ray.data.expressions import col

    dups = ds.select_columns([id_column]).groupby(id_column).count().filter(expr=col("count()") > 1)
    examples = [r[id_column] for r in dups.take(5)]
    return (dups.count() if examples else 0), examples


def _violations(path: str, filesystem, finding: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Count a rule's violations in one file and keep a few example values."""
    with filesystem.open_input_file(path) as f:
        table = pq.read_table(f, columns=[finding["column"]]) if finding["column"] in pq.read_schema(f).names else None
    if table is None:  # a hive partition column: not in the file
        return {"path": path, "count": 0, "examples": []}
    col = table.column(0)
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    rule = finding["rule"]
    if rule == "null_rate":
        mask = pc.is_null(col, nan_is_null=True)
    elif rule == "out_of_range":
        lo, hi = spec.get("min"), spec.get("max")
        num = pc.cast(col, pa.float64())
        mask = pa.array(np.zeros(len(col), bool))
        if lo is not None:
            mask = pc.or_(mask, pc.less(num, lo))
        if hi is not None:
            mask = pc.or_(mask, pc.greater(num, hi))
    else:  # unseen_categories
        as_str = col if pa.types.is_string(col.type) else pc.cast(col, pa.string())
        mask = pc.invert(pc.is_in(as_str, value_set=pa.array(spec.get("categories") or [], pa.string())))
        mask = pc.and_(mask, pc.is_valid(col))
    mask = pc.fill_null(mask, False)
    hits = col.filter(mask)
    return {"path": path, "count": len(hits), "examples": hits.slice(0, 3).to_pylist()}


def enforce(report: QualityReport, source: Source, declared: Contract | None) -> None:
    """Raise one DataError listing every failing rule, each with its files and examples."""
    import ray

    failures = report.failures
    if not failures:
        return
    scan = ray.remote(num_cpus=0.5)(_violations)
    for f in failures:
        if f.rule not in ("null_rate", "out_of_range", "unseen_categories"):
            continue
        spec = _declared_spec(declared, f.column)
        refs = [scan.remote(p, source.filesystem, asdict(f), asdict(spec) if spec else {}) for p in source.files]
        found = [r for r in ray.get(refs) if r["count"]]
        f.files = [source.relpath(r["path"]) for r in found]
        f.count = f.count or sum(r["count"] for r in found)
        f.examples = f.examples or [v for r in found for v in r["examples"]][:5]
    parts = []
    for f in failures:
        where = f" in {f.files[:3]}" + (f" (+{len(f.files) - 3} files)" if len(f.files) > 3 else "") if f.files else ""
        ex = f", e.g. {f.examples[:3]}" if f.examples else ""
        parts.append(f"rule {f.rule} failed for column '{f.column}'{where}: {f.message}{ex}")
    raise DataError(
        "data quality gate: " + "; ".join(parts) + " (set the rule to warn in data.quality to continue)",
        findings=[asdict(f) for f in failures],
    )
