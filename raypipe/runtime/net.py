"""Host names and ports: what counts as this machine, and a free port to listen on."""

from __future__ import annotations

import socket

# Client-side host names that mean "this machine" (a URL naming 0.0.0.0 connects locally).
_THIS_MACHINE = {"localhost", "0.0.0.0", "::1", "::", ""}


def _is_this_machine(host: str) -> bool:
    host = host.lower()
    return host in _THIS_MACHINE or host.startswith("127.")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now on ``host`` (tests and ``serve.port: 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
