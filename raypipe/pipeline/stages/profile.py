"""profile: assign each row its split, compute per-split column statistics, infer the task and contract."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from raypipe.data.profile import SPLIT_NAMES, ColumnStats, Profile, combine, compute_profile, profile_pass
from raypipe.data.schema import Contract, id_named, infer_contract
from raypipe.data.split import SPLIT_COLUMN
from raypipe.errors import DataError
from raypipe.pipeline.stages import _datasets
from raypipe.pipeline.stages._io import read_json, write_json

if TYPE_CHECKING:
    from raypipe.config import PipelineConfig
    from raypipe.pipeline.context import RunContext
    from raypipe.pipeline.stages.ingest import Ingested


@dataclass
class Profiled:
    profile: Profile
    contract: Contract
    rows: dict[str, int]
    """Labelled rows per split: the rows the model trains, stops early and is tested on."""
    example: dict[str, Any]
    dropped: dict[str, int] = field(default_factory=dict)
    """Rows per split left out for a null label."""
    repeated_ids: int | None = None
    """``data.id_column`` hashes seen more than once (0: every id unique; ``None``: not screened)."""

    REQUIRED = ("profile.json", "contract.json", "meta.json")

    @property
    def train_stats(self) -> dict[str, ColumnStats]:
        """The train split's statistics (all rows' when the split is empty)."""
        return self.profile.get("train") or combine(self.profile)

    def save(self, d: Path) -> None:
        # Not asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs.
        stats = {
            split: {c: {**vars(v), "levels": dict(v.levels)} for c, v in cols.items()}
            for split, cols in self.profile.items()
        }
        write_json(d / "profile.json", stats)
        self.contract.save(d / "contract.json")
        meta = {"rows": self.rows, "example": self.example, "dropped": self.dropped, "repeated_ids": self.repeated_ids}
        write_json(d / "meta.json", meta)

    @classmethod
    def load(cls, d: Path) -> Profiled:
        profile: Profile = {}
        for split, cols in read_json(d / "profile.json").items():
            profile[split] = {}
            for name, raw in cols.items():
                s = ColumnStats()
                s.merge(raw)
                profile[split][name] = s
        meta = read_json(d / "meta.json")
        contract = Contract.load(d / "contract.json")
        return cls(profile, contract, meta["rows"], meta["example"], meta.get("dropped", {}), meta.get("repeated_ids"))

    @property
    def notes(self) -> list[str]:
        if not any(self.dropped.values()):
            return []
        where = " / ".join(f"{s} {n:,}" for s, n in self.dropped.items())
        return [f"{sum(self.dropped.values()):,} rows with a null label left out ({where}); not in the row counts"]


def profile(ctx: RunContext, ingest: Ingested) -> Profiled:
    """Per-split column statistics, the inferred contract, split sizes and an example row."""
    cfg = ctx.cfg
    schema = _datasets.schema(ctx)
    # The id screen rides on this pass, so the quality stage need not group every id (a shuffle).
    screen = cfg.data.id_column if cfg.data.quality.duplicate_ids != "off" else None
    scanned = profile_pass(_datasets.with_split(ctx), SPLIT_COLUMN, level_columns(cfg, schema), screen)
    stats_by_split = scanned.profile
    stats = combine(stats_by_split)
    if not stats:
        raise DataError(f"the dataset under '{cfg.data.source_name}' is empty (0 rows); check it and data.filter")
    train_stats = stats_by_split.get("train", stats)
    contract = infer_contract(schema, stats, train_stats, cfg.data, cfg.features, _datasets.declared(ctx))
    contract.notes.extend(rare_class_notes(contract, stats_by_split))
    label = {s: stats_by_split[s][cfg.data.label] if s in stats_by_split else ColumnStats() for s in SPLIT_NAMES}
    rows = {s: st.count - st.nulls for s, st in label.items()}
    dropped = {s: st.nulls for s, st in label.items()}
    example = json_row(_datasets.source(ctx).take_batch(3, batch_format="pyarrow"), contract)
    contract.example = example  # saved with the model: the docs' and the try-it page's example
    return Profiled(stats_by_split, contract, rows, example, dropped, scanned.repeated_ids)


def level_columns(cfg: PipelineConfig, schema: pa.Schema) -> list[str]:
    """Numeric columns whose values are counted like categories: declared ones, and integer columns
    named like ids (a repeated key is used as a category; a row id is told apart by its counts)."""
    ids = [f.name for f in schema if id_named(f.name) and pa.types.is_integer(f.type)]
    return list(dict.fromkeys([*cfg.features.categorical, *ids]))


def rare_class_notes(contract: Contract, stats_by_split: Profile) -> list[str]:
    """The stated policy for classes too rare to reach every split: kept in the model; where a split
    lacks them, their metrics there are undefined and averages run over the classes present."""
    if contract.label.task != "multiclass":
        return []
    notes = []
    for cls in contract.label.classes or []:
        counts = {s: (stats_by_split.get(s, {}).get(contract.label.name) or ColumnStats()).levels.get(cls, 0)
                  for s in SPLIT_NAMES}  # fmt: skip
        missing = [s for s, n in counts.items() if n == 0]
        if missing:
            where = ", ".join(f"{s} {n}" for s, n in counts.items())
            notes.append(
                f"class '{cls}' has {sum(counts.values())} labelled rows ({where}): kept as a class; it is absent "
                f"from {' and '.join(missing)}, so its metrics there are undefined and multiclass averages "
                "(auc_ovr) run over the classes present"
            )
    return notes


def key_inputs(ctx: RunContext) -> dict[str, Any]:
    """The declared contract's content is an input too: editing the file reruns the profile."""
    declared = _datasets.declared(ctx)
    return {"declared": declared.to_dict() if declared else None}


