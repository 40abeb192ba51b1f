"""Measuring a Ray Jobs working dir before upload, with Ray's own packaging rules.

Ray zips the working dir (``excludes`` plus ``.gitignore`` / ``.rayignore`` in
every folder) and the dashboard rejects it over 100 MiB only after zipping all
of it; this measures first and names the largest files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from raypipe.errors import ConfigError

MAX_UPLOAD_BYTES = 100 * 1024**2
"""Ray's dashboard accepts request bodies up to 100 MiB (``DASHBOARD_CLIENT_MAX_SIZE``);
the working dir is zipped without compression, so file sizes add up to the upload."""
_ZIP_ENTRY_OVERHEAD = 100  # local header + central directory entry, roughly, per file
_GITIGNORE_OFF_ENV = "RAY_RUNTIME_ENV_IGNORE_GITIGNORE"
_DEFAULT_EXCLUDES_ENV = "RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES"
_RAY_DEFAULT_EXCLUDES = ".git,.venv,venv,__pycache__"  # Ray 2.60's own, always applied to a working_dir


@dataclass
class UploadSize:
    """What Ray would zip from a working dir."""

    root: Path
    total_bytes: int = 0
    files: int = 0
    largest: list[tuple[str, int]] = field(default_factory=list)
    """The biggest files, ``(relative path, bytes)``, largest first."""

    @property
    def upload_bytes(self) -> int:
        return self.total_bytes + self.files * _ZIP_ENTRY_OVERHEAD


def _matcher(root: Path, patterns: Iterable[str]) -> Callable[[Path], bool] | None:
    from ray._private.thirdparty.pathspec import PathSpec

    lines = [ln for ln in patterns if ln.strip()]
    if not lines:
        return None
    spec = PathSpec.from_lines("gitwildmatch", lines)

    def match(p: Path) -> bool:
        rel = p.relative_to(root).as_posix()
        # Ray matches the path without a trailing slash, so "dir/" patterns hit
        # only the folder itself (and Ray then skips everything under it).
        return spec.match_file(rel) or (p.is_dir() and spec.match_file(rel + "/"))

    return match


def _ignore_file_matcher(folder: Path, name: str) -> Callable[[Path], bool] | None:
    f = folder / name
    if not f.is_file():
        return None
    return _matcher(folder, f.read_text().splitlines())


def working_dir_size(
    root: str | Path,
    excludes: Iterable[str] = (),
    *,
    include_gitignore: bool | None = None,
    top: int = 5,
) -> UploadSize:
    """Add up the files Ray would upload from ``root``.

    Follows Ray 2.60's packaging walk: Ray's default excludes (``.git``,
    ``.venv``, ``venv``, ``__pycache__``; ``RAY_OVERRIDE_RUNTIME_ENV_DEFAULT_EXCLUDES``)
    plus ``excludes``, gitignore-style patterns relative to ``root``; every
    folder's ``.gitignore`` (unless ``RAY_RUNTIME_ENV_IGNORE_GITIGNORE=1``) and
    ``.rayignore`` apply to what is under that folder; an excluded folder is not entered.
    """
    root = Path(root).expanduser().resolve()
    if include_gitignore is None:
        include_gitignore = os.environ.get(_GITIGNORE_OFF_ENV, "0") != "1"
    defaults = os.environ.get(_DEFAULT_EXCLUDES_ENV, _RAY_DEFAULT_EXCLUDES)
    size = UploadSize(root)
    sizes: list[tuple[int, str]] = []
    base = _matcher(root, [x.strip() for x in defaults.split(",") if x.strip()] + list(excludes))
    matchers: list[Callable[[Path], bool]] = [base] if base else []

    def walk(p: Path) -> None:
        added = 0
        if p.is_dir():
            for name in ((".gitignore",) if include_gitignore else ()) + (".rayignore",):
                m = _ignore_file_matcher(p, name)
                if m:
                    matchers.append(m)
                    added += 1
        try:
            if p != root and any(m(p) for m in matchers):
                return
            if p.is_symlink() and not p.exists():
                return
            if p.is_file():
                n = p.stat().st_size
                size.total_bytes += n
                size.files += 1
                sizes.append((n, p.relative_to(root).as_posix()))
            elif p.is_dir():
                for child in sorted(p.iterdir()):
                    walk(child)
        finally:
            for _ in range(added):
                matchers.pop()

    walk(root)
    sizes.sort(reverse=True)
    size.largest = [(rel, n) for n, rel in sizes[:top]]
    return size


def mib(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


def check_working_dir(
    root: str | Path, excludes: Iterable[str] = (), limit_bytes: int = MAX_UPLOAD_BYTES
) -> UploadSize:
    """Measure the working dir and fail before zipping anything if Ray would refuse it.

    Raises:
        ConfigError: over ``limit_bytes``, naming the largest files and how to exclude them.
    """
    size = working_dir_size(root, excludes)
    if size.upload_bytes > limit_bytes:
        biggest = ", ".join(f"{rel} ({mib(n)})" for rel, n in size.largest)
        raise ConfigError(
            f"the working dir {size.root} would upload {mib(size.upload_bytes)} in {size.files} files, over Ray's "
            f"{mib(limit_bytes)} limit for a job's working dir. Largest: {biggest}. Add them to 'excludes' in the "
            "runtime_env template (or to .rayignore), or put data on shared storage and point data.path at it"
        )
    return size
