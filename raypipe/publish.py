"""Publishing a model: register a version, judge it at the gate, move the alias, audit it all.

``promote`` and ``rollback`` are the same alias moves for people (``raypipe
promote`` / ``raypipe rollback``); every move lands in the audit trail.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from raypipe import audit, registry
from raypipe.gate import GateDecision, decide, rescore
from raypipe.stages import Registered


def register_version(
    *,
    cfg,
    work: Path,
    booster,
    prep,
    contract,
    evaluated,
    example: dict[str, Any],
    raw_test_ds,
    run_id: str,
    fingerprint: str,
    config_hash: str,
    extra: dict[str, str] | None = None,
) -> tuple[Registered, GateDecision, dict[str, str]]:
    """Log the bundle as a new model version, then gate it against the champion."""
    import mlflow
    import pandas as pd

    from raypipe.bundle import write_bundle

    model_name = cfg.register.model_name or cfg.name
    alias = cfg.register.alias
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(tmp) / "bundle"
        hashes = write_bundle(bundle_dir, booster, prep, contract, extra)
        mlflow.log_dict(contract.to_dict(), "contract.json")
        mlflow.log_dict(prep.to_dict(), "preprocessor.json")
        name, version = registry.log_bundle(
            bundle_dir, model_name=model_name, input_example=pd.DataFrame([example]), hashes=hashes
        )
    report = evaluated.report
    holder = registry.current_holder(name, alias)
    champ_score, scored_on = None, None
    if holder is not None:
        champ_score, scored_on = _champion_score(name, holder, report.primary, raw_test_ds, contract.label.name)
    decision = decide(
        report.metrics,
        report.primary,
        floors=cfg.register.floors,
        max_regression=cfg.register.max_regression,
        champion_version=str(holder.version) if holder is not None else None,
        champion_score=champ_score,
        champion_scored_on=scored_on,
        alias=alias,
    )
    registry.tag_version(
        name,
        version,
        {**{f"test_{k}": v for k, v in report.metrics.items()}, "raypipe.gate": decision.reason},
    )
    common = {"model": name, "version": version, "run_id": run_id, "config_hash": config_hash}
    audit.record(work, "register", data_fingerprint=fingerprint, metrics=report.metrics, **common)
    audit.record(work, "gate", promote=decision.promote, reason=decision.reason, **common)
    if decision.promote:
        prev = registry.move_alias(name, alias, version)
        audit.record(work, "alias_move", alias=alias, previous=prev, reason="gate passed", **common)
    reg = Registered(run_id, name, version, decision.promote, decision.reason, hashes)
    return reg, decision, hashes


def _champion_score(name: str, holder, metric: str, raw_test_ds, label: str) -> tuple[float | None, str | None]:
    """Rescore the champion on this test split; fall back to the score recorded with it."""
    try:
        loaded = registry.load_model(f"models:/{name}/{holder.version}")
        score = rescore(loaded.bundle, raw_test_ds, metric, label)
        if score is not None:
            return score, "this test split"
    except Exception as e:  # noqa: BLE001 - an unloadable champion must not block a new version
        import logging

        logging.getLogger(__name__).warning("could not rescore v%s: %s", holder.version, e)
    recorded = holder.tags.get(f"test_{metric}")
    return (float(recorded), "its own test split") if recorded is not None else (None, None)


def promote(work: Path, model_name: str, version: str, alias: str = "champion") -> str | None:
    """Move ``alias`` to ``version`` by hand; returns the previous holder."""
    prev = registry.move_alias(model_name, alias, version)
    audit.record(work, "alias_move", model=model_name, version=version, alias=alias, previous=prev, reason="promote")
    return prev


def rollback(work: Path, model_name: str, alias: str = "champion") -> tuple[str, str]:
    """Give ``alias`` back to its previous holder; returns (from, to)."""
    old, new = registry.rollback(model_name, alias)
    audit.record(work, "alias_move", model=model_name, version=new, alias=alias, previous=old, reason="rollback")
    return old, new
