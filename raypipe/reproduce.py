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

from raypipe import manifest
from raypipe.errors import RegistryError


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


def load_manifest(run_id: str, tracking_uri: str | None) -> dict[str, Any]:
    """The manifest logged to ``run_id``."""
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = MlflowClient().download_artifacts(run_id, manifest.MANIFEST_FILE, tmp)
            return json.loads(Path(local).read_text())
    except Exception as e:  # noqa: BLE001 - MLflow raises many types for a missing run or file
        raise RegistryError(
            f"cannot read the manifest of run '{run_id}' from {mlflow.get_tracking_uri()}: "
            f"{str(e).splitlines()[0]}; is it a raypipe run (pass --tracking-uri if it lives elsewhere)?"
        ) from None


def reproduce(
    run_id: str,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    tolerance: float = 1e-3,
    report=None,
    warn=None,
) -> Reproduction:
    """Rerun ``run_id`` from its manifest; ``warn`` receives each detected change before the rerun."""
    from raypipe.config import PipelineConfig
    from raypipe.data import ingest
    from raypipe.pipeline import run_pipeline
    from raypipe.runtime import work_dir

    old = load_manifest(run_id, tracking_uri)
    cfg = PipelineConfig.model_validate(old["config"])
    cfg = cfg.model_copy(update={"register": cfg.register.model_copy(update={"enabled": False})})
    source = ingest.discover(ingest.resolve_path(cfg.data.path, work_dir(cfg) / "datasets"), cfg.data.filter)
    changes = manifest.compare(
        old,
        code=manifest.code_info(),
        packages=manifest.package_versions(),
        fingerprint=ingest.fingerprint(source, cfg.data.columns),
    )
    for c in changes:
        if warn:
            warn(c)
    summary = run_pipeline(cfg, address=address, serve_model=False, report=report, use_cache=False)
    original = old.get("metrics", {})
    deltas = {k: summary.metrics[k] - v for k, v in original.items() if k in summary.metrics}
    return Reproduction(run_id, changes, original, summary.metrics, tolerance, summary, deltas)
