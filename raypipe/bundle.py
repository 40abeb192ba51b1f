"""The model bundle: model + preprocessor + contract, hashed and verified.

A bundle is a folder of plain files: the model as XGBoost UBJ or, for
scikit-learn estimators, skops (a declarative format that loads without
unpickling; only scikit-learn/NumPy/SciPy types are trusted), plus JSON. Its
``bundle.json`` names the model kind and lists each file's sha256; loading
refuses a file whose hash differs, and the registry can pin the expected hashes too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import xgboost

from raypipe.data.schema import Contract
from raypipe.errors import RegistryError
from raypipe.features import Preprocessor
from raypipe.train.common import predict_matrix

BOOSTER_FILE = "model.ubj"
SKLEARN_FILE = "model.skops"
PREPROCESSOR_FILE = "preprocessor.json"
CONTRACT_FILE = "contract.json"
BUNDLE_FILE = "bundle.json"
FILES = (BOOSTER_FILE, SKLEARN_FILE, PREPROCESSOR_FILE, CONTRACT_FILE)
"""Every file a bundle may hold (the registry pins the hashes of those present)."""
_TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "builtins.")

__all__ = ["Bundle", "predict_matrix", "write_bundle", "sha256"]


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(
    out: Path, model: Any, prep: Preprocessor, contract: Contract, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Write the bundle (an XGBoost booster or a scikit-learn estimator, the preprocessor, the contract,
    plus ``extra`` name -> text such as the reference profile) and return the files' hashes."""
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(model, xgboost.Booster):
        kind, model_file = "xgboost", BOOSTER_FILE
        model.save_model(str(out / BOOSTER_FILE))
    else:
        import skops.io

        kind, model_file = "sklearn", SKLEARN_FILE
        skops.io.dump(model, out / SKLEARN_FILE)
    prep.save(out / PREPROCESSOR_FILE)
    contract.save(out / CONTRACT_FILE)
    for name, text in (extra or {}).items():
        (out / name).write_text(text)
    names = (model_file, PREPROCESSOR_FILE, CONTRACT_FILE, *(extra or {}))
    hashes = {name: sha256(out / name) for name in names}
    (out / BUNDLE_FILE).write_text(json.dumps({"model_kind": kind, "sha256": hashes}, indent=2))
    return hashes


@dataclass
class Bundle:
    model: Any
    """An ``xgboost.Booster`` or a fitted scikit-learn estimator."""
    preprocessor: Preprocessor
    contract: Contract
    hashes: dict[str, str]

    @classmethod
    def load(cls, folder: str | Path, expected: dict[str, str] | None = None) -> Bundle:
        """Load and verify a bundle folder.

        Raises:
            RegistryError: a file is missing or its sha256 does not match.
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / BUNDLE_FILE).read_text())
            listed = meta["sha256"]
        except (OSError, ValueError, KeyError) as e:
            raise RegistryError(f"model bundle '{folder}' has no readable {BUNDLE_FILE}: {e}") from None
        kind = meta.get("model_kind", "xgboost")  # bundles written before scikit-learn support
        model_file = SKLEARN_FILE if kind == "sklearn" else BOOSTER_FILE
        # The model, preprocessor and contract must be there; listed optional files (reference.json) too.
        for name in dict.fromkeys([model_file, PREPROCESSOR_FILE, CONTRACT_FILE, *listed, *(expected or {})]):
            want = (expected or {}).get(name) or listed.get(name)
            path = folder / name
            if not path.exists():
                raise RegistryError(f"model bundle '{folder}' is missing {name}")
            got = sha256(path)
            if got != want or got != listed.get(name):
                raise RegistryError(
                    f"model bundle file '{path}' has sha256 {got[:12]}…, expected {str(want)[:12]}…; "
                    "the artifact was modified or corrupted, re-register the model"
                )
        return cls(
            model=_load_model(folder / model_file, kind),
            preprocessor=Preprocessor.load(folder / PREPROCESSOR_FILE),
            contract=Contract.load(folder / CONTRACT_FILE),
            hashes=listed,
        )

    @property
    def booster(self) -> Any:
        """The model (the name from when every bundle held an XGBoost booster)."""
        return self.model

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Raw scores: P(positive) for binary, (n, k) probabilities, or values."""
        X = self.preprocessor.transform_features(table)
        return predict_matrix(self.model, X)

    def predict_matrix(self, X: np.ndarray) -> np.ndarray:
        """Raw scores for an already-transformed float32 matrix."""
        return predict_matrix(self.model, X)


def _load_model(path: Path, kind: str) -> Any:
    if kind == "xgboost":
        booster = xgboost.Booster()
        booster.load_model(str(path))
        return booster
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    foreign = [t for t in untrusted if not t.startswith(_TRUSTED_MODULES)]
    if foreign:
        raise RegistryError(
            f"model file '{path}' would load types outside scikit-learn/NumPy/SciPy ({', '.join(foreign)}); "
            "refusing to load it"
        )
    return skops.io.load(path, trusted=untrusted)
