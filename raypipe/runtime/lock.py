"""One run per work folder at a time: an OS file lock, released by the kernel when its process dies.

Two runs on one work folder would both train and register the same model twice; with the lock the
second fails at once (or, asked to, waits its turn and then finds the first's stages cached).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from raypipe.errors import BusyError

LOCK_FILE = "run.lock"


@contextlib.contextmanager
def work_lock(work_dir: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the work folder's lock for the block.

    Raises:
        BusyError: another process holds it and ``wait`` is false.
    """
    path = Path(work_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise BusyError(
                f"the work folder {work_dir} is in use by a raypipe run ({holder}); "
                "wait for it to finish, or pass --wait-lock to start when it does",
                work_dir=str(work_dir),
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            fcntl.flock(f, fcntl.LOCK_UN)
