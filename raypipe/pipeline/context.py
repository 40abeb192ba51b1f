"""What every stage of one run can reach: the config, where things live, the source's metadata,
the tracker, and Ray once it is connected.

Stages take the context and their upstream results; they never read globals. Things several
stages derive (the Ray Datasets over the source) are memoised here with :meth:`RunContext.memo`,
but built by functions in the stage modules, so a stage's cache key sees the code that built them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from raypipe.config import PipelineConfig
    from raypipe.data.ingest import Source
    from raypipe.pipeline.codeversion import CodeVersion
    from raypipe.registry.tracking import Tracker
    from raypipe.runtime import CpuBudget, Paths, RaySession

T = TypeVar("T")


@dataclass
class RunContext:
    cfg: PipelineConfig
    paths: Paths
    source: Source
    data_path: str
    """``data.path`` resolved (``dataset://flights`` -> its local folder)."""
    columns: list[str]
    """The columns read: ``data.columns`` or every column of the source."""
    fingerprint: str
    config_hash: str
    tracker: Tracker
    serving: bool
    """Deploy to Ray Serve at the end (``--no-serve`` and ``serve.enabled`` decide; needs registration)."""
    session: RaySession | None = None
    budget: CpuBudget | None = None
    code: CodeVersion | None = None
    """The raypipe source's version (git commit, dirty flag, source hash)."""
    packages: dict[str, str] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each finished stage (and of ``ray``), in order."""
    cached: list[str] = field(default_factory=list)
    """Stages whose result came from the cache."""
    results: dict[str, Any] = field(default_factory=dict)
    """Results of the stages that have finished (or were reused) so far, by stage name."""
    keys: dict[str, str] = field(default_factory=dict)
    """Cache keys of those stages."""
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    def memo(self, name: str, build: Callable[[], T]) -> T:
        """``build()`` once per run, then the same object (lazy Ray Datasets, the declared contract)."""
        if name not in self._memo:
            self._memo[name] = build()
        return self._memo[name]

    @property
    def model_name(self) -> str:
        return self.cfg.register.model_name or self.cfg.name
