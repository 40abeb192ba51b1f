"""The MLflow side of a model's life: the store, run tracking, registration, the promotion gate,
verified loading and the audit trail. Every function takes the tracking URI it works on.

    store.py      a client per tracking URI, experiments, ``models:/`` URIs (ModelRef)
    tracking.py   one parent run per pipeline run, a nested run per stage, what to log
    versions.py   register a bundle, tag versions, move and roll back aliases
    loading.py    download a version, verify every file's sha256, build a Model
    gate.py       may a new version take the champion alias? (pure)
    publish.py    register + gate + alias move + audit, and promote/rollback by hand
    audit.py      the append-only audit trail (JSON Lines in the work folder)
    pyfunc.py     the MLflow pyfunc defined by code (no pickle)
"""

from raypipe.registry.loading import download, load_file, load_model
from raypipe.registry.store import HASH_TAG, ModelRef, client, experiment_id

__all__ = ["HASH_TAG", "ModelRef", "client", "download", "experiment_id", "load_file", "load_model"]
