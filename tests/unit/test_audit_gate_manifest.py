"""Audit trail, the promotion gate's decision, and manifest comparison."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from raypipe.errors import ConfigError
from raypipe.pipeline import manifest
from raypipe.registry import audit
from raypipe.registry.gate import decide


def test_audit_appends_and_filters(tmp_path: Path) -> None:
    audit.record(tmp_path, "register", model="a", version="1", run_id="r1")
    audit.record(tmp_path, "alias_move", model="b", version="2", previous=None)
    with open(audit.audit_path(tmp_path), "a") as f:
        f.write('{"torn line\n')  # a killed writer must not hide later events
    audit.record(tmp_path, "gate", model="a", version="1", promote=False, reason="worse")
    events = audit.read(tmp_path)
    assert [e["event"] for e in events] == ["register", "alias_move", "unreadable", "gate"]
    assert "previous" not in events[1]  # None fields are dropped
    assert {"ts", "user", "host", "command"} <= events[0].keys()
    assert [e["event"] for e in audit.read(tmp_path, model="a")] == ["register", "gate"]
    assert [e["event"] for e in audit.read(tmp_path, run_id="r1")] == ["register"]
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    assert audit.read(tmp_path, since=future) == []
    assert len(audit.read(tmp_path, since=audit.parse_when("1h"))) == 3


def test_parse_when() -> None:
    assert audit.parse_when("2026-11-24").tzinfo is not None
    assert audit.parse_when("7d") < dt.datetime.now(dt.UTC) - dt.timedelta(days=6)
    with pytest.raises(ConfigError, match="cannot read time 'yesterday'"):
        audit.parse_when("yesterday")


def test_gate_floors_and_regression() -> None:
    m = {"auc": 0.80, "logloss": 0.40}
    first = decide(m, "auc", floors={}, max_regression=0.001)
    assert first.promote and "no champion yet" in first.reason
    floor = decide(m, "auc", floors={"auc": 0.85}, max_regression=0.001)
    assert not floor.promote and "auc 0.8 fails the floor auc >= 0.85" in floor.reason
    ceiling = decide(m, "auc", floors={"logloss": 0.3}, max_regression=0.001)
    assert not ceiling.promote and "logloss <= 0.3" in ceiling.reason
    ok = decide(m, "auc", floors={}, max_regression=0.001, champion_version="3", champion_score=0.8005)
    assert ok.promote  # within the allowed regression
    worse = decide(m, "auc", floors={}, max_regression=0.001, champion_version="3", champion_score=0.81)
    assert not worse.promote and "champion stays on v3" in worse.reason
    # Lower is better for logloss: a smaller value wins.
    better = decide(m, "logloss", floors={}, max_regression=0.0, champion_version="3", champion_score=0.45)
    assert better.promote


def test_manifest_compare_lists_changes() -> None:
    code = manifest.code_info()
    pkgs = manifest.package_versions()
    old = {"code": code.to_dict(), "packages": pkgs, "data": {"fingerprint": "aaa"}}
    assert manifest.compare(old, code=code, packages=pkgs, fingerprint="aaa") == []
    changed = manifest.compare(
        {**old, "packages": {**pkgs, "xgboost": "0.1"}, "code": {"source_sha256": "x"}},
        code=code,
        packages=pkgs,
        fingerprint="bbb",
    )
    assert any(c.startswith("package changed: xgboost 0.1 ->") for c in changed)
    assert any(c.startswith("code changed") for c in changed)
    assert any("data changed: fingerprint aaa -> bbb" in c for c in changed)
    assert {"ray", "xgboost", "mlflow", "python"} <= pkgs.keys()
    assert json.dumps(code.to_dict())
