"""Feature and label preprocessing: fitted on a training part only, then applied to any part.

`Preprocessor.fit(x_train)` computes every statistic (imputed values for missing cells, the categories
of categorical columns, standardization mean/std) from the rows it is given — a fold's training rows,
never its validation rows — and `transform` applies them; `fitted()` lists them for the run folder. Integer
sequences are turned into multi-hot vectors lazily, one batch at a time inside the tf.data pipeline
(`MultiHot`), so a 25,000 x 10,000 matrix is never held in memory. `kexp.backend.batches` builds that
pipeline once per fit, so Keras does not re-adapt NumPy arrays every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kexp import keras_objects
from kexp.config import Config
from kexp.data import Data, Ragged
from kexp.errors import DataError

# The label encoding a Keras loss expects, by the loss's canonical Keras name (Keras resolves every
# spelling, `bce` or `BinaryCrossentropy`, to it); Keras cannot say which encoding a loss wants.
LOSS_ENCODINGS = {
    **dict.fromkeys(("categorical_crossentropy", "categorical_focal_crossentropy", "categorical_hinge",
                     "kl_divergence", "poisson"), "categorical"),
    "sparse_categorical_crossentropy": "sparse",
    **dict.fromkeys(("binary_crossentropy", "binary_focal_crossentropy", "hinge", "squared_hinge"), "binary"),
}


@dataclass
class MultiHot:
    """Integer sequences to be multi-hot encoded `width` wide, batch by batch."""

    sequences: Ragged
    width: int

    def __len__(self) -> int:
        return len(self.sequences)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.sequences), self.width)

    def dense(self) -> np.ndarray:
        """The whole matrix (small data and tests only)."""
        out = np.zeros(self.shape, dtype="float32")
        rows = np.repeat(np.arange(len(self.sequences)), self.sequences.lengths())
        keep = self.sequences.values < self.width
        out[rows[keep], self.sequences.values[keep]] = 1.0
        return out


def loss_encoding(loss_name: str | None) -> str | None:
    """The label encoding a loss expects: categorical, sparse, binary, or None (any/regression)."""
    if not loss_name:
        return None
    return LOSS_ENCODINGS.get(keras_objects.loss_name(loss_name))


def label_encoding(explicit: str | None, loss_name: str | None, task: str) -> str:
    """`preprocessing.labels` if set, else what the loss expects, else what the task suggests."""
    if explicit:
        return explicit
    wanted = loss_encoding(loss_name)
    if wanted:
        return wanted
    return {"binary": "binary", "multiclass": "sparse"}.get(task, "raw")


def encode_labels(y: np.ndarray, encoding: str, num_classes: int | None) -> np.ndarray:
    if encoding == "categorical":
        y = np.asarray(y, dtype="int64").reshape(-1)
        out = np.zeros((len(y), int(num_classes)), dtype="float32")
        out[np.arange(len(y)), y] = 1.0
        return out
    if encoding == "sparse":
        return np.asarray(y, dtype="int32").reshape(-1)
    return np.asarray(y, dtype="float32")


def as_outputs(labels: Any, model) -> Any:
    """Labels of one value a row as a column where the model's output has one unit, e.g. (n,) -> (n, 1)
    for a sigmoid: Keras' losses align the two ranks themselves, its metric functions
    (binary_crossentropy, ...) fail on them. Dict labels go by output name; other labels are kept."""
    outputs = getattr(model, "outputs", None) or []  # none known (a subclassed model): as they are
    shapes = {name: tuple(tensor.shape) for name, tensor in zip(model.output_names, outputs)}

    def column(values, shape):
        if shape is not None and len(shape) == 2 and shape[-1] == 1 and getattr(values, "ndim", None) == 1:
            return values.reshape(-1, 1)
        return values

    if isinstance(labels, dict):
        return {out: column(values, shapes.get(out)) for out, values in labels.items()}
    return column(labels, next(iter(shapes.values()))) if len(shapes) == 1 else labels


def pad_sequences(seqs: Ragged, maxlen: int, padding: str = "pre", truncating: str = "pre",
                  value: int = 0) -> np.ndarray:
    """Keras' `pad_sequences` semantics, vectorized over a Ragged batch."""
    lengths = seqs.lengths()
    n = len(seqs)
    out = np.full((n, maxlen), value, dtype="int32")
    kept = np.minimum(lengths, maxlen)
    starts = seqs.row_splits[:-1] + (lengths - kept if truncating == "pre" else 0)
    rows = np.repeat(np.arange(n), kept)
    offsets = np.arange(kept.sum()) - np.repeat(np.cumsum(kept) - kept, kept)
    source = np.repeat(starts, kept) + offsets
    cols = offsets + (np.repeat(maxlen - kept, kept) if padding == "pre" else 0)
    out[rows, cols] = seqs.values[source]
    return out


