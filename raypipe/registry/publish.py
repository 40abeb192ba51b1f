"""Publishing a model: register a version, judge it at the gate, move the alias, audit it all.

``promote`` and ``rollback`` are the same alias moves for people (``raypipe
promote`` / ``raypipe rollback``); every move lands in the audit trail.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raypipe.registry import audit, versions
from raypipe.registry.gate import decide, rescore
from raypipe.registry.loading import load_model

log = logging.getLogger(__name__)


@dataclass
class Published:
    """A registered version and the gate's verdict on it."""

    run_id: str
    model_name: str
    model_version: str
    champion: bool
    """Whether it took the alias."""
    gate_reason: str
    hashes: dict[str, str] = field(default_factory=dict)
    """sha256 per bundle file, as pinned on the version."""
    tracking_uri: str | None = None
    gate: dict[str, Any] = field(default_factory=dict)
    """The gate's decision in full (``GateDecision.to_dict()``): the verdict (``promote``, which
    ``register.promote: false`` leaves unapplied) and both versions' metrics."""


def register_version(
    *,
    cfg,
    tracker,
    work: Path,
    model,
    prep,
    contract,
    evaluated,
    example: dict[str, Any],
    raw_test_batches,
    fingerprint: str,
    config_hash: str,
    extra: dict[str, str] | None = None,
    run_key: str | None = None,
) -> Published:
    """Log the bundle as a new model version of the tracker's run, then gate it against the champion.

    ``raw_test_batches`` is a callable returning the test split's raw Arrow batches (label included),
    on which the champion is rescored. ``run_key`` makes the registration idempotent: a retry
    under the same key reuses the version it registered (:func:`versions.register_bundle`).
    """
    import pandas as pd

    from raypipe.model import write_bundle

    uri, run_id = tracker.tracking_uri, tracker.run_id
    name, alias = cfg.register.model_name or cfg.name, cfg.register.alias
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = Path(tmp) / "bundle"
        hashes = write_bundle(bundle_dir, model, prep, contract, extra)
        tracker.log_dict(contract.to_dict(), "contract.json")
        tracker.log_dict(prep.to_dict(), "preprocessor.json")
        version = versions.register_bundle(
            uri,
            bundle_dir,
            model_name=name,
            run_id=run_id,
            input_example=pd.DataFrame([example]),
            hashes=hashes,
            run_key=run_key,
        )
    report = evaluated.report
    holder = versions.current_holder(uri, name, alias)
    if holder is not None and str(holder.version) == version:  # a retried registration of the champion
        reason = f"v{version} already holds {alias} (registered before under the same run key)"
        return Published(run_id, name, version, True, reason, hashes, uri)
    champ, scored_on = None, None
    if holder is not None:
        champ, scored_on = _champion_metrics(uri, name, holder, report.primary, raw_test_batches)
    decision = decide(
        report.metrics,
        report.primary,
        floors=cfg.register.floors,
        max_regression=cfg.register.max_regression,
        champion_version=str(holder.version) if holder is not None else None,
        champion_score=(champ or {}).get(report.primary),
        champion_scored_on=scored_on,
        champion_metrics=champ,
        alias=alias,
    )
    tags = {f"test_{k}": v for k, v in report.metrics.items()} | {"raypipe.gate": decision.reason}
    if not cfg.register.promote:  # judged only (`raypipe ci --dry-run`): a candidate, whatever the verdict
        tags["raypipe.candidate"] = "passed" if decision.promote else "failed"
    versions.tag_version(uri, name, version, tags)
    common = {"model": name, "version": version, "run_id": run_id, "config_hash": config_hash}
    audit.record(work, "register", data_fingerprint=fingerprint, metrics=report.metrics, **common)
    audit.record(work, "gate", promote=decision.promote, reason=decision.reason, **common)
    moved = decision.promote and cfg.register.promote
    if moved:
        prev = versions.move_alias(uri, name, alias, version)
        audit.record(work, "alias_move", alias=alias, previous=prev, reason="gate passed", **common)
    tracker.log_text(_json(decision.to_dict()), "gate.json")
    return Published(run_id, name, version, moved, decision.reason, hashes, uri, decision.to_dict())


def _json(d: dict[str, Any]) -> str:
    import json

    return json.dumps(d, indent=2)


def _champion_metrics(
    uri: str, name: str, holder, metric: str, raw_test_batches
) -> tuple[dict[str, float] | None, str | None]:
    """Rescore the champion on this test split; fall back to the metrics recorded with it."""
    try:
        champion = load_model(f"models:/{name}/{holder.version}", uri)
        scored = rescore(champion.bundle, raw_test_batches, metric)
        if scored is not None and scored.get(metric) is not None:
            return scored, "this test split"
    except Exception as e:  # noqa: BLE001 - an unloadable champion must not block a new version
        log.warning("could not rescore v%s: %s", holder.version, e)
    recorded = {}
    for k, v in holder.tags.items():
        if k.startswith("test_"):
            try:
                recorded[k.removeprefix("test_")] = float(v)
            except ValueError:
                continue
    return (recorded, "its own test split") if metric in recorded else (None, None)


def promote(tracking_uri: str, work: Path, model_name: str, version: str, alias: str = "champion") -> str | None:
    """Move ``alias`` to ``version`` by hand; returns the previous holder."""
    prev = versions.move_alias(tracking_uri, model_name, alias, version)
    audit.record(work, "alias_move", model=model_name, version=version, alias=alias, previous=prev, reason="promote")
    return prev


def rollback(tracking_uri: str, work: Path, model_name: str, alias: str = "champion") -> tuple[str, str]:
    """Give ``alias`` back to its previous holder; returns (from, to)."""
    old, new = versions.rollback(tracking_uri, model_name, alias)
    audit.record(work, "alias_move", model=model_name, version=new, alias=alias, previous=old, reason="rollback")
    return old, new
