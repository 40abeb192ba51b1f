"""The model: rows in, answers out, in one place.

A **bundle** is a folder of plain files: the model as XGBoost UBJ or, for scikit-learn
estimators, skops (a declarative format that loads without unpickling; only
scikit-learn/NumPy/SciPy types are trusted), plus the preprocessor and the contract as JSON.
Its ``bundle.json`` names the model kind and lists each file's sha256; loading refuses a file
whose hash differs, and the registry can pin the expected hashes too.

Every entry point turns rows into answers here: the HTTP server, batch scoring, the gate's
rescoring of the champion, evaluation, the report and :class:`Model`, the Python API.

    Bundle.load(folder, expected=hashes) -> Bundle        verified files
    Bundle.predict_table(table) -> scores                 preprocessor + model
    format_predictions(label, scores)                     what /predict returns
    prediction_columns(label, scores)                     the log's and batch output's columns
    Model.predict(rows)                                   validated like /predict, same answers
    Model.explain(rows)                                   the same plus per-field contributions (/explain)
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.data.schema import Contract, LabelSpec
from raypipe.errors import RegistryError, SchemaError
from raypipe.features import Preprocessor

if TYPE_CHECKING:
    import pandas as pd

    from raypipe.data.records import RequestParser
    from raypipe.explain import Explanations

BOOSTER_FILE = "model.ubj"
SKLEARN_FILE = "model.skops"
PREPROCESSOR_FILE = "preprocessor.json"
CONTRACT_FILE = "contract.json"
BUNDLE_FILE = "bundle.json"
FILES = (BOOSTER_FILE, SKLEARN_FILE, PREPROCESSOR_FILE, CONTRACT_FILE)
"""Every file a bundle may hold (the registry pins the hashes of those present)."""
SCORING_BATCH_ROWS = 65_536
"""Rows per batch wherever a split is scored batch by batch (evaluation, report, gate)."""
_TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "builtins.")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_kind(model: Any) -> str:
    """``xgboost`` for a booster, ``sklearn`` for a fitted estimator."""
    return "xgboost" if type(model).__module__.startswith("xgboost") else "sklearn"


def save_model(model: Any, folder: Path) -> str:
    """Write the model in its own non-pickle format; returns the file name."""
    if model_kind(model) == "xgboost":
        model.save_model(str(folder / BOOSTER_FILE))
        return BOOSTER_FILE
    import skops.io

    skops.io.dump(model, folder / SKLEARN_FILE)
    return SKLEARN_FILE


def load_model_file(path: Path, kind: str) -> Any:
    """Read a model written by :func:`save_model` (skops: scikit-learn/NumPy/SciPy types only)."""
    if kind == "xgboost":
        import xgboost

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


def verify(path: Path, expected: str | None) -> None:
    """Raise unless ``path`` exists and hashes to ``expected``.

    Raises:
        RegistryError: naming the file, both hashes and the fix.
    """
    if not path.exists():
        raise RegistryError(f"model file '{path}' is missing")
    got = sha256(path)
    if got != expected:
        raise RegistryError(
            f"model file {path} has sha256 {got[:12]}…, expected {str(expected)[:12]}…; "
            "the artifact was modified or corrupted, re-register the model"
        )


def write_bundle(
    out: Path, model: Any, prep: Preprocessor, contract: Contract, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Write the bundle (an XGBoost booster or a scikit-learn estimator, the preprocessor, the contract,
    plus ``extra`` name -> text such as the reference profile) and return the files' hashes."""
    out.mkdir(parents=True, exist_ok=True)
    model_file = save_model(model, out)
    prep.save(out / PREPROCESSOR_FILE)
    contract.save(out / CONTRACT_FILE)
    for name, text in (extra or {}).items():
        (out / name).write_text(text)
    names = (model_file, PREPROCESSOR_FILE, CONTRACT_FILE, *(extra or {}))
    hashes = {name: sha256(out / name) for name in names}
    (out / BUNDLE_FILE).write_text(json.dumps({"model_kind": model_kind(model), "sha256": hashes}, indent=2))
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
            if want != listed.get(name):
                raise RegistryError(
                    f"model bundle '{folder}' lists sha256 {str(listed.get(name))[:12]}… for {name} but the "
                    f"registry pinned {str(want)[:12]}…; re-register the model"
                )
            verify(folder / name, want)
        return cls(
            model=load_model_file(folder / model_file, kind),
            preprocessor=Preprocessor.load(folder / PREPROCESSOR_FILE),
            contract=Contract.load(folder / CONTRACT_FILE),
            hashes=listed,
        )

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Raw scores: P(positive) for binary, (n, k) probabilities, or values."""
        return predict_matrix(self.model, self.preprocessor.transform_features(table))

    def explain_table(self, table: pa.Table) -> Explanations:
        """Per-field contributions to each row's margin (XGBoost only: :mod:`raypipe.explain`)."""
        from raypipe.explain import explain_table

        return explain_table(self, table)


