"""Threshold checks and alert delivery (log line + Slack-compatible webhook).

Delivery never raises: an unreachable webhook is retried with exponential
backoff and the outcome is recorded in the monitor result, so a broken
webhook can neither crash the monitor nor hide the alert (the exit code and
the log line still carry it).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger("raypipe.monitor")


@dataclass(frozen=True)
class Alert:
    """One threshold crossing."""

    metric: str
    """``psi``, ``ks``, ``category_shift``, ``null_rate_change``, ``out_of_schema_rate``,
    ``prediction_psi``, ``performance_drop``, ``latency_p95_ms``."""
    value: float
    threshold: float
    feature: str | None = None
    """The feature, or ``None`` for model-level checks (prediction drift, performance, latency)."""

    def describe(self) -> str:
        where = f"feature '{self.feature}'" if self.feature else "model"
        return f"{where}: {self.metric} {self.value:.4g} > {self.threshold:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Delivery:
    """What happened to the webhook POST."""

    url: str
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def slack_payload(model: str, alerts: list[Alert], report_path: str | None, window: str) -> dict[str, Any]:
    """Slack incoming-webhook JSON: ``text`` (every receiver shows it) plus ``blocks``."""
    features = sorted({a.feature for a in alerts if a.feature})
    head = f":rotating_light: raypipe monitor: {len(alerts)} alert(s) for {model} ({window})"
    if features:
        head += f"; drifted features: {', '.join(features)}"
    lines = [f"• {a.describe()}" for a in alerts[:30]]
    if len(alerts) > 30:
        lines.append(f"… and {len(alerts) - 30} more")
    if report_path:
        lines.append(f"report: {report_path}")
    return {
        "text": head,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": head}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
        ],
        "raypipe": {"model": model, "window": window, "alerts": [a.to_dict() for a in alerts]},
    }


def post_webhook(
    url: str, payload: dict[str, Any], *, timeout_s: float = 5.0, attempts: int = 4, backoff_s: float = 0.5
) -> Delivery:
    """POST ``payload`` as JSON; retry connection errors and 5xx/429 with doubling delays.

    Returns:
        The outcome; it never raises.
    """
    body = json.dumps(payload).encode()
    error, status = None, None
    for attempt in range(1, attempts + 1):
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - URL from the config
                status = resp.status
                return Delivery(url=_redact(url), delivered=True, attempts=attempt, status=status)
        except urllib.error.HTTPError as e:
            status, error = e.code, f"HTTP {e.code}"
            if e.code < 500 and e.code != 429:  # the receiver refuses the payload: retrying will not help
                break
        except ValueError as e:  # not an http(s) URL: retrying will not help
            error = f"bad webhook URL: {e}"
            break
        except (urllib.error.URLError, OSError) as e:
            error = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        if attempt < attempts:
            time.sleep(backoff_s * 2 ** (attempt - 1))
    log.error("alert webhook %s not delivered after %d attempt(s): %s", _redact(url), attempt, error)
    return Delivery(url=_redact(url), delivered=False, attempts=attempt, status=status, error=error)


def _redact(url: str) -> str:
    """Slack webhook URLs are secrets: keep scheme, host and the first path segment."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    first = parts.path.strip("/").split("/")[0] if parts.path.strip("/") else ""
    tail = "/…" if parts.path.strip("/").count("/") else ""
    return f"{parts.scheme}://{parts.netloc}/{first}{tail}"
