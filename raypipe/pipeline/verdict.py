"""The CI verdict: did this run's model pass the gate against the champion, and why.

Built from a finished run (:class:`RunResult`) for ``raypipe ci``: a JSON document a workflow
reads, and its Markdown twin to post on a pull request. Both versions' metrics are on the same
test split when the champion could be rescored (``champion.scored_on``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raypipe.evaluate import DESCRIPTIVE, HIGHER_IS_BETTER
from raypipe.pipeline.summary import RunResult

PASSED, KEPT = "passed", "kept champion"


def verdict(result: RunResult, *, dry_run: bool) -> dict[str, Any]:
    """The gate's verdict on ``result``'s version; ``passed`` says whether it may take the alias."""
    gate = result.gate or {}
    passed = bool(gate.get("promote", result.champion))
    report = Path(result.report_path) if result.report_path else None
    return {
        "decision": PASSED if passed else KEPT,
        "passed": passed,
        "dry_run": dry_run,
        "promoted": bool(result.champion),
        "reason": result.gate_reason,
        "model": result.model_name,
        "version": result.model_version,
        "model_uri": result.model_uri,
        "metric": gate.get("metric"),
        "metrics": {k.removeprefix("test_"): v for k, v in result.metrics.items()},
        "champion": {
            "version": gate.get("champion_version"),
            "metrics": gate.get("champion_metrics"),
            "scored_on": gate.get("champion_scored_on"),
        },
        "rows": result.rows,
        "report": str(report) if report else None,
        "model_card": str(report.with_name("model_card.md")) if report else None,
        "mlflow_run": result.run_id,
        "tracking_uri": result.tracking_uri,
        "config_hash": result.config_hash,
        "data_fingerprint": result.data_fingerprint,
    }


def to_markdown(v: dict[str, Any]) -> str:
    """The verdict as a pull-request comment: the decision, a metric table, the reason, links."""
    mark = "✅" if v["passed"] else "❌"
    what = "would take" if v["dry_run"] else ("took" if v["promoted"] else "may take")
    head = f"{mark} **{v['model']} v{v['version']}**: " + (
        f"passed the gate ({what} the alias)" if v["passed"] else "the champion stays"
    )
    champ = v["champion"]
    lines = [f"### raypipe ci{' --dry-run' if v['dry_run'] else ''}", "", head, ""]
    if champ["metrics"]:
        lines += [
            f"| metric | v{v['version']} | champion v{champ['version']} ({champ['scored_on']}) | change |",
            "|---|---:|---:|---:|",
        ]
        for name, value in v["metrics"].items():
            old = champ["metrics"].get(name)
            lines.append(f"| {_name(name, v['metric'])} | {value:.4f} | {_num(old)} | {_delta(name, value, old)} |")
    else:
        lines += [f"| metric | v{v['version']} |", "|---|---:|"]
        lines += [f"| {_name(name, v['metric'])} | {value:.4f} |" for name, value in v["metrics"].items()]
    rows = v.get("rows") or {}
    lines += ["", f"**Why:** {v['reason']}", ""]
    if rows:
        lines.append(
            f"Test rows: {rows.get('test', 0):,} (train {rows.get('train', 0):,}, valid {rows.get('valid', 0):,})."
        )
    links = [f"Report: `{v['report']}`"] if v["report"] else []
    links += [f"MLflow run: `{v['mlflow_run']}`"] if v["mlflow_run"] else []
    if links:
        lines.append(" · ".join(links))
    return "\n".join(lines) + "\n"


def _name(name: str, primary: str | None) -> str:
    return f"**{name}** (gate)" if name == primary else name


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.4f}"


def _delta(name: str, new: float, old: float | None) -> str:
    """The change, with ▲ when it is an improvement for that metric and ▼ when it is worse."""
    if old is None:
        return "—"
    d = new - old
    if d == 0 or name in DESCRIPTIVE:
        return f"{d:+.4f}" if d else "0"
    better = (d > 0) == HIGHER_IS_BETTER.get(name, False)
    return f"{d:+.4f} {'▲' if better else '▼'}"
