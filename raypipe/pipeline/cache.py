"""Stage cache: each stage's output is stored under a key built from what produced it.

A key hashes the stage name, the source of the modules the stage runs (its code
version, :mod:`raypipe.pipeline.codeversion`), its resolved config and the keys of the
stages it reads, so a change anywhere upstream changes every key downstream (Hamilton's
rule). An entry is a folder that becomes visible only when complete (written to a temp
folder, then renamed), so a killed run leaves no half entry; a later run resumes from the
last finished stage. An entry whose files are gone is a miss, never an error. Each entry
keeps the parts of its key (``_done.json``), so ``raypipe plan`` can say why a key changed.
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

from raypipe.runtime.orphans import host_tag, owner_gone

log = logging.getLogger(__name__)

_DONE = "_done.json"
_LAST = "last"
CACHED = "cached ·"
"""First word of a stage's detail line when its output came from the cache."""


def key_parts(stage: str, *, code: dict[str, str], config: Any, inputs: dict[str, str]) -> dict[str, Any]:
    """What a stage's key is made of: its code (module -> digest), config and upstream keys."""
    return {"stage": stage, "code": code, "config": config, "inputs": inputs}


def stage_key(parts: dict[str, Any]) -> str:
    """The cache key of one stage run, from :func:`key_parts`."""
    payload = json.dumps(parts, sort_keys=True, default=str)
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

    def forced(self, stage: str) -> bool:
        """Whether ``stage`` is recomputed whatever its key (``--no-cache``, ``--from``)."""
        return not self.enabled or stage in self._forced

    def remember(self, pipeline: str, keys: dict[str, str]) -> None:
        """Record the keys a run of ``pipeline`` used, for ``raypipe plan`` to compare against."""
        path = self.root / _LAST / f"{pipeline}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(keys, indent=1))
        os.replace(tmp, path)

    def last(self, pipeline: str) -> dict[str, str]:
        """The stage keys the last run of ``pipeline`` used (empty when none ran)."""
        try:
            return json.loads((self.root / _LAST / f"{pipeline}.json").read_text())
        except (OSError, ValueError):
            return {}

    def parts_of(self, stage: str, key: str) -> dict[str, Any] | None:
        """The key parts stored with an entry (None: no such entry, or one written before parts were kept)."""
        try:
            return self.meta(self.root / stage / key).get("parts")
        except (OSError, ValueError):
            return None

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

    def reuse_or_run(
        self, stage: str, key: str, cls, compute: Callable[[], Any], detail: list[str], parts: dict | None = None
    ):
        """``cls.load`` of the entry under ``key``, or ``compute()`` stored there (with its key ``parts``).

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
        with self.write(stage, key, {"stage": stage, "parts": parts}) as tmp:
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
