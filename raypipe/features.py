"""The fitted preprocessor shared by training, batch scoring and serving.

One object turns an Arrow table (a Ray Data batch at training time, the rows of
an HTTP request at serving time) into the float32 matrix the model reads, with
the same code, so there is no train/serve skew. It is vectorised Arrow/NumPy,
serialises to JSON (never pickle) and is fitted on the train split only.

Encoding, per contract kind (XGBoost reads categorical codes natively):

- numeric   -> float32, null/NaN stay missing (XGBoost learns a default branch)
- boolean   -> 0/1, null missing
- categorical -> index into the train vocabulary; unseen or null -> missing, type 'c'
                 (or one-hot indicators / ordinal codes: ``features.encoding``)
- timestamp -> year, month, day, day of week, hour
- derived   -> arithmetic over raw columns declared in ``features.derived``
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raypipe.data.expressions import check_expression, evaluate_expression
from raypipe.data.profile import ColumnStats
from raypipe.data.schema import Contract, LabelSpec

_DATE_PARTS = ("year", "month", "day", "day_of_week", "hour")
ISO8601 = "ISO8601"
_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d")


@dataclass
class _Column:
    name: str
    kind: str
    categories: list[str] | None = None
    format: str | None = None
    """strptime format of a timestamp held as strings (``ISO8601``: any ISO 8601 form)."""


@dataclass
class Preprocessor:
    columns: list[_Column]
    label: LabelSpec
    weight_column: str | None = None
    derived: dict[str, str] = field(default_factory=dict)
    """Extra numeric inputs computed from the raw columns (``name -> expression``)."""
    fill: dict[str, float] = field(default_factory=dict)
    """Imputed value per numeric column (empty: missing stays missing)."""
    encoding: str = "native"
    """Categoricals as ``native`` codes (type 'c'), ``onehot`` indicators or ``ordinal`` codes."""
    scale: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Train-split (mean, std) per standardised numeric column."""
    target: dict[str, dict[str, Any]] = field(default_factory=dict)
    """High-cardinality categoricals encoded as frequency + out-of-fold target mean
    (:mod:`raypipe.target_encoding`): column -> its ``ColumnTargets`` as a dict."""
    fold_key: list[str] = field(default_factory=list)
    """Columns whose hash assigns a train row its fold (the split's key) and the seed."""
    fold_seed: int = 0
    version: int = 1

    @classmethod
    def fit(
        cls,
        contract: Contract,
        train_stats: dict[str, ColumnStats] | None = None,
        derived: dict[str, str] | None = None,
        impute: str = "none",
        encoding: str = "native",
        scale: bool = False,
        native_max_levels: int | None = None,
    ) -> Preprocessor:
        """Fit from a contract whose categories were counted on the train split.

        Args:
            contract: the schema contract.
            train_stats: train-split column statistics (for ``impute="mean"``).
            derived: ``name -> expression`` over raw columns, e.g. ``"temp - dewp"``.
            impute: ``none``, ``mean`` (train-split mean) or ``zero``, for numeric columns.
            encoding: ``native``, ``onehot`` or ``ordinal`` for categoricals.
            scale: standardise numeric columns with train-split mean and std.
            native_max_levels: categoricals keep their most frequent levels up to this many as codes
                or indicators (rarer ones read as missing); target-encoded columns use them all.

        Raises:
            ConfigError: a derived expression is invalid or names an unknown column.
        """
        cap = native_max_levels
        cols = [
            _Column(f.name, f.kind, f.categories[:cap] if f.categories and cap else f.categories, f.format)
            for f in contract.features
        ]
        names = {c.name for c in cols}
        for name, expr in (derived or {}).items():
            check_expression(name, expr, names)
        fill: dict[str, float] = {}
        if impute != "none":
            for c in cols:
                if c.kind == "numeric":
                    mean = (train_stats or {}).get(c.name)
                    fill[c.name] = 0.0 if impute == "zero" or mean is None or mean.mean is None else mean.mean
        moments: dict[str, tuple[float, float]] = {}
        if scale:
            for c in cols:
                st = (train_stats or {}).get(c.name)
                if c.kind == "numeric" and st is not None and st.mean is not None:
                    moments[c.name] = (st.mean, st.std or 1.0)
        return cls(
            columns=cols,
            label=contract.label,
            weight_column=contract.weight_column,
            derived=dict(derived or {}),
            fill=fill,
            encoding=encoding,
            scale=moments,
        )

    # --- output layout -------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def feature_names(self) -> list[str]:
        return [n for c in self.columns for n in self._names_of(c)] + list(self.derived)

    def feature_sources(self) -> list[str]:
        """The raw field each column of :attr:`feature_names` is computed from (a derived feature
        is its own source: it reads several fields). Explanations sum contributions by it.

        Example:
            >>> prep.feature_names, prep.feature_sources()  # doctest: +SKIP
            (['ts__year', ..., 'carrier=UA', 'gap'], ['ts', ..., 'carrier', 'gap'])
        """
        return [c.name for c in self.columns for _ in self._names_of(c)] + list(self.derived)

    def _names_of(self, c: _Column) -> list[str]:
        if c.name in self.target:
            return self._target_names(c.name)
        if c.kind == "timestamp":
            return [f"{c.name}__{p}" for p in _DATE_PARTS]
        if c.kind == "categorical" and self.encoding == "onehot":
            return [f"{c.name}={v}" for v in (c.categories or [])]
        return [c.name]

    @property
    def feature_types(self) -> list[str]:
        """XGBoost feature types: 'c' for categorical codes, 'q' otherwise."""
        types = []
        for c in self.columns:
            if c.name in self.target:
                types.extend(["q"] * len(self._target_names(c.name)))
            elif c.kind == "timestamp":
                types.extend(["q"] * len(_DATE_PARTS))
            elif c.kind == "categorical" and self.encoding == "onehot":
                types.extend(["q"] * len(c.categories or []))
            else:
                types.append("c" if c.kind == "categorical" and self.encoding == "native" else "q")
        return types + ["q"] * len(self.derived)

    def _target_names(self, name: str) -> list[str]:
        if self.label.task == "multiclass":
            return [f"{name}__freq", *(f"{name}__te={c}" for c in self.label.classes or [])]
        return [f"{name}__freq", f"{name}__te"]

    def with_targets(self, target: dict[str, Any], fold_key: list[str], fold_seed: int) -> Preprocessor:
        """This preprocessor with target + frequency encoding for the columns of ``target``."""
        from dataclasses import replace

        encoded = {name: t.to_dict() if hasattr(t, "to_dict") else dict(t) for name, t in target.items()}
        return replace(self, target=encoded, fold_key=list(fold_key), fold_seed=fold_seed)

    # --- transforms ----------------------------------------------------------
    def transform_features(self, table: pa.Table, out_of_fold: bool = False) -> np.ndarray:
        """Arrow table -> (rows, features) float32 matrix; missing is NaN.

        ``out_of_fold`` (train rows only): each row's target encodings leave out its own fold.
        """
        n = table.num_rows
        folds = None
        if out_of_fold and self.target:
            from raypipe.target_encoding import fold_of

            folds = fold_of(table, self.fold_key, self.fold_seed)
        # Filled column by column, so column-major (contiguous writes); returned row-major.
        out = np.empty((n, len(self.feature_names)), dtype=np.float32, order="F")
        j = 0
        for c in self.columns:
            col = table.column(c.name)
            if isinstance(col, pa.ChunkedArray):
                col = col.combine_chunks()
            if pa.types.is_dictionary(col.type):
                col = col.dictionary_decode()
            if c.name in self.target:
                from raypipe.target_encoding import ColumnTargets, encode

                frequency, target = encode(ColumnTargets(**self.target[c.name]), col, folds)
                out[:, j] = frequency
                out[:, j + 1 : j + 1 + target.shape[1]] = target
                j += 1 + target.shape[1]
                continue
            if c.kind == "timestamp":
                for part in _date_parts(col, c.format):
                    out[:, j] = part
                    j += 1
                continue
            if c.kind == "categorical":
                if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                    col = pc.cast(col, pa.string())
                levels = c.categories or []
                col = pc.index_in(col, value_set=pa.array(levels, pa.string()))
                if self.encoding == "onehot":
                    k = len(levels)
                    block = out[:, j : j + k]
                    block[:] = 0.0
                    codes = _to_float(col)
                    rows = np.flatnonzero(~np.isnan(codes))
                    block[rows, codes[rows].astype(np.intp)] = 1.0  # unseen/null: all zeros
                    j += k
                    continue
            values = _to_float(col)
            if c.name in self.fill:
                # np.where, not in-place: _to_float may be a read-only zero-copy view of Arrow's buffer.
                values = np.where(np.isnan(values), np.float32(self.fill[c.name]), values)
            if c.name in self.scale:
                mean, std = self.scale[c.name]
                values = (values - mean) / (std or 1.0)
            out[:, j] = values
            j += 1
        for expr in self.derived.values():
            values = _to_float(evaluate_expression(expr, table))
            values = np.where(np.isfinite(values), values, np.nan)  # x / 0 is missing, not inf
            out[:, j] = values
            j += 1
        return np.ascontiguousarray(out)

    def encode_label(self, table: pa.Table) -> np.ndarray:
        """Label column -> float32 class index (classification) or value (regression)."""
        col = table.column(self.label.name).combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if self.label.task == "regression":
            return _to_float(col)
        if pa.types.is_boolean(col.type):
            # The codes of "false"/"true" among the classes, as below, without building strings.
            codes = np.array([_class_index(self.label.classes, v) for v in ("false", "true")], dtype=np.float32)
            y = codes[col.fill_null(False).to_numpy(zero_copy_only=False).view(np.uint8)]
            if col.null_count:
                y[col.is_null().to_numpy(zero_copy_only=False)] = np.nan
            return y
        col = _label_strings(col)
        return _to_float(pc.index_in(col, value_set=pa.array(self.label.classes, pa.string())))

    def transform_batch(
        self, batch: pa.Table, passthrough: tuple[str, ...] = (), out_of_fold: bool = False
    ) -> dict[str, np.ndarray]:
        """Ray Data map step for training: features ``X``, label ``y``, weight ``w``.

        Rows without a label are dropped; ``passthrough`` columns are carried along;
        ``out_of_fold`` for train rows (see :meth:`transform_features`).
        """
        y = self.encode_label(batch)
        keep = ~np.isnan(y)
        if not keep.all():
            batch = batch.filter(pa.array(keep))
            y = y[keep]
        out = {"X": self.transform_features(batch, out_of_fold), "y": y}
        if self.weight_column:
            out["w"] = _to_float(batch.column(self.weight_column).combine_chunks())
        for name in passthrough:
            out[name] = batch.column(name).to_numpy()
        return out

    def transform_block(
        self, batch: pa.Table, passthrough: tuple[str, ...] = (), out_of_fold: bool = False
    ) -> pa.Table:
        """``transform_batch`` as the Arrow block Ray Data would build from it, built faster.

        Ray Data infers each 1-D NumPy column's Arrow type element by element (``pa.infer_type``,
        ~35 ms per 500k rows per column, more than the transform itself); the columns here are
        plain numbers, so the block is built directly: same schema, same values.
        """
        return _arrow_block(self.transform_batch(batch, passthrough, out_of_fold))

    def decode_classes(self, idx: np.ndarray) -> list[str]:
        classes = np.asarray(self.label.classes, dtype=object)
        return classes[idx].tolist()

    # --- persistence ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        return cls(
            columns=[_Column(**c) for c in d["columns"]],
            label=LabelSpec(**d["label"]),
            weight_column=d.get("weight_column"),
            derived=d.get("derived", {}),
            fill=d.get("fill", {}),
            encoding=d.get("encoding", "native"),
            scale={k: tuple(v) for k, v in d.get("scale", {}).items()},
            target=d.get("target", {}),
            fold_key=d.get("fold_key", []),
            fold_seed=d.get("fold_seed", 0),
            version=d.get("version", 1),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> Preprocessor:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _arrow_block(out: dict[str, np.ndarray]) -> pa.Table:
    """NumPy columns -> the Arrow table Ray Data makes of them (2-D as its tensor type)."""
    from ray.data.block import BlockAccessor
    from ray.data.extensions import ArrowTensorArray

    if not all(len(v) for v in out.values()):
        return BlockAccessor.batch_to_block(out)  # Ray's own rules for empty columns
    columns = {}
    for name, values in out.items():
        if values.ndim > 1:
            columns[name] = ArrowTensorArray.from_numpy(values)
        elif values.dtype.kind in "biuf":
            columns[name] = pa.array(values)
        else:
            return BlockAccessor.batch_to_block(out)
    return pa.table(columns)


