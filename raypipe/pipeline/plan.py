"""``raypipe plan``: which stages a run would reuse and which it would run, and why. Starts no Ray.

For each enabled stage of the table it computes the key the run would compute (from file
metadata, config and code alone) and looks it up. A miss is explained against the entry the
last run of the same pipeline used: the modules whose code changed, the config keys that
changed, the data files that changed, an upstream stage that reruns, or a missing entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

from raypipe.config import PipelineConfig
from raypipe.errors import DataError
from raypipe.pipeline.cache import StageCache, stage_key
from raypipe.pipeline.codeversion import PACKAGE_ROOT, module_file
from raypipe.pipeline.run import prepare, serving
from raypipe.pipeline.stages.ingest import Ingested, listing
from raypipe.pipeline.table import NAMES, STAGES

CACHED, WILL_RUN, SKIPPED = "cached", "will run", "skipped"


@dataclass
class StagePlan:
    stage: str
    status: str
    """``cached``, ``will run`` or ``skipped``."""
    reasons: list[str] = field(default_factory=list)
    key: str | None = None


@dataclass
class Plan:
    name: str
    stages: list[StagePlan]

    @property
    def will_run(self) -> list[str]:
        return [s.stage for s in self.stages if s.status == WILL_RUN]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_run(
    cfg: PipelineConfig,
    *,
    tracking_uri: str | None = None,
    work_dir: str | None = None,
    serve_model: bool | None = None,
    use_cache: bool = True,
    rerun_from: str | None = None,
) -> Plan:
    """What ``raypipe run`` with the same arguments would reuse and run; nothing is run or written.

    Raises:
        DataError, SchemaError, ConfigError: as the run would, before starting Ray.
    """
    try:
        ctx = prepare(
            cfg,
            tracking_uri=tracking_uri,
            work_dir=work_dir,
            serve_model=serve_model,
            create=False,
            build_datasets=False,
        )
    except DataError as e:
        if not e.context.get("folder"):  # only "built-in dataset not built yet" is a plan, not an error
            raise
        why = f"{cfg.data.path} is not built yet: the run builds it, then runs every stage"
        # The table's switches read only the config and the serving decision.
        switches = SimpleNamespace(cfg=cfg, serving=serving(cfg, serve_model))
        return Plan(cfg.name, [StagePlan(s.name, WILL_RUN, [why]) for s in STAGES if s.enabled(switches)])
    cache = StageCache(ctx.paths.cache, enabled=use_cache, rerun_from=rerun_from, order=NAMES)
    last = cache.last(cfg.name)
    keys: dict[str, str] = {}
    out: list[StagePlan] = []
    for stage in STAGES:
        if not stage.enabled(ctx):
            out.append(StagePlan(stage.name, SKIPPED, [_disabled_reason(stage.name, ctx)]))
            continue
        if not stage.cached:
            out.append(StagePlan(stage.name, WILL_RUN, ["never cached: it runs every time"]))
            continue
        parts = stage.key_parts(ctx, keys)
        key = keys[stage.name] = stage_key(parts)
        reruns = {p.stage for p in out if p.status == WILL_RUN}
        if cache.forced(stage.name):
            why = "--no-cache" if not use_cache else f"--from {rerun_from}"
            out.append(StagePlan(stage.name, WILL_RUN, [why], key))
        elif _usable(cache, stage, key):
            out.append(StagePlan(stage.name, CACHED, [], key))
        else:
            out.append(StagePlan(stage.name, WILL_RUN, _why(ctx, cache, stage, parts, last, reruns), key))
    return Plan(cfg.name, out)


def _usable(cache: StageCache, stage, key: str) -> bool:
    """What the run checks: a complete entry that loads (a registered version still in the store)."""
    entry = cache.lookup(stage.name, key, getattr(stage.result, "REQUIRED", ()))
    if entry is None:
        return False
    try:
        stage.result.load(entry)
    except Exception:  # noqa: BLE001 - unusable entries are misses, as in the run
        return False
    return True


def _why(ctx, cache: StageCache, stage, parts: dict, last: dict[str, str], reruns: set[str]) -> list[str]:
    upstream = [u for u in stage.upstream if u in reruns]
    reasons = [f"upstream reruns: {', '.join(upstream)}"] if upstream else []
    prev_key = last.get(stage.name)
    prev = cache.parts_of(stage.name, prev_key) if prev_key else None
    if prev is None:
        if not reasons:
            reasons.append(
                "cache entry missing (no earlier run of this pipeline)"
                if prev_key is None
                else "cache entry missing (the last run's entry is gone)"
            )
        return reasons
    changed = [
        _path(m) for m in sorted(set(prev["code"]) | set(parts["code"])) if prev["code"].get(m) != parts["code"].get(m)
    ]
    if changed:
        reasons.append(
            "code changed: " + ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        )
    diffs = _config_diff(prev["config"], parts["config"])
    if diffs:
        reasons.append(
            "config changed: " + "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        )
    if "data" in parts["inputs"] and prev["inputs"].get("data") != parts["inputs"]["data"]:
        reasons.append("data fingerprint changed: " + _data_diff(ctx, cache, last))
    for u, k in parts["inputs"].items():
        if u != "data" and u not in upstream and prev["inputs"].get(u) != k:
            reasons.append(f"upstream {u} output differs from the last run's")
    if not reasons:
        reasons.append("cache entry missing (removed or incomplete)")
    return reasons


def _path(module: str) -> str:
    f = module_file(module)
    return str(f.relative_to(PACKAGE_ROOT.parent)) if f else module


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping contributes no key (an unset value)."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): d}


def _config_diff(old: dict, new: dict) -> list[str]:
    # Section paths already prefix the keys ("data.split" -> {"method": ...}): flatten each.
    a, b = _flat(old), _flat(new)
    return [
        f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


def _data_diff(ctx, cache: StageCache, last: dict[str, str]) -> str:
    """Which files were added, removed or modified since the last run's ingest."""
    entry = cache.root / "ingest" / last.get("ingest", "")
    try:
        before = {p: (s, m) for p, s, m in Ingested.load(entry).listing}
    except (OSError, ValueError, TypeError):
        return "the file listing differs"
    now = {p: (s, m) for p, s, m in listing(ctx.source)}
    added = sorted(set(now) - set(before))
    removed = sorted(set(before) - set(now))
    modified = sorted(p for p in set(now) & set(before) if now[p] != before[p])
    parts = [f"{what} {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}" for what, files in
             (("added", added), ("removed", removed), ("modified", modified)) if files]  # fmt: skip
    return "; ".join(parts) or "schema, filter or projection changed"


def _disabled_reason(name: str, ctx) -> str:
    if name == "register":
        return "register.enabled is false"
    if name == "report":
        return "report.enabled is false"
    if name == "serve":
        return "serving is off (--no-serve, serve.enabled: false, or nothing registered)"
    return "disabled"
