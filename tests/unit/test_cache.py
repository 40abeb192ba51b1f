"""Stage cache: keys follow code, config and inputs; entries appear only when complete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from raypipe.errors import ConfigError
from raypipe.pipeline.cache import CACHED, StageCache, key_parts, stage_key
from raypipe.pipeline.codeversion import closure, code_hashes

ORDER = ("ingest", "profile", "train")


class _Out:
    REQUIRED = ("out.txt",)

    def __init__(self, text: str) -> None:
        self.text = text

    def save(self, d: Path) -> None:
        (d / "out.txt").write_text(self.text)

    @classmethod
    def load(cls, d: Path) -> _Out:
        return cls((d / "out.txt").read_text())


def _key(stage="train", code=None, config=None, inputs=None) -> str:
    code = {"raypipe.pipeline.cache": "a1"} if code is None else code
    return stage_key(key_parts(stage, code=code, config=config or {"eta": 0.1}, inputs=inputs or {"x": "abc"}))


def test_key_changes_with_config_inputs_and_stage() -> None:
    base = _key()
    assert base == _key()
    assert base != _key(config={"eta": 0.2})
    assert base != _key(inputs={"x": "abd"})
    assert base != _key(stage="evaluate")
    assert base != _key(code={"raypipe.pipeline.cache": "a2"})


def test_stage_code_is_the_import_closure_of_its_module() -> None:
    train = closure("raypipe.pipeline.stages.train")
    # What the stage runs, found through its imports (module level and inside functions)...
    assert {"raypipe.train", "raypipe.train.xgboost", "raypipe.train.tune", "raypipe.model"} <= set(train)
    # ...but not what only annotates (TYPE_CHECKING) or what it never reaches.
    assert "raypipe.pipeline.context" not in train and "raypipe.serve.app" not in train
    assert "raypipe.cli" not in train
    hashes = code_hashes("raypipe.pipeline.stages.ingest")
    assert "raypipe.data.ingest" in hashes and all(len(h) == 12 for h in hashes.values())


def test_reuse_then_miss_when_the_file_is_gone(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, order=ORDER)
    calls = []

    def compute() -> _Out:
        calls.append(1)
        return _Out("v1")

    d1: list[str] = []
    assert cache.reuse_or_run("train", "k1", _Out, compute, d1).text == "v1"
    d2: list[str] = []
    assert cache.reuse_or_run("train", "k1", _Out, compute, d2).text == "v1"
    assert len(calls) == 1 and d1 == [] and d2 == [CACHED]
    (tmp_path / "train" / "k1" / "out.txt").unlink()  # artifact gone: a miss, not an error
    assert cache.reuse_or_run("train", "k1", _Out, compute, []).text == "v1"
    assert len(calls) == 2


def test_failed_compute_leaves_no_entry(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, order=ORDER)

    class Boom(_Out):
        def save(self, d: Path) -> None:
            (d / "out.txt").write_text("partial")
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        cache.reuse_or_run("train", "k1", _Out, lambda: Boom("x"), [])
    assert cache.lookup("train", "k1", _Out.REQUIRED) is None
    assert list((tmp_path / "train").iterdir()) == []  # no temp folder left behind


def test_no_cache_and_rerun_from(tmp_path: Path) -> None:
    StageCache(tmp_path, order=ORDER).reuse_or_run("ingest", "k", _Out, lambda: _Out("a"), [])
    StageCache(tmp_path, order=ORDER).reuse_or_run("train", "k", _Out, lambda: _Out("a"), [])
    assert StageCache(tmp_path, enabled=False, order=ORDER).lookup("ingest", "k") is None
    forced = StageCache(tmp_path, rerun_from="profile", order=ORDER)
    assert forced.lookup("ingest", "k") is not None
    assert forced.lookup("train", "k") is None
    with pytest.raises(ConfigError, match="not a stage; stages are: ingest, profile, train"):
        StageCache(tmp_path, rerun_from="fit", order=ORDER)


def test_unreadable_entry_is_recomputed(tmp_path: Path) -> None:
    cache = StageCache(tmp_path, order=ORDER)
    cache.reuse_or_run("train", "k", _Out, lambda: _Out("a"), [])

    class Picky(_Out):
        @classmethod
        def load(cls, d: Path) -> _Out:
            raise ValueError("model version deleted")

    assert cache.reuse_or_run("train", "k", Picky, lambda: _Out("b"), []).text == "b"


def test_a_killed_writers_temp_folder_is_removed_by_the_next_write(tmp_path: Path) -> None:
    """SIGKILL mid-write leaves `.<key>-<host>-<pid>-*` behind; the next write on this host removes it."""
    import subprocess
    import sys

    from raypipe.runtime.orphans import host_tag

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stage = tmp_path / "train"
    orphan = stage / f".abc-{host_tag()}-{gone.pid}-x1"
    alive = stage / f".abc-{host_tag()}-{os.getpid()}-x2"  # a writer still running
    elsewhere = stage / f".abc-0000beef-{gone.pid}-x3"  # another host's writer: its pid means nothing here
    for d in (orphan, alive, elsewhere):
        (d / "model").mkdir(parents=True)
    with StageCache(tmp_path).write("train", "def") as tmp:
        (tmp / "f").write_text("x")
    assert not orphan.exists() and alive.is_dir() and elsewhere.is_dir()
    assert (stage / "def" / "f").read_text() == "x"
