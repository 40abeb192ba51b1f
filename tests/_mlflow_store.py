"""Fresh MLflow SQLite stores for tests, copied from one migrated store.

Creating a store runs MLflow's schema migrations: about 1.5 s of CPU per new file, paid by every test
that starts from an empty store. A copy of an empty migrated store is the same store.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path

_lock = threading.Lock()
_template: Path | None = None


def sqlite_store(folder: Path, name: str = "mlflow.db") -> str:
    """The store at ``folder/name``, created empty and migrated if it is not there; returns its URI."""
    global _template
    if (folder / name).exists():
        return f"sqlite:///{folder / name}"
    with _lock:
        if _template is None:
            from mlflow import MlflowClient

            root = Path(tempfile.mkdtemp(prefix="rp-mlflow-template-"))
            atexit.register(shutil.rmtree, root, True)
            MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}").search_experiments()  # migrates
            _template = root / "mlflow.db"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template, folder / name)
    return f"sqlite:///{folder / name}"
