"""Registered model versions and their aliases: register a bundle, tag it, move and roll back aliases.

The registered model is an MLflow pyfunc defined by code (``raypipe/registry/pyfunc.py``, no
pickle) whose artifact is a raypipe bundle folder; the bundle's hashes are also stored as
model-version tags, and loading verifies them. Aliases, not MLflow's deprecated stages; the
alias history kept on the registered model lets ``rollback`` walk back.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path
from typing import Any

from raypipe.errors import RegistryError
from raypipe.registry.store import HASH_TAG, client, scoped_uri

RUN_KEY_TAG = "raypipe.run_key"
"""The register stage's cache key, set last on a version: a retried registration finds it."""
_HISTORY_TAG = "raypipe.alias_history."
_HISTORY_KEEP = 50


def register_bundle(
    tracking_uri: str,
    bundle_dir: Path,
    *,
    model_name: str,
    run_id: str,
    input_example: Any,
    hashes: dict[str, str],
    run_key: str | None = None,
) -> str:
    """Log ``bundle_dir`` as a pyfunc model of ``run_id`` and register it as a new version of
    ``model_name``, tagged with each file's sha256. Returns the version.

    With ``run_key``, a version already registered under that key is returned instead (a retried
    registration after a failure that came after it), so one key never makes two versions.
    """
    if run_key and (found := find_by_run_key(tracking_uri, model_name, run_key)):
        return found
    import mlflow
    from mlflow.models import Model

    code = Path(__file__).with_name("pyfunc.py")
    try:
        experiment = client(tracking_uri).get_run(run_id).info.experiment_id
        # MLflow prints registration chatter to stderr and hints about type hints; exceptions propagate.
        with scoped_uri(tracking_uri, experiment), warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore", UserWarning)
            info = Model.log(
                artifact_path=None,
                name="model",
                flavor=mlflow.pyfunc,
                python_model=str(code),
                artifacts={"bundle": str(bundle_dir)},
                input_example=input_example,
                registered_model_name=model_name,
                pip_requirements=["raypipe"],
                run_id=run_id,
            )
    except Exception as e:
        raise RegistryError(f"logging the model to MLflow failed: {e}".splitlines()[0]) from e
    version = str(info.registered_model_version)
    tag_version(tracking_uri, model_name, version, {HASH_TAG + name: digest for name, digest in hashes.items()})
    if run_key:  # last: a version with the key has all its hash tags
        tag_version(tracking_uri, model_name, version, {RUN_KEY_TAG: run_key})
    return version


def find_by_run_key(tracking_uri: str, model_name: str, run_key: str) -> str | None:
    """The version of ``model_name`` registered under ``run_key``, if any."""
    from mlflow.exceptions import MlflowException

    name = model_name.replace("'", "")
    try:
        found = client(tracking_uri).search_model_versions(f"name='{name}' and tags.`{RUN_KEY_TAG}` = '{run_key}'")
    except MlflowException:  # no such model yet
        return None
    return str(min(int(v.version) for v in found)) if found else None


def tag_version(tracking_uri: str, model_name: str, version: str, tags: dict[str, Any]) -> None:
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_model_version_tag(model_name, version, k, str(v))


def current_holder(tracking_uri: str, model_name: str, alias: str):
    """The model version that holds ``alias``, or ``None``."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None


def alias_history(tracking_uri: str, model_name: str, alias: str) -> list[str]:
    """Versions that held ``alias``, oldest first (the last one holds it now)."""
    try:
        tags = client(tracking_uri).get_registered_model(model_name).tags
    except Exception as e:  # noqa: BLE001 - MLflow raises many types for a missing model
        raise RegistryError(f"no registered model '{model_name}' in {tracking_uri}: {e}".splitlines()[0]) from None
    return json.loads(tags.get(_HISTORY_TAG + alias, "[]"))


def move_alias(tracking_uri: str, model_name: str, alias: str, version: str) -> str | None:
    """Point ``alias`` at ``version``, remember it for rollback, and return the previous holder."""
    c = client(tracking_uri)
    try:
        c.get_model_version(model_name, version)
    except Exception:  # noqa: BLE001
        raise RegistryError(f"model '{model_name}' has no version {version} in {tracking_uri}") from None
    prev = current_holder(tracking_uri, model_name, alias)
    history = alias_history(tracking_uri, model_name, alias)
    if prev is not None and (not history or history[-1] != str(prev.version)):
        history.append(str(prev.version))  # moved outside raypipe: keep it restorable
    history.append(str(version))
    c.set_registered_model_alias(model_name, alias, version)
    c.set_registered_model_tag(model_name, _HISTORY_TAG + alias, json.dumps(history[-_HISTORY_KEEP:]))
    return str(prev.version) if prev is not None else None


def rollback(tracking_uri: str, model_name: str, alias: str) -> tuple[str, str]:
    """Give ``alias`` back to the version that held it before; returns (from, to).

    Raises:
        RegistryError: no earlier holder exists (or it was deleted).
    """
    c = client(tracking_uri)
    cur = current_holder(tracking_uri, model_name, alias)
    history = alias_history(tracking_uri, model_name, alias)
    if cur is not None and history and history[-1] == str(cur.version):
        history.pop()
    while history:
        target = history[-1]
        try:
            c.get_model_version(model_name, target)
        except Exception:  # noqa: BLE001 - deleted since: skip it
            history.pop()
            continue
        c.set_registered_model_alias(model_name, alias, target)
        c.set_registered_model_tag(model_name, _HISTORY_TAG + alias, json.dumps(history))
        return (str(cur.version) if cur else "none"), target
    raise RegistryError(f"'{model_name}@{alias}' has no earlier holder to roll back to")
