"""The served API's OpenAPI document and its docs page, over real HTTP through Serve.

Schemathesis generates requests from ``/openapi.json`` for every documented operation (schema-valid
and schema-violating bodies, parameters and headers) and checks each answer: no 5xx, a documented
status code and content type, and a body that fits the documented response schema. ``/docs`` is
rendered in headless Chromium behind a recording proxy: every request it makes goes to the server.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socketserver
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from _serving import MODEL_NAME, RECORD, deployed, request, tiny_store

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25
"""Per operation and generation mode: the whole fuzz stays well under a minute on 2 shared cores."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return tiny_store(tmp_path_factory.mktemp("openapi-store"))


@pytest.fixture(scope="module")
def served(ray_session, store) -> Iterator[str]:
    with deployed(store[0], "openapi", log_dir=str(store[1] / "predictions")) as url:
        yield url


def test_openapi_lists_the_contract_fields_and_the_fastapi_defaults_are_off(served) -> None:
    status, doc = request(served + "/openapi.json", None, "GET")
    assert status == 200 and doc["openapi"] == "3.0.3"
    record = doc["components"]["schemas"]["Record"]
    assert record["required"] == ["distance", "carrier", "weekend"]
    assert record["additionalProperties"] is False  # the default unknown_fields: reject
    assert record["properties"]["carrier"]["x-categories"] == ["UA", "B6", "EV"]  # unseen_categories: missing
    assert "enum" not in record["properties"]["carrier"] and "minimum" not in record["properties"]["distance"]
    assert {"/predict", "/v1/models/{name}:predict", "/invocations", "/healthz", "/metadata"} <= set(doc["paths"])
    # The example is the server's own: it scores.
    status, body = request(served + "/predict", json.dumps(record["example"]).encode())
    assert status == 200, body
    assert request(served + "/redoc", None, "GET")[0] == 404  # its JS would come from a CDN
    assert request(served + "/docs/swagger-ui.js.map", None, "GET")[0] == 404  # only the listed assets


def test_every_operation_answers_as_documented(served) -> None:
    """Schemathesis over real HTTP: 0 server errors, 0 answers outside the documented schema."""
    import requests
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import Failure, FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(served + "/openapi.json")
    session = requests.Session()
    operations, cases, failures = 0, 0, []

    def call(case, label: str) -> None:
        nonlocal cases
        cases += 1
        try:
            case.call_and_validate(session=session, checks=checks, timeout=30)
        except (Failure, FailureGroup) as e:
            failures.append(f"{label}: {_titles(e)} body={str(case.body)[:200]} headers={case.headers}")

    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1
        for name, example in _examples(op).items():  # the documented examples, as sent by hand
            path = {"name": MODEL_NAME} if op.path_parameters else {}
            case = op.Case(body=example, media_type="application/json", path_parameters=path)
            call(case, f"{op.label} example {name}")
        if op.path_parameters:  # another model, and a name no route matches: both 404s are documented
            for other in ("other", "a/b"):
                case = op.Case(
                    body={"instances": [RECORD]}, media_type="application/json", path_parameters={"name": other}
                )
                call(case, f"{op.label} name {other!r}")
        modes = [schemathesis.GenerationMode.POSITIVE]
        if op.body or op.path_parameters or op.headers:
            modes.append(schemathesis.GenerationMode.NEGATIVE)
        for mode in modes:
            _fuzz(op, mode, call)
    totals = f"schemathesis: {operations} operations, {cases} cases, {len(failures)} failures"
    print(totals)
    assert operations >= 5
    assert failures == [], totals + "\n" + "\n".join(sorted(set(failures))[:20])


def _titles(e: Exception) -> str:
    """Each failure's title and message (a group holds one per check that failed)."""
    found = getattr(e, "exceptions", None) or [e]
    return "; ".join(f"{getattr(f, 'title', type(f).__name__)}: {str(getattr(f, 'message', f))[:300]}" for f in found)


def _fuzz(op, mode, call) -> None:
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # the same cases every run
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case) -> None:
        call(case, f"{op.label} {mode.value}")

    fuzz()


def _examples(op) -> dict[str, object]:
    body = op.definition.raw.get("requestBody", {}).get("content", {}).get("application/json", {})
    return {k: v["value"] for k, v in body.get("examples", {}).items()}


class _RecordingProxy(http.server.BaseHTTPRequestHandler):
    """A forward proxy for the browser: records every request (its URL and Referer), forwards
    those to the served host and refuses any other."""

    allowed: str = ""
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Referer")))
        parts = urlsplit(self.path)
        if parts.netloc != self.allowed:
            self.send_error(403)
            return
        with urllib.request.urlopen(self.path, timeout=30) as resp:
            body = resp.read()
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.headers.get("Content-Type", "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_CONNECT(self) -> None:  # https: never to the served host
        self.seen.append(("https://" + self.path, self.headers.get("Referer")))
        self.send_error(403)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_docs_render_the_fields_and_fetch_nothing_from_other_hosts(served, tmp_path) -> None:
    status, page = request(served + "/docs", None, "GET")
    assert status == 200 and "http://" not in page and "https://" not in page
    with urllib.request.urlopen(served + "/docs", timeout=30) as resp:  # the browser enforces it too
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
    handler = type("Proxy", (_RecordingProxy,), {"allowed": urlsplit(served).netloc, "seen": []})
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        flags = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}", "--proxy-bypass-list=<-loopback>",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
        ]  # fmt: skip
        dom = subprocess.run([*flags, "--dump-dom", served + "/docs"], capture_output=True, text=True, timeout=120)
        png = tmp_path / "serve_docs.png"
        subprocess.run([*flags, f"--screenshot={png}", "--window-size=1280,2400", served + "/docs"],
                       capture_output=True, timeout=120, check=True)  # fmt: skip
        proxy.shutdown()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(png, ARTIFACTS / png.name)
    # What the page loads carries its Referer; Chromium's own calls (clock, updates) carry none.
    page_loads = [u for u, referer in handler.seen if referer]
    assert page_loads and all(urlsplit(u).netloc == handler.allowed for u in page_loads), page_loads
    assert {urlsplit(u).path for u in page_loads} >= {"/openapi.json", "/docs/swagger-ui-bundle.js"}
    browser = {urlsplit(u).hostname for u, referer in handler.seen if not referer} - {"127.0.0.1"}
    assert all(h.endswith(("google.com", "googleapis.com")) for h in browser), browser
    # Swagger UI rendered the document: the operations and the record's fields are on the page.
    for text in ("/predict", "/invocations", "Record", *RECORD):
        assert text in dom.stdout, text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