def _to_float(col: pa.Array) -> np.ndarray:
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    if pa.types.is_decimal(col.type):
        col = pc.cast(col, pa.float64())
    # to_numpy turns nulls into NaN for numeric types (a float copy only when nulls exist).
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float32)


def _class_index(classes: list[str] | None, value: str) -> float:
    return float(classes.index(value)) if classes and value in classes else np.nan


def _label_strings(col: pa.Array) -> pa.Array:
    """Class values as the strings stored in the contract ("true", "1", "yes")."""
    t = col.type
    if pa.types.is_boolean(t):
        return pc.if_else(col, "true", "false")
    if pa.types.is_floating(t):
        col = pc.cast(col, pa.int64(), safe=False)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.string())
    return col


def parse_timestamps(col: pa.Array, format: str | None) -> pa.Array:
    """Strings to timestamps with ``format`` (``ISO8601``: Arrow's ISO 8601 cast); unparseable -> null."""
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return col
    if format in (None, ISO8601):
        # Vectorised: each ISO form in turn, the first that parses a value wins.
        return pc.coalesce(*(pc.strptime(col, format=f, unit="s", error_is_null=True) for f in _ISO_FORMATS))
    return pc.strptime(col, format=format, unit="s", error_is_null=True)


def _date_parts(col: pa.Array, format: str | None = None) -> list[np.ndarray]:
    col = parse_timestamps(col, format)
    if pa.types.is_date(col.type):
        col = pc.cast(col, pa.timestamp("s"))
    return [
        _to_float(pc.year(col)),
        _to_float(pc.month(col)),
        _to_float(pc.day(col)),
        _to_float(pc.day_of_week(col)),
        _to_float(pc.hour(col)),
    ]
