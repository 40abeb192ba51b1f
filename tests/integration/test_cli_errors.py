"""`raypipe run` failures: one `error:` line on stderr, the error's exit code, a traceback only
with --debug. Real subprocesses; all but the empty-dataset case fail before Ray starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from _mlflow_store import sqlite_store

from raypipe.errors import ConfigError, DataError, RaypipeError, SchemaError

pytestmark = pytest.mark.integration


def _cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    # A user's shell: no cluster address or redirected stores, and no RAY_AUTH_MODE (an in-process
    # ray.init, e.g. the session Ray of other tests, sets it in os.environ and it would leak in here).
    leaked = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAYPIPE_HOME", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in leaked}
    env["COLUMNS"] = "80"  # a narrow terminal must not wrap the error line
    return subprocess.run(
        [sys.executable, "-m", "raypipe", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _config(folder: Path, data: dict, **sections) -> Path:
    raw = {"data": data, "runtime": {"work_dir": str(folder / "work")}, "serve": {"port": 0}, **sections}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _write_data(folder: Path, rows: int = 50) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    table = pa.table(
        {"x": rng.normal(size=rows), "c": pa.array(rng.choice(["a", "b"], rows)), "y": rng.random(rows) > 0.5}
    )
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def _assert_one_error_line(proc: subprocess.CompletedProcess, exit_code: int) -> str:
    assert proc.returncode == exit_code, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def _assert_ray_not_started(proc: subprocess.CompletedProcess) -> None:
    # The CLI reports each finished stage on stdout; the first is connecting to Ray.
    assert "ray " not in proc.stdout and "CPUs" not in proc.stdout


def test_exit_codes_are_distinct_per_error_class() -> None:
    codes = {cls: cls.exit_code for cls in (ConfigError, DataError, RaypipeError)}
    assert len(set(codes.values())) == 3 and RaypipeError.exit_code == 1
    assert SchemaError.exit_code == DataError.exit_code


def test_missing_data_path(tmp_path: Path) -> None:
    config = _config(tmp_path, {"path": str(tmp_path / "nowhere"), "label": "y"})
    proc = _cli("run", str(config), cwd=tmp_path)
    line = _assert_one_error_line(proc, DataError.exit_code)
    assert f"'{tmp_path / 'nowhere'}' does not exist" in line and "data.path" in line
    _assert_ray_not_started(proc)


def test_unknown_config_key_suggests_the_right_one(tmp_path: Path) -> None:
    config = _config(tmp_path, {"path": "d", "label": "y"}, train={"num_boost_rounds": 5})
    proc = _cli("run", str(config), cwd=tmp_path)
    line = _assert_one_error_line(proc, ConfigError.exit_code)
    assert "unknown key 'train.num_boost_rounds'" in line and "did you mean 'train.num_boost_round'" in line
    _assert_ray_not_started(proc)


@pytest.mark.parametrize("item", ["train.num_boost_round", "=5"])
def test_bad_set(tmp_path: Path, item: str) -> None:
    config = _config(tmp_path, {"path": str(_write_data(tmp_path / "data")), "label": "y"})
    proc = _cli("run", str(config), "--set", item, cwd=tmp_path)
    line = _assert_one_error_line(proc, ConfigError.exit_code)
    assert f"bad --set '{item}'" in line
    _assert_ray_not_started(proc)


def test_set_with_unknown_key(tmp_path: Path) -> None:
    config = _config(tmp_path, {"path": str(_write_data(tmp_path / "data")), "label": "y"})
    proc = _cli("run", str(config), "--set", "serve.prot=0", cwd=tmp_path)
    line = _assert_one_error_line(proc, ConfigError.exit_code)
    assert "did you mean 'serve.port'" in line


def test_label_not_in_data(tmp_path: Path) -> None:
    config = _config(tmp_path, {"path": str(_write_data(tmp_path / "data")), "label": "target"})
    proc = _cli("run", str(config), cwd=tmp_path)
    line = _assert_one_error_line(proc, SchemaError.exit_code)
    assert "label column 'target'" in line and "x, c, y" in line
    _assert_ray_not_started(proc)


def test_missing_config_file(tmp_path: Path) -> None:
    proc = _cli("run", "nope.yaml", cwd=tmp_path)
    line = _assert_one_error_line(proc, ConfigError.exit_code)
    assert "'nope.yaml' not found" in line


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = _config(tmp_path, {"path": str(tmp_path / "nowhere"), "label": "y"})
    proc = _cli("--debug", "run", str(config), cwd=tmp_path)
    assert proc.returncode == DataError.exit_code
    assert "Traceback" in proc.stderr and "DataError" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: ")


# --- one case that gets as far as starting Ray ------------------------------------------


@pytest.fixture(scope="module")
def empty_dataset_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    tmp = tmp_path_factory.mktemp("cli-empty")
    folder = tmp / "data"
    folder.mkdir()
    for name in ("a", "b"):
        empty = pa.table({"x": pa.array([], pa.float64()), "y": pa.array([], pa.bool_())})
        pq.write_table(empty, folder / f"{name}.parquet")
    config = _config(tmp, {"path": str(folder), "label": "y"}, runtime={"work_dir": str(tmp / "work"), "num_cpus": 1})
    uri = sqlite_store(tmp)
    return _cli("run", str(config), "--no-serve", "--tracking-uri", uri, cwd=tmp, timeout=180), folder


def test_empty_dataset_exit_code_and_message(empty_dataset_run) -> None:
    proc, folder = empty_dataset_run
    assert proc.returncode == DataError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.startswith("error: ") and f"'{folder}' is empty (0 rows)" in last
    assert "CPUs" in proc.stdout  # this one did get past connecting to Ray


def test_empty_dataset_error_is_the_only_stderr_line(empty_dataset_run) -> None:
    proc, _ = empty_dataset_run
    _assert_one_error_line(proc, DataError.exit_code)
