"""MLflow: tracking store, run logging, model registration, the alias gate, loading.

The registered model is an MLflow pyfunc defined by code (no pickle) whose
artifact is a raypipe bundle folder; the bundle's hashes are also stored as
model-version tags, and loading verifies them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raypipe.bundle import Bundle
from raypipe.errors import RegistryError

log = logging.getLogger(__name__)

_HASH_TAG = "raypipe.sha256."


def default_tracking_uri(work_dir: Path) -> str:
    return f"sqlite:///{work_dir / 'mlflow.db'}"


def setup_tracking(tracking_uri: str, experiment: str, artifact_root: Path | None) -> str:
    """Point MLflow at the store and return the experiment id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    try:
        exp = mlflow.get_experiment_by_name(experiment)
        if exp is None:
            loc = artifact_root.as_uri() if artifact_root and tracking_uri.startswith("sqlite") else None
            return mlflow.create_experiment(experiment, artifact_location=loc)
        return exp.experiment_id
    except Exception as e:  # MLflow raises many types for an unreachable store
        raise RegistryError(f"cannot use MLflow tracking store '{tracking_uri}': {e}".splitlines()[0]) from e


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    model_uri: str
    champion: bool
    gate_reason: str


def log_bundle(bundle_dir: Path, *, model_name: str, input_example: Any, hashes: dict[str, str]) -> tuple[str, str]:
    """Log the bundle as a pyfunc model and register a new version. Returns (name, version)."""
    from mlflow import MlflowClient

    code = Path(__file__).with_name("_mlflow_model.py")
    try:
        # MLflow prints registration chatter to stderr and hints about type hints;
        # exceptions still propagate.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", UserWarning)
            info = _log_model(code, bundle_dir, input_example, model_name)
    except Exception as e:
        raise RegistryError(f"logging the model to MLflow failed: {e}".splitlines()[0]) from e
    version = str(info.registered_model_version)
    client = MlflowClient()
    for name, digest in hashes.items():
        client.set_model_version_tag(model_name, version, _HASH_TAG + name, digest)
    return model_name, version


def _log_model(code: Path, bundle_dir: Path, input_example: Any, model_name: str):
    import mlflow.pyfunc

    return mlflow.pyfunc.log_model(
        name="model",
        python_model=str(code),
        artifacts={"bundle": str(bundle_dir)},
        input_example=input_example,
        registered_model_name=model_name,
        pip_requirements=["raypipe"],
    )


_HISTORY_TAG = "raypipe.alias_history."
_HISTORY_KEEP = 50


def current_holder(model_name: str, alias: str):
    """The model version that holds ``alias``, or ``None``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def alias_history(model_name: str, alias: str) -> list[str]:
    """Versions that held ``alias``, oldest first (the last one holds it now)."""
    from mlflow import MlflowClient

    try:
        tags = MlflowClient().get_registered_model(model_name).tags
    except Exception as e:  # noqa: BLE001 - MLflow raises many types for a missing model
        raise RegistryError(f"no registered model '{model_name}': {e}".splitlines()[0]) from None
    return json.loads(tags.get(_HISTORY_TAG + alias, "[]"))


def move_alias(model_name: str, alias: str, version: str) -> str | None:
    """Point ``alias`` at ``version``, remember it for rollback, and return the previous holder."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        client.get_model_version(model_name, version)
    except Exception:  # noqa: BLE001
        raise RegistryError(f"model '{model_name}' has no version {version}") from None
    prev = current_holder(model_name, alias)
    history = alias_history(model_name, alias)
    if prev is not None and (not history or history[-1] != str(prev.version)):
        history.append(str(prev.version))  # moved outside raypipe: keep it restorable
    history.append(str(version))
    client.set_registered_model_alias(model_name, alias, version)
    client.set_registered_model_tag(model_name, _HISTORY_TAG + alias, json.dumps(history[-_HISTORY_KEEP:]))
    return str(prev.version) if prev is not None else None


def rollback(model_name: str, alias: str) -> tuple[str, str]:
    """Give ``alias`` back to the version that held it before; returns (from, to).

    Raises:
        RegistryError: no earlier holder exists (or it was deleted).
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    cur = current_holder(model_name, alias)
    history = alias_history(model_name, alias)
    if cur is not None and history and history[-1] == str(cur.version):
        history.pop()
    while history:
        target = history[-1]
        try:
            client.get_model_version(model_name, target)
        except Exception:  # noqa: BLE001 - deleted since: skip it
            history.pop()
            continue
        client.set_registered_model_alias(model_name, alias, target)
        client.set_registered_model_tag(model_name, _HISTORY_TAG + alias, json.dumps(history))
        return (str(cur.version) if cur else "none"), target
    raise RegistryError(f"'{model_name}@{alias}' has no earlier holder to roll back to")


def tag_version(model_name: str, version: str, tags: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, str(v))


def download(model_uri: str, tracking_uri: str | None = None, dst: str | None = None):
    """Resolve ``models:/name@alias`` or ``models:/name/3`` and download its artifacts.

    Returns:
        (local folder, the MLflow ModelVersion).

    Raises:
        RegistryError: the model, version or alias does not exist, or the store is unreachable.
    """
    import mlflow
    from mlflow import MlflowClient

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    ref = model_uri[len("models:/") :]
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, ver = ref.partition("/")
            mv = client.get_model_version(name, ver)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{mv.version}", dst_path=dst or tempfile.mkdtemp(prefix="raypipe-model-")
        )
    except Exception as e:  # noqa: BLE001 - MLflow raises many types for a missing model or store
        raise RegistryError(f"cannot load '{model_uri}' from {mlflow.get_tracking_uri()}: {e}".splitlines()[0]) from e
    return Path(local), mv


@dataclass
class LoadedModel:
    bundle: Bundle
    name: str | None
    version: str | None
    run_id: str | None
    uri: str
    folder: Path | None = None
    """The verified bundle folder on this machine."""


def load_model(model_uri: str, tracking_uri: str | None = None, dst: str | None = None) -> LoadedModel:
    """Download ``models:/name@alias`` (or ``models:/name/3``, or a local bundle folder) and verify it.

    Raises:
        RegistryError: the model does not exist or its files fail verification.
    """
    if not model_uri.startswith("models:/"):
        return LoadedModel(Bundle.load(model_uri), None, None, None, model_uri, Path(model_uri))
    local, mv = download(model_uri, tracking_uri, dst)
    name = mv.name
    # Every file the registry pinned (reference.json included) must match.
    expected = {k[len(_HASH_TAG) :]: v for k, v in mv.tags.items() if k.startswith(_HASH_TAG)}
    bundle_dir = next(Path(local).rglob("bundle.json"), None)
    if bundle_dir is None:
        raise RegistryError(f"'{model_uri}' is not a raypipe model (no bundle.json in its artifacts)")
    bundle = Bundle.load(bundle_dir.parent, expected=expected)
    return LoadedModel(bundle, name, str(mv.version), mv.run_id, model_uri, bundle_dir.parent)
