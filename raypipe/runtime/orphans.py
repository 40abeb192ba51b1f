"""Leftovers of processes killed outright (SIGKILL, OOM): who owned a temp folder, and is it gone.

Folders named ``<prefix>-<host tag>-<pid>-<random>`` can be removed by the next run on the
same host once their pid no longer exists; another host's pid means nothing here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def host_tag() -> str:
    """8 hex characters naming this host in temp-folder names: a pid means nothing on another
    host sharing the disk."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def owner_gone(name: str) -> bool:
    """Whether a ``<prefix>-<host tag>-<pid>-<random>`` name belongs to a process of this host that is gone."""
    parts = name.rsplit("-", 3)
    if len(parts) != 4:
        return False
    host, pid = parts[1], parts[2]
    return host == host_tag() and pid.isdigit() and not pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _marks_dir() -> Path:
    return Path(tempfile.gettempdir()) / "raypipe-sessions"


def mark_session(session_dir: str) -> None:
    """Record that this process started the local Ray of ``session_dir`` (read by :func:`sweep_sessions`)."""
    d = _marks_dir()
    d.mkdir(mode=0o700, exist_ok=True)
    mark = d / f"{host_tag()}-{os.getpid()}.json"
    mark.write_text(json.dumps({"pid": os.getpid(), "session_dir": session_dir}))


def sweep_sessions() -> list[int]:
    """Stop what is left of local Rays whose raypipe driver was killed outright (``kill -9``).

    Ray's agents (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive a SIGKILLed driver by
    minutes, holding ports. They are found by their own session folder (in their command line or
    among their open files), never by process names, so another Ray on this host is left alone.
    Returns the pids stopped.
    """
    d = _marks_dir()
    if not d.is_dir():
        return []
    stopped: list[int] = []
    for mark in d.glob(f"{host_tag()}-*.json"):
        try:
            info = json.loads(mark.read_text())
        except (OSError, ValueError):
            mark.unlink(missing_ok=True)
            continue
        if pid_alive(int(info["pid"])):
            continue
        stopped += _stop_session(info["session_dir"])
        mark.unlink(missing_ok=True)
    return stopped


def _stop_session(session_dir: str) -> list[int]:
    import psutil

    prefix = session_dir.rstrip("/") + "/"
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "uids"]):
        try:
            if p.info["uids"] is None or p.info["uids"].real != os.getuid() or p.pid == os.getpid():
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if prefix in cmd or session_dir + " " in cmd or any(f.path.startswith(prefix) for f in p.open_files()):
                os.kill(p.pid, signal.SIGKILL)
                found.append(p.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    if found:
        log.warning("stopped %d process(es) left by a killed raypipe run's Ray (%s)", len(found), session_dir)
    return found
