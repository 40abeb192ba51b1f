"""``raypipe reproduce RUN_ID``: re-execute a finished run from its manifest and compare.

The manifest (logged to the run in MLflow) holds the resolved config, so the
rerun uses exactly that config, with the cache off and nothing registered or
served. What changed since (code, packages, data) is listed before the rerun.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raypipe.errors import RegistryError
from raypipe.pipeline import manifest


@dataclass
class Reproduction:
    run_id: str
    changes: list[str]
    original: dict[str, float]
    reproduced: dict[str, float]
    tolerance: float
    summary: Any = None
    deltas: dict[str, float] = field(default_factory=dict)

    @property
    def within_tolerance(self) -> bool:
        return all(abs(d) <= self.tolerance for d in self.deltas.values())


def load_manifest(run_id: str, tracking_uri: str) -> dict[str, Any]:
    """The manifest logged to ``run_id``."""
    from raypipe.registry.store import client

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client(tracking_uri).download_artifacts(run_id, manifest.MANIFEST_FILE, tmp)
            return json.loads(Path(local).read_text())
    except Exception as e:  # noqa: BLE001 - MLflow raises many types for a missing run or file
        raise RegistryError(
            f"cannot read the manifest of run '{run_id}' from {tracking_uri}: "
            f"{str(e).splitlines()[0]}; is it a raypipe run (pass --tracking-uri if it lives elsewhere)?"
        ) from None


def reproduce(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    work_dir: str | None = None,
    address: str | None = None,
    tolerance: float = 1e-3,
    report=None,
    warn=None,
) -> Reproduction:
    """Rerun ``run_id`` from its manifest; ``warn`` receives each detected change before the rerun.

    The manifest is read from ``tracking_uri`` (default: as every command resolves it); the rerun
    uses the manifest's config with registration off, the cache off and nothing served.
    """
    from raypipe.config import PipelineConfig
    from raypipe.pipeline.run import prepare, run_pipeline
    from raypipe.runtime import resolve_paths

    old = load_manifest(run_id, resolve_paths(work_dir=work_dir, tracking_uri=tracking_uri).tracking_uri)
    cfg = PipelineConfig.model_validate(old["config"])
    cfg = cfg.model_copy(update={"register": cfg.register.model_copy(update={"enabled": False})})
    cfg = _pin_snapshot(cfg, old)
    ctx = prepare(cfg, work_dir=work_dir)
    changes = manifest.compare(
        old, code=manifest.code_info(), packages=manifest.package_versions(), fingerprint=ctx.fingerprint
    )
    for c in changes:
        if warn:
            warn(c)
    summary = run_pipeline(cfg, work_dir=work_dir, address=address, serve_model=False, report=report, use_cache=False)
    original = old.get("metrics", {})
    deltas = {k: summary.metrics[k] - v for k, v in original.items() if k in summary.metrics}
    return Reproduction(run_id, changes, original, summary.metrics, tolerance, summary, deltas)


def _pin_snapshot(cfg, old: dict[str, Any]):
    """An Iceberg source reads the snapshot the run read, whatever was committed since."""
    snapshot_id = (old.get("data", {}).get("version") or {}).get("snapshot_id")
    if cfg.data.iceberg is None or snapshot_id is None:
        return cfg
    iceberg = cfg.data.iceberg.model_copy(update={"snapshot_id": int(snapshot_id)})
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"iceberg": iceberg})})
