"""Feature and label preprocessing: fitted on a training part only, then applied to any part.

`Preprocessor.fit(x_train)` computes every statistic (standardization mean/std) from the rows it is
given — a fold's training rows, never its validation rows — and `transform` applies them. Integer
sequences are turned into multi-hot vectors lazily, one batch at a time inside the tf.data pipeline
(`MultiHot`), so a 25,000 x 10,000 matrix is never held in memory. `to_tf_dataset` builds that
pipeline once per fit, so Keras does not re-adapt NumPy arrays every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kexp.config import Config
from kexp.datasets import Data, Ragged

CATEGORICAL_LOSSES = {"categorical_crossentropy", "categoricalcrossentropy", "categorical_focal_crossentropy",
                      "categoricalfocalcrossentropy", "categorical_hinge", "categoricalhinge",
                      "kl_divergence", "kldivergence", "kullback_leibler_divergence", "poisson"}
SPARSE_LOSSES = {"sparse_categorical_crossentropy", "sparsecategoricalcrossentropy"}
BINARY_LOSSES = {"bce", "binary_crossentropy", "binarycrossentropy", "binary_focal_crossentropy",
                 "binaryfocalcrossentropy", "hinge", "squared_hinge", "squaredhinge"}


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
    key = loss_name.lower()
    if key in CATEGORICAL_LOSSES:
        return "categorical"
    if key in SPARSE_LOSSES:
        return "sparse"
    if key in BINARY_LOSSES:
        return "binary"
    return None


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


class Preprocessor:
    """Feature steps (sequence encoding, scale, flatten, standardize) and label encoding."""

    def __init__(self, config: Config, data: Data):
        self.spec = config.preprocessing
        self.data = data
        self.stats: dict[str, dict[str, Any]] = {}
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

    # ---------------------------------------------------------------- features
    def fit(self, x: Any) -> "Preprocessor":
        """Fit every statistic on `x`, the training part only."""
        self.stats = {}
        if self.spec.standardize:
            for key, array in _items(x):
                dense = self._numeric(array)
                mean = dense.mean(axis=0, dtype="float64")
                std = dense.std(axis=0, dtype="float64")
                std[std == 0] = 1.0
                self.stats[key] = {"mean": mean.astype("float32"), "std": std.astype("float32"),
                                   "n_samples": int(len(dense))}
        return self

    def transform(self, x: Any) -> Any:
        if isinstance(x, dict):
            return {key: self._transform_one(key, array) for key, array in x.items()}
        return self._transform_one("x", x)

    def _numeric(self, array: Any) -> np.ndarray:
        if isinstance(array, Ragged):
            return array  # type: ignore[return-value]
        out = np.asarray(array, dtype="float32")
        if self.spec.scale is not None:
            out = out * np.float32(self.spec.scale)
        if self.spec.flatten:
            out = out.reshape(len(out), -1)
        return out

    def _transform_one(self, key: str, array: Any) -> Any:
        if isinstance(array, Ragged):
            if self.spec.multi_hot is not None:
                return MultiHot(array, self.spec.multi_hot)
            pad = self.spec.pad_sequences
            return pad_sequences(array, pad.maxlen, pad.padding, pad.truncating, pad.value)
        out = self._numeric(array)
        stats = self.stats.get(key)
        if stats is not None:
            out = (out - stats["mean"]) / stats["std"]
        return out

    def fitted(self) -> dict:
        """What was fitted, for the run folder (proof that statistics came from training rows)."""
        return {
            key: {"n_samples": s["n_samples"], "mean": s["mean"].tolist(), "std": s["std"].tolist()}
            for key, s in self.stats.items()
        }

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


def take(x: Any, indices: np.ndarray) -> Any:
    """Rows of raw data (array, Ragged or a dict of them)."""
    if isinstance(x, dict):
        return {key: take(value, indices) for key, value in x.items()}
    if isinstance(x, Ragged):
        return x.take(indices)
    return x[indices]


def n_rows(x: Any) -> int:
    if isinstance(x, dict):
        return len(next(iter(x.values())))
    return len(x)


def feature_shape(x: Any) -> Any:
    """Per-sample shape of prepared features (a dict for several inputs)."""
    if isinstance(x, dict):
        return {key: feature_shape(value) for key, value in x.items()}
    return tuple(x.shape[1:])


# --------------------------------------------------------------------------- tf.data (imports TF)
def to_tf_dataset(x: Any, y: Any, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
                  repeat: bool = False):
    """A tf.data pipeline over prepared features, built once: cached, shuffled each epoch,
    batched, multi-hot encoded per batch, prefetched."""
    import tensorflow as tf

    def source(value):
        if isinstance(value, MultiHot):
            return tf.RaggedTensor.from_row_splits(value.sequences.values, value.sequences.row_splits)
        return value

    def encode(value, batch):
        if isinstance(value, MultiHot):
            dense = tf.math.bincount(batch, minlength=value.width, maxlength=value.width,
                                     binary_output=True, dtype=tf.float32, axis=-1)
            return tf.ensure_shape(dense, [None, value.width])
        return batch

    is_dict = isinstance(x, dict)
    xs = {k: source(v) for k, v in x.items()} if is_dict else source(x)
    n = n_rows(x)
    ds = tf.data.Dataset.from_tensor_slices((xs, y) if y is not None else (xs,))
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    lazy = any(isinstance(v, MultiHot) for _, v in _items(x))
    if lazy:
        def encode_batch(bx, *by):
            if is_dict:
                bx = {k: encode(x[k], v) for k, v in bx.items()}
            else:
                bx = encode(x, bx)
            return (bx, *by)

        ds = ds.map(encode_batch, num_parallel_calls=2, deterministic=True)
    return ds.prefetch(1)
