"""Webhook delivery against a real HTTP server on 127.0.0.1: retries, backoff, never raising."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from raypipe.monitor.alerts import Alert, post_webhook, slack_payload


def _server(statuses: list[int]):
    """Answers POSTs with ``statuses`` in turn (the last one repeats); records bodies and times."""
    seen: list[tuple[float, dict]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            seen.append((time.monotonic(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            code = statuses[min(len(seen) - 1, len(statuses) - 1)]
            self.send_response(code)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/hook", seen


@pytest.fixture
def alerts() -> list[Alert]:
    return [
        Alert("psi", 0.61, 0.2, "num_3"),
        Alert("category_shift", 0.5, 0.1, "cat_1"),
        Alert("prediction_psi", 0.3, 0.2),
    ]


def test_payload_is_slack_shaped(alerts):
    p = slack_payload("flights", alerts, "/tmp/r.html", "24h")
    assert p["text"].startswith(":rotating_light:") and "cat_1, num_3" in p["text"]
    assert [b["type"] for b in p["blocks"]] == ["section", "section"]
    assert "model: prediction_psi 0.3 > 0.2" in p["blocks"][1]["text"]["text"]
    json.dumps(p)  # plain JSON


def test_server_errors_are_retried_with_backoff_until_delivered(alerts):
    srv, url, seen = _server([500, 503, 200])
    try:
        d = post_webhook(url, slack_payload("m", alerts, None, "w"), attempts=4, backoff_s=0.1)
    finally:
        srv.shutdown()
        srv.server_close()
    assert d.delivered and d.attempts == 3 and d.status == 200 and len(seen) == 3
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # 0.1 s, then doubled
    assert seen[0][1] == seen[2][1]


def test_client_error_is_not_retried(alerts):
    srv, url, seen = _server([400])
    try:
        d = post_webhook(url, slack_payload("m", alerts, None, "w"), attempts=4, backoff_s=0.01)
    finally:
        srv.shutdown()
        srv.server_close()
    assert not d.delivered and d.attempts == 1 and d.status == 400 and len(seen) == 1


def test_unreachable_webhook_is_reported_never_raised(alerts, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    d = post_webhook(f"http://127.0.0.1:{port}/T0/B0/secret", {"text": "x"}, attempts=3, backoff_s=0.05, timeout_s=1)
    assert not d.delivered and d.attempts == 3 and ("Connection" in d.error or "refused" in d.error)
    assert time.monotonic() - t0 >= 0.15  # 0.05 + 0.1 of backoff
    assert "secret" not in d.url and "not delivered" in caplog.text and "secret" not in caplog.text


def test_malformed_url_is_reported(alerts):
    d = post_webhook("not a url", {"text": "x"}, attempts=2, backoff_s=0)
    assert not d.delivered and d.error