class Table:
    """A tabular input's imputation and one-hot encoding, fitted on training rows.

    Missing cells (NaN in numeric columns, None in categorical ones) are filled with scikit-learn's
    `SimpleImputer` (`strategy` mean or most_frequent for numeric columns; categorical columns always
    take their most frequent category); categorical columns are one-hot encoded by `OneHotEncoder`
    (`handle_unknown="ignore"`: a category not seen in the training rows encodes as all zeros), each
    column's block in the column's place.
    """

    def __init__(self, width: int, categorical: list[int], strategy: str | None, names: list[str]):
        self.categorical = list(categorical)
        self.numeric = [i for i in range(width) if i not in set(categorical)]
        self.strategy = strategy
        self.names = names
        self.n_samples = 0
        self.numeric_imputer = self.categorical_imputer = self.encoder = None

    def fit(self, array: np.ndarray) -> Table:
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder

        self.n_samples = len(array)
        numbers, categories = self._parts(array)
        if self.strategy and self.numeric:
            self.numeric_imputer = SimpleImputer(strategy=self.strategy, keep_empty_features=True).fit(numbers)
        if self.strategy and self.categorical:
            self.categorical_imputer = SimpleImputer(strategy="most_frequent", missing_values=None,
                                                     keep_empty_features=True).fit(categories)
        if self.categorical:
            if self.categorical_imputer is not None:
                categories = self.categorical_imputer.transform(categories)
            self.encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False,
                                         dtype=np.float32).fit(categories.astype(str))
        return self

    @classmethod
    def from_record(cls, width: int, categorical: list[int], strategy: str | None, names: list[str],
                    entry: dict) -> Table:
        """The table `fitted()` recorded as `entry` (fill values, categories), ready to transform."""
        from sklearn.preprocessing import OneHotEncoder

        table = cls(width, categorical, strategy, names)
        table.n_samples = entry.get("n_samples", 0)
        values = (entry.get("imputed") or {}).get("values")
        if values is not None:
            if table.numeric:
                table.numeric_imputer = _Fill([values[names[i]] for i in table.numeric], np.nan)
            if table.categorical:
                table.categorical_imputer = _Fill([values[names[i]] for i in table.categorical], None)
        if table.categorical:
            categories = [list(entry["one_hot"][names[i]]) for i in table.categorical]
            table.encoder = OneHotEncoder(categories=categories, handle_unknown="ignore", sparse_output=False,
                                          dtype=np.float32).fit(np.array([[c[0] for c in categories]], dtype=object))
        return table

    def _parts(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        array = np.asarray(array)
        numbers = array[:, self.numeric].astype("float64")
        categories = array[:, self.categorical].astype(object) if self.categorical else None
        return numbers, categories

    @property
    def one_hot(self) -> np.ndarray:
        """For each output column, whether it belongs to a one-hot block."""
        flags = []
        for column in range(len(self.numeric) + len(self.categorical)):
            if column in self.categorical:
                flags += [True] * len(self.encoder.categories_[self.categorical.index(column)])
            else:
                flags.append(False)
        return np.array(flags, dtype=bool)

    def transform(self, array: np.ndarray) -> np.ndarray:
        numbers, categories = self._parts(array)
        if self.numeric_imputer is not None:
            numbers = self.numeric_imputer.transform(numbers)
        if self.encoder is None:
            return numbers.astype("float32")
        if self.categorical_imputer is not None:
            categories = self.categorical_imputer.transform(categories)
        encoded = self.encoder.transform(categories.astype(str))
        widths = [len(c) for c in self.encoder.categories_]
        starts = np.concatenate([[0], np.cumsum(widths)])
        pieces = []
        for column in range(len(self.numeric) + len(self.categorical)):
            if column in self.categorical:
                j = self.categorical.index(column)
                pieces.append(encoded[:, starts[j]:starts[j + 1]])
            else:
                pieces.append(numbers[:, [self.numeric.index(column)]].astype("float32"))
        return np.concatenate(pieces, axis=1).astype("float32", copy=False)

    def fitted(self) -> dict:
        out: dict[str, Any] = {}
        if self.numeric_imputer is not None or self.categorical_imputer is not None:
            filled = {}
            if self.numeric_imputer is not None:
                filled.update(zip([self.names[i] for i in self.numeric],
                                  np.asarray(self.numeric_imputer.statistics_, dtype="float64").tolist()))
            if self.categorical_imputer is not None:
                filled.update(zip([self.names[i] for i in self.categorical],
                                  [str(v) for v in self.categorical_imputer.statistics_]))
            out["imputed"] = {"strategy": self.strategy,
                              "values": {name: filled[name] for name in self.names if name in filled}}
        if self.encoder is not None:
            out["one_hot"] = {self.names[i]: [str(c) for c in cats]
                              for i, cats in zip(self.categorical, self.encoder.categories_)}
        return out


class _Fill:
    """A fitted SimpleImputer read back from preprocessing.json: each column's fill value."""

    def __init__(self, values: list, missing: Any):
        self.statistics_ = np.array(values, dtype="float64" if missing is not None else object)
        self.missing = missing

    def transform(self, array: np.ndarray) -> np.ndarray:
        array = np.array(array, copy=True)
        holes = np.isnan(array) if self.missing is not None else np.equal(array, None)
        rows, cols = np.nonzero(holes)
        array[rows, cols] = self.statistics_[cols]
        return array


class Preprocessor:
    """Feature steps (imputation, one-hot, sequence encoding, scale, channel axis, flatten,
    standardize) and label encoding."""

    def __init__(self, config: Config, data: Data):
        self.spec = config.preprocessing
        self.data = data
        missing = getattr(config.dataset, "missing", "error")
        self.strategy = missing if missing in ("mean", "most_frequent") else None
        self.stats: dict[str, dict[str, Any]] = {}
        self.tables: dict[str, Table] = {}
        self.label_encodings = self._label_encodings(config, data)

    @staticmethod
    def _label_encodings(config: Config, data: Data) -> dict[str, str] | str:
        loss = config.compile.loss
        if isinstance(data.task, dict):
            return {
                out: label_encoding(
                    config.preprocessing.labels,
                    (loss.get(out) or {}).get("name") if config.compile.per_output_loss else loss["name"],
                    task,
                )
                for out, task in data.task.items()
            }
        name = loss["name"] if not config.compile.per_output_loss else None
        return label_encoding(config.preprocessing.labels, name, data.task)

    @classmethod
    def from_record(cls, config: Config, data: Data, record: dict) -> Preprocessor:
        """The preprocessing a run fitted, read back from its preprocessing.json `record` (statistics,
        fill values, categories, label encodings), for new rows `data` of the same inputs (their
        `categorical` and `feature_names` as the training data's)."""
        pre = cls(config, data)
        statistics = record.get("statistics") or {}
        x = data.x_train
        for key, entry in statistics.items():
            if "one_hot" in entry or "imputed" in entry:
                width = np.shape(x[key] if isinstance(x, dict) else x)[1]
                pre.tables[key] = Table.from_record(width, (data.categorical or {}).get(key, []), pre.strategy,
                                                    pre._column_names(key, width), entry)
            if "mean" in entry:
                pre.stats[key] = {"mean": np.asarray(entry["mean"], dtype="float32"),
                                  "std": np.asarray(entry["std"], dtype="float32"),
                                  "n_samples": int(entry.get("n_samples", 0))}
        labels = record.get("labels") or {}
        if isinstance(data.task, dict):
            pre.label_encodings = {out: (labels.get(out) or {}).get("encoding") or pre.label_encodings[out]
                                   for out in data.task}
        elif labels.get("encoding"):
            pre.label_encodings = labels["encoding"]
        return pre

    # ---------------------------------------------------------------- features
    def fit(self, x: Any) -> Preprocessor:
        """Fit every statistic on `x`, the training part only."""
        self.stats, self.tables = {}, {}
        for key, array in _items(x):
            categorical = (self.data.categorical or {}).get(key, [])
            tabular = not isinstance(array, Ragged) and np.ndim(array) == 2
            if tabular and (categorical or self.strategy):
                self.tables[key] = Table(np.shape(array)[1], categorical, self.strategy,
                                         self._column_names(key, np.shape(array)[1])).fit(array)
            if self.spec.standardize:
                dense = self._numeric(key, array)
                mean = dense.mean(axis=0, dtype="float64")
                std = dense.std(axis=0, dtype="float64")
                std[std == 0] = 1.0
                if key in self.tables and self.tables[key].encoder is not None:
                    one_hot = self.tables[key].one_hot  # 0/1 columns stay 0/1 (unknown: all zeros)
                    mean[one_hot], std[one_hot] = 0.0, 1.0
                self.stats[key] = {"mean": mean.astype("float32"), "std": std.astype("float32"),
                                   "n_samples": int(len(dense))}
            elif self.spec.channels_last and not isinstance(array, Ragged):
                self._numeric(key, array[:1])  # the shape check
        return self

    def _column_names(self, key: str, width: int) -> list[str]:
        """The names of an input's columns (feature_names is every input's, in input order)."""
        names = self.data.feature_names
        if names is not None:
            start = 0
            for other, array in _items(self.data.x_train):
                size = np.shape(array)[1] if np.ndim(array) == 2 else 0
                if other == key and size == width:
                    return list(names[start:start + width])
                start += size
        return [str(i) for i in range(width)]

    def transform(self, x: Any) -> Any:
        if isinstance(x, dict):
            return {key: self._transform_one(key, array) for key, array in x.items()}
        return self._transform_one("x", x)

    def _numeric(self, key: str, array: Any) -> np.ndarray:
        if isinstance(array, Ragged):
            return array  # type: ignore[return-value]
        table = self.tables.get(key)
        out = table.transform(array) if table is not None else np.asarray(array, dtype="float32")
        if self.spec.scale is not None:
            out = out * np.float32(self.spec.scale)
        if self.spec.channels_last:
            if out.ndim != 3:
                what = "has a channel axis already" if out.ndim == 4 else "is not an image"
                name = "" if key == "x" else f" {key!r}"
                raise DataError(
                    f"preprocessing.channels_last: adds a channel axis to (n, height, width) images; "
                    f"input{name} has shape {out.shape[1:]} per sample, which {what}; remove it"
                )
            out = out[..., np.newaxis]
        if self.spec.flatten:
            out = out.reshape(len(out), -1)
        return out

    def _transform_one(self, key: str, array: Any) -> Any:
        if isinstance(array, Ragged):
            if self.spec.multi_hot is not None:
                return MultiHot(array, self.spec.multi_hot)
            pad = self.spec.pad_sequences
            return pad_sequences(array, pad.maxlen, pad.padding, pad.truncating, pad.value)
        out = self._numeric(key, array)
        stats = self.stats.get(key)
        if stats is not None:
            out = (out - stats["mean"]) / stats["std"]
        return out

    def fitted(self) -> dict:
        """What was fitted, for the run folder (proof that statistics came from training rows), per
        input: n_samples; `imputed` {strategy, values: column -> fill value}; `one_hot`
        {column: categories in block order}; standardization `mean`/`std` (per model-input column)."""
        out: dict[str, dict[str, Any]] = {}
        for key, table in self.tables.items():
            out[key] = {"n_samples": table.n_samples, **table.fitted()}
        for key, s in self.stats.items():
            out.setdefault(key, {}).update(n_samples=s["n_samples"], mean=s["mean"].tolist(),
                                           std=s["std"].tolist())
        return out

    # ---------------------------------------------------------------- labels
    def labels(self, y: Any) -> Any:
        data = self.data
        if isinstance(y, dict):
            return {
                out: encode_labels(values, self.label_encodings[out], (data.num_classes or {}).get(out))
                for out, values in y.items()
            }
        return encode_labels(y, self.label_encodings, data.num_classes)


def _items(x: Any):
    return x.items() if isinstance(x, dict) else [("x", x)]


def n_rows(x: Any) -> int:
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def feature_shape(x: Any) -> Any:
    """Per-sample shape of prepared features (a dict for several inputs)."""
    if isinstance(x, dict):
        return {key: feature_shape(value) for key, value in x.items()}
    return tuple(x.shape[1:])