def predict_matrix(model: Any, X: np.ndarray) -> np.ndarray:
    """Raw scores for a float32 feature matrix, for any model kind.

    Returns P(positive) for binary classifiers, (n, classes) probabilities for multiclass,
    values for regression: the same layout for XGBoost and scikit-learn.
    """
    if model_kind(model) == "xgboost":
        # inplace_predict skips DMatrix construction: the fast path for serving.
        return np.asarray(model.inplace_predict(X, validate_features=False))
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        classes = np.asarray(model.classes_).astype(int)
        k = int(classes.max()) + 1 if len(classes) else 0
        if k == 2 and proba.shape[1] == 2:
            return proba[:, 1]
        if len(classes) == k and np.array_equal(classes, np.arange(k)):
            return proba
        # A class absent from the (sampled) train split: its probability is 0.
        full = np.zeros((len(X), max(k, 2)), dtype=proba.dtype)
        full[:, classes] = proba
        return full[:, 1] if full.shape[1] == 2 else full
    return np.asarray(model.predict(X), dtype=np.float64)


def _class_values(label: LabelSpec) -> list[Any]:
    """Class names back in the label's own type (bool stays bool, 1 stays int)."""
    classes = label.classes or []
    if label.dtype == "bool":
        return [c == "true" for c in classes]
    if label.dtype.startswith(("int", "uint", "float", "double")):
        return [int(c) if c.lstrip("-").isdigit() else float(c) for c in classes]
    return list(classes)


def format_predictions(label: LabelSpec, scores: np.ndarray) -> dict[str, list[Any]]:
    """Predictions (and class probabilities for classifiers) as JSON-ready lists: what ``/predict`` returns."""
    if label.task == "regression":
        return {"prediction": scores.astype(float).tolist()}
    values = _class_values(label)
    scores = np.asarray(scores, dtype=np.float64)  # rounded in float64: no float32 tail in the JSON
    if label.task == "binary":
        probs = np.column_stack([1.0 - scores, scores])
    else:
        probs = scores.reshape(len(scores), -1)
    idx = probs.argmax(axis=1)
    names = [str(c) for c in values]
    return {
        "prediction": [values[i] for i in idx],
        "probabilities": [dict(zip(names, row)) for row in np.round(probs, 6).tolist()],
    }


def prediction_columns(label: LabelSpec, scores: np.ndarray) -> tuple[pa.Array, pa.Array]:
    """``prediction`` (str) and ``score`` (float64) columns from raw scores, vectorised.

    score: P(positive) for binary, the max class probability for multiclass, the value for regression.
    """
    if label.task == "regression":
        values = pa.array(np.asarray(scores, dtype=np.float64))
        return pc.cast(values, pa.string()), values
    classes = pa.array(label.classes or [], pa.string())
    if label.task == "binary":
        p = np.asarray(scores, dtype=np.float64).reshape(-1)
        return classes.take(pa.array((p > 0.5).astype(np.int64))), pa.array(p)
    probs = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    return classes.take(pa.array(probs.argmax(axis=1))), pa.array(probs.max(axis=1))


