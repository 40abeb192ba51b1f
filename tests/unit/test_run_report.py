"""Run report, model card and drift report: content, and a real render in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from raypipe.config import ReportConfig

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CARD = ReportConfig(
    intended_use="Rank flights by delay risk for ops staffing.",
    limitations="Trained on 2013 NYC departures only.",
    owners=["ml-team@example.com"],
    slice_columns=["origin"],
    bootstrap_samples=30,
)


def _binary(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.18), 0, 1)
    return y, s, rng.choice(["EWR", "JFK", "LGA"], n, p=[0.5, 0.3, 0.2])


def _write(out: Path, task: str = "binary"):
    from raypipe.report import write_run_report

    y, s, origin = _binary()
    names = ["false", "true"]
    if task == "regression":
        s = y + np.random.default_rng(1).normal(0, 0.3, len(y))
        names = None
    return write_run_report(
        out,
        task=task,
        y_true=y,
        scores=s,
        class_names=names,
        feature_importance={"dep_hour": 120.5, "carrier": 80.0, "temp": 12.25},
        slices={"origin": origin},
        quality={"findings": [], "null_rates": {"temp": 0.01}},
        data_summary={"rows": {"train": 32000, "valid": 4000, "test": 4000}, "features": 3},
        manifest={"name": "flights", "model_name": "flights", "model_version": "3", "seed": 42, "data": "fp-abc"},
        gate={"champion": True, "reason": "auc 0.81 beats v2 (0.80)"},
        card=CARD,
    )


def test_binary_report_and_model_card(tmp_path):
    paths = _write(tmp_path)
    html = paths.html.read_text()
    assert set(paths.plots) == {"roc", "pr", "calibration", "confusion", "importance"}
    assert html.count("data:image/png;base64,") == 5 and 'src="http' not in html  # self-contained
    for text in (
        "Rank flights by delay risk",
        "Trained on 2013 NYC",
        "Metrics by origin",
        "auc 0.81 beats v2",
        "fp-abc",
    ):
        assert text in html
    card = paths.model_card.read_text()
    assert "## Intended use\nRank flights" in card and "ml-team@example.com" in card and "![roc](plots/roc.png)" in card
    # The AUC line: value inside its bootstrap CI, and a CI of plausible width for 4,000 rows.
    m = re.search(r"\| auc \| ([\d.]+) \| \[([\d.]+), ([\d.]+)\] \|", card)
    v, lo, hi = map(float, m.groups())
    assert lo < v < hi and 0.01 < hi - lo < 0.1
    # One slice row per origin, largest first.
    assert re.findall(r"\| (EWR|JFK|LGA) \| (\d+) \|", card)[0][0] == "EWR"


def test_regression_report_has_residuals_not_roc(tmp_path):
    paths = _write(tmp_path, "regression")
    assert set(paths.plots) == {"residuals", "importance"} and "| rmse |" in paths.model_card.read_text()


def _drift_result():
    from raypipe.monitor.alerts import Alert
    from raypipe.monitor.checks import FeatureDrift
    from raypipe.monitor.job import MonitorResult

    edges = list(np.linspace(-3, 3, 41))
    ref = np.histogram(np.random.default_rng(0).normal(0, 1, 5000), edges)[0].tolist()
    cur = np.histogram(np.random.default_rng(1).normal(1, 1, 5000), edges)[0].tolist()
    num = FeatureDrift("num_3", "numeric", 5000, 0.0, 0.0, 0.0, psi=0.9, ks=0.38, flagged_by=["psi", "ks"],
                       plot={"edges": edges, "ref": ref, "cur": cur})  # fmt: skip
    levels = {"levels": ["a", "b", "c"], "ref": [50, 30, 20], "cur": [49, 31, 20], "new_levels": {}}
    cat = FeatureDrift("cat_1", "categorical", 5000, 0.03, 0.03, 0.0, psi=0.01, category_shift=0.01, plot=levels)
    return MonitorResult(
        model="synth", window={"since": None, "until": None}, rows=5000, requests=1250, features=[num, cat],
        prediction={"psi": 0.05, "ks": 0.04, "plot": {"edges": edges, "ref": ref, "cur": ref}},
        volume={"rows": 5000, "requests": 1250, "latency_ms": {"p50": 4.5, "p95": 9.0, "p99": 12.0}},
        performance=None, alerts=[Alert("psi", 0.9, 0.2, "num_3"), Alert("ks", 0.38, 0.1, "num_3")],
        insufficient_data=False,
    )  # fmt: skip


def test_drift_report_lists_flagged_features(tmp_path):
    from raypipe.report import write_drift_report

    html = write_drift_report(_drift_result(), tmp_path / "drift.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "drifted features: num_3" in html
    assert html.index("num_3") < html.index("cat_1")  # flagged first


def _render(page: Path, tmp_path: Path, name: str) -> tuple[str, Path]:
    """Headless Chromium: the DOM after load (with the image-check marker) and a screenshot."""
    flags = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--user-data-dir={tmp_path / ('profile-' + name)}", "--virtual-time-budget=5000",
    ]  # fmt: skip
    url = page.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True).stdout
    png = tmp_path / f"{name}.png"
    subprocess.run([*flags, f"--screenshot={png}", "--window-size=1200,2000", url], capture_output=True,
                   timeout=120, check=True)  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(png, ARTIFACTS / png.name)
    return dom, png


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_reports_render_in_headless_chromium_with_images_loaded(tmp_path):
    from raypipe.report import write_drift_report

    run = _write(tmp_path / "run")
    drift = write_drift_report(_drift_result(), tmp_path / "drift.html")
    for page, name, n_images in ((run.html, "run_report", 5), (drift, "drift_report", 3)):
        dom, png = _render(page, tmp_path, name)
        total = re.search(r'data-images-total="(\d+)"', dom)
        loaded = re.search(r'data-images-loaded="(\d+)"', dom)
        assert total and loaded, f"{name}: the page's load handler did not run"
        assert int(total.group(1)) == int(loaded.group(1)) == n_images, f"{name}: images failed to decode"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000  # not a blank page


def test_multiclass_report_has_confusion_matrix_per_class(tmp_path):
    from raypipe.report import write_run_report

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 900)
    p = rng.dirichlet([1, 1, 1], 900)
    p[np.arange(900), y] += 1.0
    p /= p.sum(axis=1, keepdims=True)
    paths = write_run_report(
        tmp_path, task="multiclass", y_true=y, scores=p, class_names=["a", "b", "c"], feature_importance={},
        slices={}, quality={}, data_summary={}, manifest={}, gate={}, card=CARD,
    )  # fmt: skip
    assert set(paths.plots) == {"confusion", "calibration"}
    assert json.loads(paths.metrics.read_text())["metrics"]["accuracy"]["value"] > 0.6
