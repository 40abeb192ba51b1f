"""The run manifest: everything needed to explain and repeat a run, as one JSON file.

Config hash, data fingerprint, every seed, the code version (git commit, dirty
flag, package source hash), package versions, artifact hashes, the Ray cluster
shape and the stage cache keys. ``compare`` lists what differs between a
manifest and the present, for ``raypipe reproduce``.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from raypipe.cache import code_version

MANIFEST_FILE = "manifest.json"
_PACKAGES = ("raypipe", "ray", "xgboost", "scikit-learn", "mlflow", "pyarrow", "numpy", "pydantic", "pandas")
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CodeVersion:
    commit: str | None
    dirty: bool
    source_sha256: str
    diff: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"git_commit": self.commit, "git_dirty": self.dirty, "source_sha256": self.source_sha256}


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", *args], cwd=_SOURCE_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def code_info() -> CodeVersion:
    """The raypipe source's version: its git commit when it is a checkout, and always a source hash."""
    commit = _git("rev-parse", "HEAD")
    dirty = False
    diff = None
    if commit:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", "raypipe", "pyproject.toml")
        dirty = bool(status and status.strip())
        diff = _git("diff", "HEAD", "--", "raypipe", "pyproject.toml") if dirty else None
    return CodeVersion(commit.strip() if commit else None, dirty, code_version(["."]), diff)


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


def build(cfg, summary, *, data_path: str, files: int, code: CodeVersion, packages: dict[str, str]) -> dict[str, Any]:
    """The manifest of a finished run (``summary`` is its RunSummary)."""
    import datetime as dt

    return {
        "raypipe_manifest": 1,
        "name": cfg.name,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mlflow": {"tracking_uri": summary.tracking_uri, "run_id": summary.run_id},
        "config_hash": summary.config_hash,
        "config": cfg.model_dump(mode="json"),
        "data": {"path": data_path, "fingerprint": summary.data_fingerprint, "files": files, "rows": summary.rows},
        "seeds": {
            "split": cfg.data.split.seed,
            "xgboost": cfg.train.seed,
            "tune": getattr(cfg.tune, "seed", None),
            "sampler": cfg.train.seed,  # scikit-learn's row sampling above train.max_rows_in_memory
        },
        "code": code.to_dict(),
        "packages": packages,
        "artifacts": {"sha256": summary.artifact_hashes or {}},
        "model": {"name": summary.model_name, "version": summary.model_version, "champion": summary.champion},
        "gate": summary.gate_reason,
        "metrics": summary.metrics,
        "cluster": summary.cluster,
        "stages": {"keys": summary.stage_keys, "cached": summary.cached_stages, "seconds": summary.stage_seconds},
    }
