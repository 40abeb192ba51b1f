"""The audit trail: an append-only JSON Lines file of who did what to which model.

It lives in the work dir, beside the default MLflow store. One ``write`` per
event, opened with O_APPEND, so concurrent writers never interleave lines.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

AUDIT_FILE = "audit.jsonl"


def audit_path(work_dir: Path) -> Path:
    return work_dir / AUDIT_FILE


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return str(os.getuid())


def record(work_dir: Path, event: str, **fields: Any) -> dict[str, Any]:
    """Append one event and return it. ``None`` fields are dropped."""
    entry = {
        "ts": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "event": event,
        "user": _user(),
        "host": socket.gethostname(),
        "command": shlex.join(sys.argv),
        **{k: v for k, v in fields.items() if v is not None},
    }
    path = audit_path(work_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return entry


def read(
    work_dir: Path,
    *,
    model: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    run_id: str | None = None,
) -> list[dict[str, Any]]:
    """Events, oldest first, filtered by model name, time window (UTC) and MLflow run."""
    path = audit_path(work_dir)
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            e = json.loads(line)
        except ValueError:
            # A torn last line from a killed writer must not hide the rest.
            e = {"event": "unreadable", "line": n}
        ts = _parse_ts(e.get("ts"))
        if model and e.get("model") != model:
            continue
        if run_id and e.get("run_id") != run_id:
            continue
        if since and (ts is None or ts < since):
            continue
        if until and (ts is None or ts > until):
            continue
        out.append(e)
    return out


def _parse_ts(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None


def parse_when(text: str) -> dt.datetime:
    """``2026-11-24``, ``2026-11-24T10:00`` or a relative ``30m``/``6h``/``7d`` ago, as UTC."""
    from raypipe.errors import ConfigError

    units = {"m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"cannot read time '{text}': use 2026-11-24, 2026-11-24T10:00 or 6h / 7d ago") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
