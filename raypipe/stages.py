"""Stage outputs that the stage cache stores and reloads.

Each result knows how to write itself to a cache folder and read itself back,
in plain formats: JSON, Parquet, XGBoost UBJ, ``.npy`` without pickle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.data.profile import ColumnStats, Profile
from raypipe.data.quality import Finding, QualityReport
from raypipe.data.schema import Contract
from raypipe.evaluate import EvalReport
from raypipe.features import Preprocessor

# The modules whose source is each stage's code version (paths under raypipe/).
_SHARED = ("steps.py", "stages.py")  # what every stage computes with and how it is stored
STAGE_CODE: dict[str, tuple[str, ...]] = {
    "ingest": ("data/ingest.py", "data/_filesource.py", *_SHARED),
    "profile": ("data/profile.py", "data/schema.py", "data/split.py", *_SHARED),
    "quality": ("data/quality.py", *_SHARED),
    "preprocess": ("features.py", "data/expressions.py", "data/splitfiles.py", *_SHARED),
    "train": ("train", "runtime.py", *_SHARED),
    "evaluate": ("evaluate.py", "bundle.py", "monitor/reference.py", "monitor/_binning.py", *_SHARED),
    "register": ("registry.py", "bundle.py", "_mlflow_model.py", "gate.py", "publish.py", *_SHARED),
    "report": ("report", *_SHARED),
}
STAGES = ("ingest", "profile", "quality", "preprocess", "train", "evaluate", "register", "report", "serve")


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, default=str))


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


@dataclass
class Ingested:
    fingerprint: str
    files: int
    validated: bool

    def save(self, d: Path) -> None:
        _write_json(d / "ingest.json", asdict(self))

    @classmethod
    def load(cls, d: Path) -> Ingested:
        return cls(**_read_json(d / "ingest.json"))


@dataclass
class Profiled:
    profile: Profile
    contract: Contract
    rows: dict[str, int]
    example: dict[str, Any]

    REQUIRED = ("profile.json", "contract.json", "meta.json")

    def save(self, d: Path) -> None:
        # Not asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs.
        stats = {
            split: {c: {**vars(v), "levels": dict(v.levels)} for c, v in cols.items()}
            for split, cols in self.profile.items()
        }
        _write_json(d / "profile.json", stats)
        self.contract.save(d / "contract.json")
        _write_json(d / "meta.json", {"rows": self.rows, "example": self.example})

    @classmethod
    def load(cls, d: Path) -> Profiled:
        profile: Profile = {}
        for split, cols in _read_json(d / "profile.json").items():
            profile[split] = {}
            for name, raw in cols.items():
                s = ColumnStats()
                s.merge(raw)
                profile[split][name] = s
        meta = _read_json(d / "meta.json")
        return cls(profile, Contract.load(d / "contract.json"), meta["rows"], meta["example"])


@dataclass
class QualityResult:
    report: QualityReport

    REQUIRED = ("quality.json",)

    def save(self, d: Path) -> None:
        _write_json(d / "quality.json", self.report.to_dict())

    @classmethod
    def load(cls, d: Path) -> QualityResult:
        raw = _read_json(d / "quality.json")
        return cls(QualityReport(raw["rows"], raw["columns"], [Finding(**f) for f in raw["findings"]]))


class Prepared:
    """The fitted preprocessor and the model-input splits ``{"train", "valid", "test"}`` of X, y[, w]:
    :class:`~raypipe.data.splitfiles.SplitFiles` (one machine), or materialised Ray Datasets.

    Loaded from the cache, file splits are opened in place and Parquet ones are read only when a
    later stage asks for them: a run whose training is cached never touches them.
    """

    REQUIRED = ("preprocessor.json", "train", "valid", "test")

    def __init__(self, preprocessor: Preprocessor, parts: dict[str, Any] | None = None, folder: Path | None = None):
        self.preprocessor = preprocessor
        self._parts = parts
        self._folder = folder
        self._staging: Path | None = None

    @property
    def parts(self) -> dict[str, Any]:
        if self._parts is None:
            import ray.data

            from raypipe.data.splitfiles import INDEX, SplitFiles

            self._parts = {}
            for name in ("train", "valid", "test"):
                d = self._folder / name
                if (d / INDEX).is_file():
                    self._parts[name] = SplitFiles.load(d)
                    continue
                files = sorted(str(p) for p in d.glob("*.parquet"))
                # Materialised now: a lazy read during the fit would need a CPU the workers hold.
                self._parts[name] = ray.data.read_parquet(files).materialize() if files else ray.data.from_items([])
        return self._parts

    def staged_in(self, folder: Path) -> Prepared:
        """Mark ``folder`` as where the split files were written, to be removed once they are saved."""
        self._staging = folder
        return self

    def save(self, d: Path) -> None:
        from raypipe.data.splitfiles import SplitFiles, remove

        self.preprocessor.save(d / "preprocessor.json")
        for name, part in self.parts.items():
            if isinstance(part, SplitFiles):
                part.move_to(d / name)  # a rename: same file system as the cache
            else:
                part.write_parquet(str(d / name))
        if self._staging is not None:
            remove(self._staging)
            self._staging = None

    def moved(self, d: Path) -> None:
        """The cache renamed the folder ``save`` filled to ``d``: follow the files."""
        from raypipe.data.splitfiles import SplitFiles

        for name, part in (self._parts or {}).items():
            if isinstance(part, SplitFiles):
                part.folder = d / name

    @classmethod
    def load(cls, d: Path) -> Prepared:
        return cls(Preprocessor.load(d / "preprocessor.json"), folder=d)


class Trained:
    """A trained model (XGBoost booster or scikit-learn estimator) and how it was trained.

    Wraps :class:`raypipe.train.FitResult`; stored in the model's own format (XGBoost UBJ, or
    skops for scikit-learn, whose sha256 is checked on load).
    """

    REQUIRED = ("fit.json",)

    def __init__(self, fit) -> None:
        self.fit = fit

    def __getattr__(self, name: str):
        return getattr(self.__dict__["fit"], name)

    def save(self, d: Path) -> None:
        from raypipe.bundle import BOOSTER_FILE, SKLEARN_FILE, sha256

        # Not asdict: it would deep-copy the model.
        meta = {f.name: getattr(self.fit, f.name) for f in fields(self.fit) if f.name != "model"}
        if self.fit.kind == "xgboost":
            self.fit.model.save_model(str(d / BOOSTER_FILE))
            meta["model_file"] = BOOSTER_FILE
        else:
            import skops.io

            skops.io.dump(self.fit.model, d / SKLEARN_FILE)
            meta["model_file"] = SKLEARN_FILE
        meta["model_sha256"] = sha256(d / meta["model_file"])
        _write_json(d / "fit.json", meta)

    @classmethod
    def load(cls, d: Path) -> Trained:
        from raypipe.bundle import _load_model, sha256
        from raypipe.train import FitResult

        meta = _read_json(d / "fit.json")
        path = d / meta.pop("model_file")
        if sha256(path) != meta.pop("model_sha256"):
            raise ValueError(f"cached model '{path}' does not match its recorded sha256")
        kind = meta["kind"]
        return cls(FitResult(model=_load_model(path, "sklearn" if kind != "xgboost" else "xgboost"), **meta))


@dataclass
class Evaluated:
    report: EvalReport
    y_true: np.ndarray
    scores: np.ndarray
    """Raw test scores, kept for the gate, the report and the reference profile."""
    reference: str | None = None
    """The monitoring reference profile (JSON), saved with the model."""

    REQUIRED = ("eval.json", "y_true.npy", "scores.npy")

    def save(self, d: Path) -> None:
        _write_json(d / "eval.json", asdict(self.report))
        np.save(d / "y_true.npy", self.y_true, allow_pickle=False)
        np.save(d / "scores.npy", self.scores, allow_pickle=False)
        if self.reference is not None:
            (d / "reference.json").write_text(self.reference)

    @classmethod
    def load(cls, d: Path) -> Evaluated:
        report = EvalReport(**_read_json(d / "eval.json"))
        y = np.load(d / "y_true.npy", allow_pickle=False)
        p = np.load(d / "scores.npy", allow_pickle=False)
        ref = d / "reference.json"
        return cls(report, y, p, ref.read_text() if ref.exists() else None)


@dataclass
class Registered:
    run_id: str
    model_name: str
    model_version: str
    champion: bool
    gate_reason: str
    hashes: dict[str, str] = field(default_factory=dict)

    REQUIRED = ("register.json",)

    def save(self, d: Path) -> None:
        _write_json(d / "register.json", asdict(self))

    @classmethod
    def load(cls, d: Path) -> Registered:
        """Raises when the model version is gone from the store: the entry is then a cache miss."""
        from mlflow import MlflowClient

        reg = cls(**_read_json(d / "register.json"))
        MlflowClient().get_model_version(reg.model_name, reg.model_version)
        return reg


@dataclass
class Reported:
    """The run report folder: report.html, model_card.md, plots/, metrics.json."""

    folder: Path

    REQUIRED = ("report.html", "model_card.md")

    def save(self, d: Path) -> None:
        import shutil

        shutil.copytree(self.folder, d, dirs_exist_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)  # written to a temp folder by the report step
        self.folder = d

    def moved(self, d: Path) -> None:
        """The cache renamed the folder ``save`` filled to ``d``."""
        self.folder = d

    @classmethod
    def load(cls, d: Path) -> Reported:
        return cls(d)
