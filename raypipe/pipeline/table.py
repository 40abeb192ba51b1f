"""The stage table: every stage declared once, in pipeline order.

    ingest -> profile -> quality -> preprocess -> train -> evaluate -> register -> report -> serve

Each entry names the stage, its function (whose parameters after ``ctx`` are the upstream
stages it reads, by name), its result type (how the cache stores it), the config it reads,
and what runs whether or not the result came from the cache. The code its cache key depends
on is computed from the function's module and everything that module imports
(:mod:`raypipe.pipeline.codeversion`). The orchestrator (:mod:`raypipe.pipeline.run`) and
``raypipe plan`` (:mod:`raypipe.pipeline.plan`) are loops over this table; adding a stage
means one entry here and one module in ``stages/``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raypipe.pipeline.cache import key_parts
from raypipe.pipeline.codeversion import code_hashes
from raypipe.pipeline.stages import evaluate, ingest, preprocess, profile, quality, register, report, serve, train

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext


def _always(ctx: RunContext) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Any]
    """``run(ctx, **upstream_results) -> result``."""
    result: type
    """Has ``save(folder)``, ``load(folder)`` and ``REQUIRED`` files (cached stages)."""
    config: tuple[str, ...] = ()
    """Dotted config paths the stage reads (``data.split``, ``train``): part of its cache key."""
    describe: Callable[[RunContext, Any], str] = lambda ctx, result: ""
    """The detail of its progress line."""
    record: Callable[[RunContext, Any], None] | None = None
    """Runs after the result is known, computed or cached: checks, MLflow logging."""
    extra_key: Callable[[RunContext], dict[str, Any]] | None = None
    """Inputs of the key beyond config and upstream keys (the declared contract, the store)."""
    enabled: Callable[[RunContext], bool] = _always
    """A disabled stage is skipped; stages reading it get ``None`` for it."""
    cached: bool = True

    @property
    def upstream(self) -> tuple[str, ...]:
        return tuple(inspect.signature(self.run).parameters)[1:]

    @property
    def module(self) -> str:
        return self.run.__module__

    def key_parts(self, ctx: RunContext, keys: dict[str, str]) -> dict[str, Any]:
        """The parts of this stage's cache key, given the keys of the stages that ran before it."""
        inputs = {u: keys[u] for u in self.upstream if u in keys} or {"data": ctx.fingerprint}
        config = config_slice(ctx.cfg, self.config) | (self.extra_key(ctx) if self.extra_key else {})
        return key_parts(self.name, code=code_hashes(self.module), config=config, inputs=inputs)


STAGES: tuple[Stage, ...] = (
    Stage(
        "ingest",
        ingest.ingest,
        ingest.Ingested,
        config=(
            "data.path",
            "data.sql",
            "data.iceberg",
            "data.filter",
            "data.columns",
            "data.validate_files",
            "data.quality.schema_drift",
        ),
        describe=ingest.describe,
        record=ingest.record,
    ),
    Stage(
        "profile",
        profile.profile,
        profile.Profiled,
        config=("data", "features"),
        describe=profile.describe,
        record=profile.check,
        extra_key=profile.key_inputs,
    ),
    Stage("quality", quality.quality, quality.QualityResult, ("data.quality",), quality.describe, quality.record),
    Stage("preprocess", preprocess.preprocess, preprocess.Prepared, ("features",), preprocess.describe),
    Stage("train", train.train, train.Trained, ("train", "tune"), train.describe, train.record),
    Stage("evaluate", evaluate.evaluate, evaluate.Evaluated, ("evaluate",), evaluate.describe, evaluate.record),
    Stage(
        "register",
        register.register,
        register.Registered,
        config=("register",),
        describe=register.describe,
        record=register.record,
        extra_key=register.key_inputs,
        enabled=lambda ctx: ctx.cfg.register.enabled,
    ),
    Stage(
        "report",
        report.report,
        report.Reported,
        config=("report",),
        describe=report.describe,
        record=report.record,
        enabled=lambda ctx: ctx.cfg.report.enabled,
    ),
    Stage("serve", serve.serve, serve.Served, describe=serve.describe, enabled=lambda ctx: ctx.serving, cached=False),
)
NAMES = tuple(s.name for s in STAGES)


def config_slice(cfg, paths: tuple[str, ...]) -> dict[str, Any]:
    """``{"train": {...}, "data.split": {...}}``: the config values at each dotted path, as JSON."""
    dumped = cfg.model_dump(mode="json")
    out = {}
    for path in paths:
        node = dumped
        for part in path.split("."):
            node = node[part]
        out[path] = node
    return out
