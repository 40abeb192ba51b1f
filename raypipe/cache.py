"""Stage cache: each stage's output is stored under a key built from what produced it.

A key hashes the stage name, the source of the modules the stage runs (its code
version), its resolved config section and the keys of the stages it reads, so a
change anywhere upstream changes every key downstream (Hamilton's rule). An entry
is a folder that becomes visible only when complete (written to a temp folder,
then renamed), so a killed run leaves no half entry; a later run resumes from
the last finished stage. An entry whose files are gone is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raypipe.orphans import host_tag, owner_gone

log = logging.getLogger(__name__)

_PACKAGE = Path(__file__).resolve().parent
_DONE = "_done.json"
CACHED = "cached ·"
"""First word of a stage's detail line when its output came from the cache."""


def code_version(modules: Sequence[str]) -> str:
    """sha256 over the source files (paths relative to the package, e.g. ``data/ingest.py``, or folders)."""
    h = hashlib.sha256()
    for rel in modules:
        path = _PACKAGE / rel
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(_PACKAGE)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def stage_key(stage: str, *, code: Sequence[str], config: Any, inputs: Sequence[str] = ()) -> str:
    """The cache key of one stage run."""
    payload = json.dumps(
        {"stage": stage, "code": code_version(code), "config": config, "inputs": list(inputs)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


class StageCache:
    """Folders ``<root>/<stage>/<key>/`` holding one finished stage output each.

    Args:
        root: the cache folder (``work_dir/cache``).
        enabled: ``False`` (``--no-cache``) never reads, but still writes, so the next run can reuse.
        rerun_from: stages at or after this one are recomputed (``--from STAGE``).
        order: the stage names in pipeline order, to interpret ``rerun_from``.
    """

    def __init__(self, root: Path, *, enabled: bool = True, rerun_from: str | None = None, order: Sequence[str] = ()):
        if rerun_from is not None and rerun_from not in order:
            from raypipe.errors import ConfigError

            raise ConfigError(f"--from '{rerun_from}' is not a stage; stages are: {', '.join(order)}")
        self.root = root
        self.enabled = enabled
        self._forced = set(order[order.index(rerun_from) :]) if rerun_from else set()

    def lookup(self, stage: str, key: str, required: Sequence[str] = ()) -> Path | None:
        """The entry's folder if it is complete and holds every ``required`` file, else ``None``."""
        if not self.enabled or stage in self._forced:
            return None
        entry = self.root / stage / key
        if not (entry / _DONE).is_file():
            return None
        if any(not (entry / r).exists() for r in required):
            return None
        return entry

    def meta(self, entry: Path) -> dict[str, Any]:
        return json.loads((entry / _DONE).read_text())

    @contextmanager
    def write(self, stage: str, key: str, meta: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a temp folder to fill; it becomes the entry only if the block finishes."""
        final = self.root / stage / key
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphaned_temps(final.parent)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-{host_tag()}-{os.getpid()}-", dir=final.parent))
        try:
            yield tmp
            (tmp / _DONE).write_text(json.dumps(meta or {}, default=str))
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def reuse_or_run(self, stage: str, key: str, cls, compute: Callable[[], Any], detail: list[str]):
        """``cls.load`` of the entry under ``key``, or ``compute()`` stored there.

        ``cls`` has ``load(folder)``, ``REQUIRED`` file names, and its results ``save(folder)``.
        A reused output is marked by ``CACHED`` as the first item of ``detail``.
        """
        entry = self.lookup(stage, key, getattr(cls, "REQUIRED", ()))
        if entry is not None:
            try:
                result = cls.load(entry)
                detail.append(CACHED)
                return result
            except Exception as e:  # noqa: BLE001 - an unreadable entry is a miss, never an error
                log.warning("cache entry %s for %s is unusable (%s); recomputing", entry, stage, e)
        result = compute()
        with self.write(stage, key, {"stage": stage}) as tmp:
            result.save(tmp)
        if hasattr(result, "moved"):  # outputs whose files live in their entry follow the rename
            result.moved(self.root / stage / key)
        return result


def _remove_orphaned_temps(stage_dir: Path) -> None:
    """Remove temp folders (``.<key>-<host>-<pid>-<random>``) whose writer on this host is gone:
    a run killed outright (SIGKILL, OOM) leaves its half-written entry, model files and all."""
    for tmp in stage_dir.glob(".*-*-*-*"):
        if tmp.is_dir() and owner_gone(tmp.name):
            shutil.rmtree(tmp, ignore_errors=True)
