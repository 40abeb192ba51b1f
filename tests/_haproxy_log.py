"""HAProxy's access log, received over UDP syslog for the whole test session.

Serve's HAProxy logs each request (server, retries, termination state) to syslog at
``RAY_SERVE_HAPROXY_LOG_TARGET``; nothing listens on 127.0.0.1:514 in a test, so without this the
lines a fault test needs to explain a failed request are lost.
"""

from __future__ import annotations

import socket
import threading
import time


class SyslogCollector:
    """Collects (time.monotonic(), line) for every datagram sent to ``target``."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self.lines: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._run, name="haproxy-syslog", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                data = self._sock.recv(65535)
            except OSError:  # closed
                return
            with self._lock:
                self.lines.append((time.monotonic(), data.decode(errors="replace").strip()))

    def since(self, t0: float) -> list[str]:
        """Lines received at or after ``t0`` (a ``time.monotonic()``)."""
        with self._lock:
            return [line for t, line in self.lines if t >= t0]

    def close(self) -> None:
        self._sock.close()


collector: SyslogCollector | None = None
"""The session's collector (``start``), for the ``haproxy_log`` fixture."""


def start() -> SyslogCollector:
    global collector
    collector = SyslogCollector()
    return collector


def stop() -> None:
    global collector
    if collector is not None:
        collector.close()
        collector = None
