"""The try-it page at ``GET /`` in headless Chromium, against the tiny model on a real Serve app:
prefilled from the contract, predicting what ``/predict`` answers, explaining with bars, naming
rejected fields, falling back to ``/predict``, and fetching nothing from any other host.

Chromium is driven by Playwright's Python package with the system browser (no browser download).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from _serving import CONTRACT, MODEL_NAME, deployed, request, tiny_store, tiny_table

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's /usr/bin/chromium is a shell wrapper; Playwright wants the real binary when it is there.
BINARY = "/usr/lib/chromium/chromium" if Path("/usr/lib/chromium/chromium").exists() else CHROMIUM
SCREENSHOT = Path(__file__).resolve().parents[1] / "artifacts" / "serve_page.png"
EXAMPLE = {k: v for k, v in tiny_table(1, seed=3).to_pylist()[0].items() if k != "delayed"}
# A real row as the example, and a distance never null in training: clearing it is a 422 naming it.
PAGE_CONTRACT = dataclasses.replace(
    CONTRACT,
    features=[dataclasses.replace(CONTRACT.features[0], nullable=False), *CONTRACT.features[1:]],
    example=EXAMPLE,
)

if CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return tiny_store(tmp_path_factory.mktemp("page-store"), PAGE_CONTRACT)


@pytest.fixture(scope="module")
def served(ray_session, store) -> Iterator[str]:
    with deployed(store[0], "page") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=BINARY, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, served):
    """A fresh page on the server; records every request URL and every console error or page error."""
    ctx = browser.new_context(viewport={"width": 1100, "height": 720})
    pg = ctx.new_page()
    pg.requested = []
    pg.errors = []
    pg.on("request", lambda r: pg.requested.append(r.url))

    def on_console(m) -> None:
        # 4xx answers are logged as "Failed to load resource": expected here, unlike a CSP violation.
        if m.type == "error" and "Failed to load" not in m.text:
            pg.errors.append(m.text)

    pg.on("console", on_console)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def _shown(value) -> str:
    """How the page writes a JSON value (JavaScript's ``String``)."""
    return value if isinstance(value, str) else json.dumps(value)


def _predict_over_http(url: str, record: dict) -> dict:
    status, body = request(url + "/predict", json.dumps(record).encode())
    assert status == 200, body
    return body


def test_page_predicts_what_the_api_answers_and_draws_the_contributions(page, served) -> None:
    resp = page.goto(served + "/")
    assert resp.status == 200 and resp.headers["content-type"].startswith("text/html")
    assert MODEL_NAME in page.locator("h1").inner_text() and "v1" in page.locator("h1").inner_text()
    assert page.get_by_label("distance").input_value() == str(EXAMPLE["distance"])
    assert page.get_by_label("carrier").input_value() == EXAMPLE["carrier"]
    assert page.get_by_label("weekend").input_value() == _shown(EXAMPLE["weekend"])

    carrier = next(c for c in CONTRACT.features[1].categories if c != EXAMPLE["carrier"])
    page.get_by_label("carrier").select_option(carrier)
    page.get_by_role("button", name="Predict").click()
    page.locator("#result").wait_for(state="visible")

    want = _predict_over_http(served, EXAMPLE | {"carrier": carrier})
    assert page.locator("#prediction").inner_text() == _shown(want["prediction"][0])
    probs = dict(zip(page.locator("#probs .name").all_inner_texts(), page.locator("#probs .val").all_inner_texts()))
    assert probs == {k: f"{v:.3f}" for k, v in want["probabilities"][0].items()}

    bars = page.locator("#contribs .row")
    assert bars.count() > 0, "no contributions chart: is POST /explain deployed?"
    named = [bars.nth(i).get_attribute("data-field") for i in range(bars.count())]
    assert set(named) <= set(CONTRACT.feature_names), named  # raw fields, not encoded columns
    assert page.locator("#contribs .bar.pos, #contribs .bar.neg").count() == len(named)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert all(u.startswith(served + "/") for u in page.requested), page.requested
    assert any(u.endswith("/explain") for u in page.requested), page.requested
    assert page.errors == []  # no script error, no Content-Security-Policy violation


def test_page_shows_the_servers_message_next_to_the_fields_it_names(page, served) -> None:
    page.goto(served + "/")
    page.get_by_label("distance").fill("")  # never null in training: a 422 naming the field
    page.get_by_role("button", name="Predict").click()
    page.locator("#d0.bad").wait_for()
    assert page.locator("#m0").inner_text() != "" and page.locator("#status").inner_text() != ""
    assert page.locator("#result").is_hidden()

    page.get_by_label("distance").fill("99999")  # outside the training range: scored, flagged
    page.get_by_role("button", name="Predict").click()
    page.locator("#result").wait_for(state="visible")
    assert page.locator("#m0.warn").inner_text() != ""
    assert page.errors == [] and all(u.startswith(served + "/") for u in page.requested)


def test_page_falls_back_to_predict_when_the_model_cannot_be_explained(page, served) -> None:
    """A scikit-learn model answers /explain with a 422 that names no input: predict, without a chart."""
    msg = "explanations need an XGBoost model"
    reason = {"error": msg, "detail": [{"field": "explain", "msg": msg, "type": "unsupported_model"}]}
    page.route("**/explain", lambda route: route.fulfill(status=422, json=reason))
    page.goto(served + "/")
    page.get_by_role("button", name="Predict").click()
    page.locator("#result").wait_for(state="visible")
    want = _predict_over_http(served, EXAMPLE)
    assert page.locator("#prediction").inner_text() == _shown(want["prediction"][0])
    assert page.locator("#contrib-box").is_hidden() and page.locator("#contribs .row").count() == 0
    assert [u.rsplit("/", 1)[1] for u in page.requested[1:]] == ["explain", "predict"]
