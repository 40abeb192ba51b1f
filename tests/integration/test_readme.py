"""The README's Python example runs as written (on the session's Ray, in a fresh project folder)."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Use from Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_example_runs(ray_session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    monkeypatch.chdir(tmp_path)  # the example's default work folder is ./.raypipe
    gcs = ray.get_runtime_context().gcs_address
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(_python_example(), str(README), "exec"), {})
    lines = out.getvalue().splitlines()
    stages = ["ingest", "profile", "quality", "preprocess", "train", "evaluate", "register", "report"]
    assert lines[0] == str(stages)
    assert re.fullmatch(r"AUC 0\.\d{3}, models:/quickstart/1, champion: True", lines[1]), lines[1]
    assert lines[2].startswith("{'prediction': [") and "'probabilities': [{" in lines[2]
    assert lines[3].startswith("refused: record 0 field 'num_0'"), lines[3]
    assert (tmp_path / ".raypipe" / "mlflow.db").is_file()
    # run() stops only a Ray it started: this one was up before (it stopped it, once, and every
    # test after this one ran on an implicit Ray without the session's settings).
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == gcs