def check(ctx: RunContext, result: Profiled) -> None:
    """Cached or not, a run needs labelled rows in train and test."""
    if result.rows["train"] == 0 or result.rows["test"] == 0:
        raise DataError(f"too few labelled rows to split ({result.rows}); add data or change data.split")


def describe(ctx: RunContext, result: Profiled) -> str:
    c = result.contract
    return f"task={c.label.task} rows={result.rows} features={len(c.features)}"


def json_row(batch: pa.Table, contract: Contract) -> dict[str, Any]:
    """The first row's features, JSON-ready (for the smoke request and the curl example)."""
    row = batch.select(contract.feature_names).slice(0, 1).to_pylist()[0]
    out = {}
    for k, v in row.items():
        if isinstance(v, float):
            v = float(f"{v:.6g}") if math.isfinite(v) else None  # float32 noise out of the example
        elif isinstance(v, (dt.datetime, dt.date)):
            v = v.isoformat()
        out[k] = v
    return out


def infer_schema(cfg: PipelineConfig, address: str | None = None) -> Contract:
    """Profile the data (all rows) and return the inferred contract: ``raypipe schema infer``."""
    from raypipe.data import ingest, sources
    from raypipe.runtime import connect, resolve_paths

    paths = resolve_paths(cfg)
    _, source = sources.open_source(cfg.data, paths.datasets)
    session = connect(address or cfg.runtime.address, cfg.runtime.num_cpus, log_to_driver=False)
    names = cfg.data.columns or source.schema.names
    schema = pa.schema([source.schema.field(n) for n in names])
    if isinstance(source, sources.WarehouseSource):
        rows = sources.read_warehouse(source, session.total_cpus)
        rows = rows.select_columns(cfg.data.columns) if cfg.data.columns else rows
    else:
        rows = ingest.read(source, cfg.data.columns)
    stats = combine(compute_profile(rows, None, level_columns(cfg, schema)))
    if not stats:
        raise DataError(f"the dataset under '{cfg.data.source_name}' is empty (0 rows)")
    return infer_contract(schema, stats, stats, cfg.data, cfg.features)
