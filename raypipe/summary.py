"""What a pipeline run returns, and the timer that records each stage of it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from raypipe.cache import CACHED

Reporter = Callable[[str, float, str], None]
"""Called after each stage with (stage, seconds, one-line detail)."""


@dataclass
class RunSummary:
    name: str
    config_hash: str
    data_fingerprint: str
    task: str
    rows: dict[str, int]
    metrics: dict[str, float]
    stage_seconds: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    champion: bool | None = None
    gate_reason: str | None = None
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StageTimer:
    """Times each stage, reports it, and records it as a nested MLflow run."""

    def __init__(self, report: Reporter | None, tracker) -> None:
        self.seconds: dict[str, float] = {}
        self.cached: list[str] = []
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
        text = " ".join(detail)
        if self._report:
            self._report(name, self.seconds[name], text)
        self._tracker.stage(name, self.seconds[name], cached, text)
