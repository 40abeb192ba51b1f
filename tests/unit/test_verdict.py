"""The CI verdict and its Markdown: the decision, both versions' metrics, arrows by direction."""

from __future__ import annotations

from raypipe.pipeline.summary import RunResult
from raypipe.pipeline.verdict import to_markdown, verdict


def _result(promote: bool, took_alias: bool, champion: dict | None) -> RunResult:
    return RunResult(
        name="flights",
        config_hash="c" * 16,
        data_fingerprint="f" * 16,
        task="binary",
        rows={"train": 800, "valid": 100, "test": 100},
        metrics={"test_auc": 0.81, "test_logloss": 0.40, "test_positive_rate": 0.2},
        run_id="r1",
        model_name="flights",
        model_version="7",
        champion=took_alias,
        gate_reason="the reason",
        gate={
            "promote": promote,
            "metric": "auc",
            "champion_version": "6" if champion else None,
            "champion_metrics": champion,
            "champion_scored_on": "this test split" if champion else None,
        },
        report_path="/work/report/report.html",
    )


def test_a_better_version_passes_and_its_table_shows_improvements_both_ways() -> None:
    v = verdict(_result(True, True, {"auc": 0.80, "logloss": 0.45, "positive_rate": 0.25}), dry_run=False)
    assert (v["decision"], v["passed"], v["promoted"]) == ("passed", True, True)
    assert v["metrics"] == {"auc": 0.81, "logloss": 0.40, "positive_rate": 0.2}
    assert v["champion"] == {
        "version": "6",
        "metrics": {"auc": 0.80, "logloss": 0.45, "positive_rate": 0.25},
        "scored_on": "this test split",
    }
    assert v["model_card"] == "/work/report/model_card.md" and v["model_uri"] == "models:/flights/7"
    md = to_markdown(v)
    assert "✅ **flights v7**: passed the gate (took the alias)" in md
    assert "| **auc** (gate) | 0.8100 | 0.8000 | +0.0100 ▲ |" in md
    assert "| logloss | 0.4000 | 0.4500 | -0.0500 ▲ |" in md  # lower is better
    assert "| positive_rate | 0.2000 | 0.2500 | -0.0500 |" in md  # describes the split: no arrow
    assert "**Why:** the reason" in md and "MLflow run: `r1`" in md


def test_a_dry_run_that_fails_keeps_the_champion_and_a_first_version_has_no_comparison() -> None:
    v = verdict(_result(False, False, {"auc": 0.90, "logloss": 0.30, "positive_rate": 0.2}), dry_run=True)
    assert (v["decision"], v["passed"], v["promoted"], v["dry_run"]) == ("kept champion", False, False, True)
    md = to_markdown(v)
    assert md.startswith("### raypipe ci --dry-run") and "❌ **flights v7**: the champion stays" in md
    assert "| **auc** (gate) | 0.8100 | 0.9000 | -0.0900 ▼ |" in md
    first = to_markdown(verdict(_result(True, False, None), dry_run=True))
    assert "would take the alias" in first and "| metric | v7 |" in first and "champion v" not in first
