"""The run manifest: everything needed to explain and repeat a run, as one JSON file.

Config hash, data fingerprint, every seed, the code version (git commit, dirty
flag, package source hash), package versions, artifact hashes, the Ray cluster
shape and the stage cache keys. ``compare`` lists what differs between a
manifest and the present, for ``raypipe reproduce``.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raypipe.pipeline.codeversion import CodeVersion, code_info  # noqa: F401 - code_info: part of the manifest's API

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext

MANIFEST_FILE = "manifest.json"
_PACKAGES = ("raypipe", "ray", "xgboost", "scikit-learn", "mlflow", "pyarrow", "numpy", "pydantic", "pandas")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def all_packages() -> str:
    """``name==version`` per installed distribution (logged as requirements.txt)."""
    lines = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]}
    return "\n".join(sorted(lines, key=str.lower)) + "\n"


def write(path: Path, manifest: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    return path


def compare(old: dict[str, Any], *, code: CodeVersion, packages: dict[str, str], fingerprint: str | None) -> list[str]:
    """Human-readable differences between a recorded manifest and now (empty: nothing changed)."""
    diffs = []
    was = old.get("code", {})
    if was.get("source_sha256") != code.source_sha256:
        diffs.append(
            f"code changed: raypipe source {str(was.get('source_sha256'))[:12]} -> {code.source_sha256[:12]} "
            f"(git {str(was.get('git_commit'))[:10]} -> {str(code.commit)[:10]})"
        )
    for name, version in sorted(old.get("packages", {}).items()):
        now = packages.get(name)
        if now != version:
            diffs.append(f"package changed: {name} {version} -> {now or 'not installed'}")
    if fingerprint is not None and old.get("data", {}).get("fingerprint") != fingerprint:
        diffs.append(f"data changed: fingerprint {old.get('data', {}).get('fingerprint')} -> {fingerprint}")
    return diffs


def build(ctx: RunContext) -> dict[str, Any]:
    """The manifest of a run, as far as it got (the report embeds it before the run ends)."""
    import datetime as dt

    from raypipe.pipeline.summary import RunResult

    cfg, summary = ctx.cfg, RunResult.of(ctx)
    return {
        "raypipe_manifest": 1,
        "name": cfg.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mlflow": {"tracking_uri": summary.tracking_uri, "run_id": summary.run_id},
        "config_hash": summary.config_hash,
        "config": cfg.model_dump(mode="json"),
        "data": {
            "path": ctx.data_path,
            "fingerprint": summary.data_fingerprint,
            "files": len(ctx.source.files),
            "rows": summary.rows,
            # A SQL or Iceberg source's data version (the Iceberg snapshot id reproduce reads again).
            "version": getattr(ctx.results.get("ingest"), "version", None),
        },
        "seeds": {
            "split": cfg.data.split.seed,
            "xgboost": cfg.train.seed,
            "tune": cfg.tune.seed,
            "sampler": cfg.train.seed,  # scikit-learn's row sampling above train.max_rows_in_memory
        },
        "code": ctx.code.to_dict(),
        "packages": ctx.packages,
        "artifacts": {"sha256": summary.artifact_hashes or {}},
        "model": {"name": summary.model_name, "version": summary.model_version, "champion": summary.champion},
        "gate": summary.gate_reason,
        "metrics": summary.metrics,
        "cluster": summary.cluster,
        "stages": {"keys": summary.stage_keys, "cached": summary.cached_stages, "seconds": summary.stage_seconds},
    }
