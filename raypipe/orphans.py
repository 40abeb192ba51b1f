"""Leftovers of processes killed outright (SIGKILL, OOM): who owned a temp folder, and is it gone.

Folders named ``<prefix>-<host tag>-<pid>-<random>`` can be removed by the next run on the
same host once their pid no longer exists; another host's pid means nothing here.
"""

from __future__ import annotations

import hashlib
import os
import socket


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
