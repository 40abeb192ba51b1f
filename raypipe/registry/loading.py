"""Loading a model the registry pinned: download, verify every file's sha256, build a :class:`Model`."""

from __future__ import annotations

import tempfile
from pathlib import Path

from raypipe.errors import RegistryError
from raypipe.model import BUNDLE_FILE, Bundle, Model, verify
from raypipe.registry.store import HASH_TAG, ModelRef, client


def download(model_uri: str, tracking_uri: str, dst: str | None = None):
    """Resolve ``models:/name@alias`` or ``models:/name/3`` and download its artifacts.

    Returns:
        (local folder, the MLflow ModelVersion, the sha256 the registry pinned per file name).

    Raises:
        RegistryError: the model, version or alias does not exist, or the store is unreachable.
    """
    import mlflow.artifacts

    ref = ModelRef.parse(model_uri)
    mv = ref.resolve(tracking_uri)
    try:
        # The version's storage location, not its models:/ URI: MLflow resolves models:/ URIs
        # against its global registry URI, whatever tracking_uri says.
        location = client(tracking_uri).get_model_version_download_uri(ref.name, mv.version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=dst or tempfile.mkdtemp(prefix="raypipe-model-"), tracking_uri=tracking_uri
        )
    except Exception as e:  # noqa: BLE001 - MLflow raises many types for missing artifacts
        raise RegistryError(f"cannot download '{model_uri}' from {tracking_uri}: {e}".splitlines()[0]) from e
    pinned = {k[len(HASH_TAG) :]: v for k, v in mv.tags.items() if k.startswith(HASH_TAG)}
    return Path(local), mv, pinned


def load_model(model_uri: str, tracking_uri: str | None = None, dst: str | None = None) -> Model:
    """Load a registered model (``models:/name@alias``, ``models:/name/3``) or a bundle folder, verified.

    Every file the registry pinned (reference.json included) must match its recorded sha256.

    Args:
        model_uri: a registry URI or a local bundle folder.
        tracking_uri: the MLflow store; default as every command resolves it (``--tracking-uri`` >
            ``MLFLOW_TRACKING_URI`` > ``.raypipe/mlflow.db``).
        dst: where to download (default: a new temp folder).

    Raises:
        RegistryError: the model does not exist or its files fail verification.

    Example:
        >>> model = load_model("models:/flights@champion")  # doctest: +SKIP
        >>> model.version, model.contract.feature_names[:2]  # doctest: +SKIP
        ('3', ['month', 'day'])
    """
    if not ModelRef.is_registry_uri(model_uri):
        folder = Path(model_uri)
        return Model(Bundle.load(folder), str(model_uri), folder=folder)
    if tracking_uri is None:
        from raypipe.runtime.paths import resolve_paths

        tracking_uri = resolve_paths(create=False).tracking_uri
    local, mv, pinned = download(model_uri, tracking_uri, dst)
    found = next(local.rglob(BUNDLE_FILE), None)
    if found is None:
        raise RegistryError(f"'{model_uri}' is not a raypipe model (no {BUNDLE_FILE} in its artifacts)")
    bundle = Bundle.load(found.parent, expected=pinned)
    return Model(bundle, model_uri, name=mv.name, version=str(mv.version), run_id=mv.run_id, folder=found.parent)


def load_file(model_uri: str, tracking_uri: str, name: str) -> Path | None:
    """One file of a registered model's bundle (e.g. ``reference.json``), verified against its pin
    when the registry recorded one; None when the bundle has no such file."""
    local, _, pinned = download(model_uri, tracking_uri, tempfile.mkdtemp(prefix="raypipe-file-"))
    found = next(local.rglob(name), None)
    if found is not None and name in pinned:
        verify(found, pinned[name])
    return found
