"""Shared by the security tests: the TCP listen sockets of a process tree.

Importable from any test (pytest puts ``tests/`` on sys.path for the root conftest).
"""

from __future__ import annotations


def listeners(root_pids: list[int]) -> list[tuple[str, int, int, str]]:
    """(ip, port, pid, process name) of every TCP listen socket under these process trees.

    The name is the kernel's, 15 characters: a Ray worker's title is cut (``ray::ServeRepli``).
    """
    import psutil

    procs: list[psutil.Process] = []
    for pid in root_pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    out = []
    for p in procs:
        try:
            for conn in p.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((conn.laddr.ip, conn.laddr.port, p.pid, p.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def is_loopback(ip: str) -> bool:
    ip = ip.removeprefix("::ffff:")
    return ip.startswith("127.") or ip == "::1"