def score_labelled(
    batches: Iterable[pa.Table], prep: Preprocessor, model: Any, columns: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]] | None:
    """Labels, scores and raw ``columns`` of the labelled rows in ``batches`` (raw rows with the label).

    The one loop behind evaluation slices, the report and the gate's rescoring: encode the label
    with ``prep``, drop unlabelled rows, predict. Returns None when no row is labelled.
    """
    ys, ps, vals = [], [], {c: [] for c in columns}
    for batch in batches:
        if not batch.num_rows:
            continue
        y = prep.encode_label(batch)
        keep = ~np.isnan(y)
        if not keep.any():
            continue
        batch = batch.filter(pa.array(keep))
        ys.append(y[keep])
        ps.append(predict_matrix(model, prep.transform_features(batch)))
        for c in columns:
            vals[c].append(np.asarray(batch.column(c).to_pylist(), dtype=object))
    if not ys:
        return None
    return np.concatenate(ys), np.concatenate(ps), {c: np.concatenate(v) for c, v in vals.items()}


@dataclass
class Model:
    """A verified model, ready to predict: what :func:`raypipe.load_model` returns.

    Example:
        >>> model = raypipe.load_model("models:/flights@champion")  # doctest: +SKIP
        >>> model.predict([{"carrier": "B6", "distance": 1069, ...}])["prediction"]  # doctest: +SKIP
        [False]
    """

    bundle: Bundle
    uri: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    folder: Path | None = None
    """The verified bundle folder on this machine."""
    _parser: RequestParser | None = field(default=None, repr=False, compare=False)

    @property
    def contract(self) -> Contract:
        """The schema contract requests are validated against: features, kinds, ranges, categories, label."""
        return self.bundle.contract

    def predict(
        self, rows: pa.Table | pd.DataFrame | Sequence[dict[str, Any]] | dict[str, Any]
    ) -> dict[str, list[Any]]:
        """Validate ``rows`` against the contract as ``POST /predict`` does and return its answers.

        Args:
            rows: a pyarrow Table, a pandas DataFrame, a list of records (dicts) or one record.

        Returns:
            ``{"prediction": [...], "probabilities": [{class: p}, ...]}`` (no probabilities for
            regression), plus ``warnings`` when values outside the training range were flagged:
            the same values the HTTP API returns for the same rows.

        Raises:
            SchemaError: a missing, unknown or mistyped field, NaN or infinity; the message
                names the record and the field, as the HTTP API's 422 does.
        """
        table, warnings = self._validate(rows)
        out = format_predictions(self.bundle.preprocessor.label, self.bundle.predict_table(table))
        return out | {"warnings": warnings} if warnings else out

    def explain(self, rows: pa.Table | pd.DataFrame | Sequence[dict[str, Any]] | dict[str, Any]) -> dict[str, Any]:
        """:meth:`predict`'s answer plus each record's per-field contributions, as ``POST /explain``.

        Returns:
            ``predict``'s dict plus ``explanations`` (per record: ``base``, ``contributions``
            ``{field: float}``, ``margin`` = base + their sum, ``explained_class``) and
            ``explanation_units`` (``log-odds`` for classifiers, ``value`` for regression).

        Raises:
            SchemaError: as :meth:`predict`.
            ExplainError: the model is a scikit-learn estimator (XGBoost models only).

        Example:
            >>> model.explain(record)["explanations"][0]["contributions"]  # doctest: +SKIP
            {'distance': 1.31, 'carrier': -0.42, 'weekend': 0.02}
        """
        from raypipe.explain import check_explainable

        check_explainable(self.bundle.model)
        table, warnings = self._validate(rows)
        out = format_predictions(self.bundle.preprocessor.label, self.bundle.predict_table(table))
        ex = self.bundle.explain_table(table)
        out |= {"explanations": ex.records(), "explanation_units": ex.units}
        return out | {"warnings": warnings} if warnings else out

    def _validate(self, rows: Any) -> tuple[pa.Table, list[Any]]:
        from raypipe.data.records import RequestError

        try:
            return self._validator().validate(_records(rows))
        except RequestError as e:
            raise SchemaError(e.message, errors=e.errors) from None

    def _validator(self) -> RequestParser:
        if self._parser is None:
            from raypipe.data.records import RequestParser

            # The HTTP API's default policies, without its per-request record limit.
            self._parser = RequestParser(self.contract, max_records=sys.maxsize)
        return self._parser


def _records(rows: Any) -> list[dict[str, Any]] | dict[str, Any]:
    if isinstance(rows, pa.Table):
        return rows.to_pylist()
    if type(rows).__module__.startswith("pandas"):
        return pa.Table.from_pandas(rows, preserve_index=False).to_pylist()
    if isinstance(rows, dict):
        return rows
    return list(rows)
