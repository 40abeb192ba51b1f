"""The model bundle: booster + preprocessor + contract, hashed and verified.

A bundle is a folder of plain files (XGBoost UBJ and JSON; no pickle). Its
``bundle.json`` lists each file's sha256; loading refuses a file whose hash
differs, and the registry can pin the expected hashes too.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import xgboost

from raypipe.data.schema import Contract
from raypipe.errors import RegistryError
from raypipe.features import Preprocessor

BOOSTER_FILE = "model.ubj"
PREPROCESSOR_FILE = "preprocessor.json"
CONTRACT_FILE = "contract.json"
BUNDLE_FILE = "bundle.json"
FILES = (BOOSTER_FILE, PREPROCESSOR_FILE, CONTRACT_FILE)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(
    out: Path, booster: xgboost.Booster, prep: Preprocessor, contract: Contract, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Write the bundle files (plus ``extra`` name -> text, e.g. the reference profile) and return their hashes."""
    out.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(out / BOOSTER_FILE))
    prep.save(out / PREPROCESSOR_FILE)
    contract.save(out / CONTRACT_FILE)
    for name, text in (extra or {}).items():
        (out / name).write_text(text)
    hashes = {name: sha256(out / name) for name in (*FILES, *(extra or {}))}
    (out / BUNDLE_FILE).write_text(json.dumps({"sha256": hashes}, indent=2))
    return hashes


@dataclass
class Bundle:
    booster: xgboost.Booster
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
            listed = json.loads((folder / BUNDLE_FILE).read_text())["sha256"]
        except (OSError, ValueError, KeyError) as e:
            raise RegistryError(f"model bundle '{folder}' has no readable {BUNDLE_FILE}: {e}") from None
        for name in dict.fromkeys([*FILES, *listed]):  # optional files (reference.json) too
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
        booster = xgboost.Booster()
        booster.load_model(str(folder / BOOSTER_FILE))
        return cls(
            booster=booster,
            preprocessor=Preprocessor.load(folder / PREPROCESSOR_FILE),
            contract=Contract.load(folder / CONTRACT_FILE),
            hashes=listed,
        )

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Raw scores: P(positive) for binary, (n, k) probabilities, or values."""
        X = self.preprocessor.transform_features(table)
        return predict_matrix(self.booster, X)


def predict_matrix(booster: xgboost.Booster, X: np.ndarray) -> np.ndarray:
    # inplace_predict skips DMatrix construction: the fast path for serving.
    return np.asarray(booster.inplace_predict(X, validate_features=False))
