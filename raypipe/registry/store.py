"""The MLflow store, reached through a client bound to one tracking URI: no global MLflow state.

Every function in ``raypipe.registry`` takes the tracking URI it works on. The one MLflow call
that reads only the global URI, ``Model.log`` (model logging has no client API), runs inside
:func:`scoped_uri`, which sets the URI for that call alone and restores it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from raypipe.errors import RegistryError

HASH_TAG = "raypipe.sha256."
"""Model-version tag prefix holding each bundle file's sha256 (``raypipe.sha256.model.ubj``)."""

_scope_lock = threading.Lock()

HTTP_DEFAULTS = {
    # MLflow's own defaults (120 s timeout, 7 retries with 2^n s backoff) keep a run silent for
    # more than 5 minutes when the tracking server goes away. With these an unreachable server
    # fails a call in about 5 s (connection refused) and a hung one in about 50 s (3 x 15 s).
    # Set in the environment, so Ray workers and Serve replicas started after this inherit them;
    # a value the user set wins.
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
for _name, _value in HTTP_DEFAULTS.items():
    os.environ.setdefault(_name, _value)


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (``http://user:secret@host`` -> ``http://user:***@host``)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not parts.password:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@lru_cache(maxsize=8)
def client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (tracking and registry in the same store)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def experiment_id(tracking_uri: str, name: str, artifact_root: Path | None = None) -> str:
    """The id of experiment ``name``, created if missing (artifacts under ``artifact_root`` for SQLite).

    Raises:
        RegistryError: the store is unreachable or refuses.
    """
    c = client(tracking_uri)
    try:
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        loc = artifact_root.as_uri() if artifact_root and tracking_uri.startswith("sqlite") else None
        return c.create_experiment(name, artifact_location=loc)
    except Exception as e:  # MLflow raises many types for an unreachable store
        raise RegistryError(f"cannot use MLflow tracking store '{tracking_uri}': {e}".splitlines()[0]) from e


@contextlib.contextmanager
def scoped_uri(tracking_uri: str, experiment_id: str) -> Iterator[None]:
    """Point MLflow's global tracking and registry URI, and its default experiment, at ours for one
    call, then restore them (and the environment variables MLflow sets beside them)."""
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    with _scope_lock:
        env = {n: os.environ.get(n) for n in names}
        before = (_tracking_service.utils._tracking_uri, _model_registry.utils._registry_uri)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        os.environ["MLFLOW_EXPERIMENT_ID"] = experiment_id  # where Model.log creates the logged model
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before[0])
            _model_registry.utils._registry_uri = before[1]
            for n, v in env.items():
                if v is None:
                    os.environ.pop(n, None)
                else:
                    os.environ[n] = v


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/<name>@<alias>`` or ``models:/<name>/<version>`` URI."""

    name: str
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> ModelRef:
        """Raises RegistryError for anything but the two ``models:/`` forms."""
        ref = uri.removeprefix("models:/")
        if ref != uri:
            if "@" in ref:
                name, alias = ref.split("@", 1)
                if name and alias:
                    return cls(name, alias=alias)
            else:
                name, _, version = ref.partition("/")
                if name and version:
                    return cls(name, version=version)
        raise RegistryError(f"'{uri}' is not a model URI: use models:/NAME@ALIAS or models:/NAME/VERSION")

    @staticmethod
    def is_registry_uri(uri: str) -> bool:
        return uri.startswith("models:/")

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"

    def resolve(self, tracking_uri: str) -> Any:
        """The MLflow ModelVersion this ref names now.

        Raises:
            RegistryError: no such model, version or alias in the store.
        """
        c = client(tracking_uri)
        try:
            if self.alias:
                return c.get_model_version_by_alias(self.name, self.alias)
            return c.get_model_version(self.name, self.version)
        except Exception as e:  # noqa: BLE001 - MLflow raises many types for a missing model or store
            raise RegistryError(f"cannot load '{self}' from {tracking_uri}: {e}".splitlines()[0]) from None

    def pinned(self, tracking_uri: str) -> ModelRef:
        """``name@alias`` resolved to ``name/<version>`` (a version ref stays as it is)."""
        return self if self.version else ModelRef(self.name, version=str(self.resolve(tracking_uri).version))
