"""What a pipeline run returns, and the timer that records each stage of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from raypipe.pipeline.cache import CACHED

if TYPE_CHECKING:
    from raypipe.pipeline.context import RunContext

Reporter = Callable[[str, float, str], None]
"""Called after each stage with (stage, seconds, one-line detail)."""


@dataclass
class RunResult:
    """The outcome of ``raypipe run``: metrics, the registered version and the gate's decision, paths.

    Example:
        >>> result = raypipe.run(raypipe.load_config("jobs/flights.yaml"))  # doctest: +SKIP
        >>> result.metrics["test_auc"], result.model_version, result.champion  # doctest: +SKIP
        (0.79, '1', True)
    """

    name: str
    config_hash: str
    data_fingerprint: str
    task: str
    rows: dict[str, int]
    """Labelled rows per split (train, valid, test)."""
    metrics: dict[str, float]
    """Test-split metrics, ``test_``-prefixed."""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    work_dir: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    champion: bool | None = None
    """Whether this version took the alias (``register.alias``)."""
    gate_reason: str | None = None
    gate: dict[str, Any] | None = None
    """The gate's decision in full: its verdict and both versions' metrics (``GateDecision``)."""
    endpoint: str | None = None
    example: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    stage_keys: dict[str, str] = field(default_factory=dict)
    cached_stages: list[str] = field(default_factory=list)
    artifact_hashes: dict[str, str] | None = None
    cluster: dict[str, Any] | None = None
    manifest_path: str | None = None
    report_path: str | None = None
    tune: dict[str, Any] | None = None
    """The Ray Tune search (best model, params and score, trial count) when ``tune.enabled``."""

    @property
    def model_uri(self) -> str | None:
        """``models:/<name>/<version>`` of the registered version."""
        return f"models:/{self.model_name}/{self.model_version}" if self.model_version else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, ctx: RunContext) -> RunResult:
        """The result as far as the run got (stages not run yet leave their fields empty)."""
        r = ctx.results
        prof, ev, fit = r.get("profile"), r.get("evaluate"), r.get("train")
        reg, rep, served = r.get("register"), r.get("report"), r.get("serve")
        out = cls(
            name=ctx.cfg.name,
            config_hash=ctx.config_hash,
            data_fingerprint=ctx.fingerprint,
            task=prof.contract.label.task if prof else "",
            rows=prof.rows if prof else {},
            metrics=ev.report.prefixed() if ev else {},
            stage_seconds=dict(ctx.stage_seconds),
            run_id=ctx.tracker.run_id,
            experiment_id=ctx.tracker.experiment_id,
            tracking_uri=ctx.paths.tracking_uri,
            work_dir=str(ctx.paths.work_dir),
            example=prof.example if prof else None,
            stage_keys=dict(ctx.keys),
            cached_stages=list(ctx.cached),
        )
        if "ingest" in r:
            out.notes += r["ingest"].notes
        if prof:
            out.notes += prof.contract.notes + prof.notes
        if "quality" in r:
            out.notes += r["quality"].notes
        if fit is not None:
            out.notes += [fit.sampling] if fit.sampling else []
            out.tune = {k: v for k, v in fit.tune.items() if k != "trials"} if fit.tune else None
        if reg is not None:
            out.model_name, out.model_version = reg.model_name, reg.model_version
            out.champion, out.gate_reason, out.artifact_hashes = reg.champion, reg.gate_reason, reg.hashes
            out.gate = reg.gate or None
        if rep is not None:
            out.report_path = str(rep.folder / "report.html")
        if served is not None:
            out.endpoint, out.prediction = served.endpoint, served.prediction
        if ctx.session is not None and ctx.budget is not None:
            s = ctx.session
            out.cluster = {"cpus": s.total_cpus, "nodes": s.num_nodes, "budget": asdict(ctx.budget)}
        return out


class StageTimer:
    """Times each stage, reports it, and records it as a nested MLflow run."""

    def __init__(self, report: Reporter | None, tracker, seconds: dict[str, float], cached: list[str]) -> None:
        self.seconds = seconds
        self.cached = cached
        self._report = report
        self._tracker = tracker

    @contextmanager
    def stage(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        t0 = time.perf_counter()
        yield detail
        self.seconds[name] = round(time.perf_counter() - t0, 3)
        cached = bool(detail) and detail[0] == CACHED
        if cached:
            self.cached.append(name)
        text = " ".join(d for d in detail if d)
        if self._report:
            self._report(name, self.seconds[name], text)
        self._tracker.stage(name, self.seconds[name], cached, text)
