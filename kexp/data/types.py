"""What every loader returns: `Data`, with `Ragged` for integer sequences, and `take` for rows of either.

Conventions: labels are int64 class ids for classification and float32 for regression; tabular
inputs are float32 (NaN where `dataset.missing` leaves a cell to impute), or object arrays for a
CSV input with `dataset.categorical` columns (`Data.categorical` says which; kexp.preprocessing
imputes and one-hot encodes them per fold); images stay uint8 (preprocessing scales them);
imdb/reuters sequences are `Ragged`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Ragged:
    """Integer sequences stored flat: row i is `values[row_splits[i]:row_splits[i + 1]]`."""

    values: np.ndarray  # int32, every token of every row, concatenated
    row_splits: np.ndarray  # int64, len(self) + 1 offsets, starting at 0

    def __post_init__(self):
        self.values = _int32(np.asarray(self.values).ravel())
        self.row_splits = np.asarray(self.row_splits, dtype=np.int64).ravel()
        splits = self.row_splits
        if splits.size == 0 or splits[0] != 0 or splits[-1] != self.values.size:
            raise ValueError(
                f"row_splits must start at 0 and end at len(values)={self.values.size}; "
                f"got {splits[:1].tolist()}...{splits[-1:].tolist()}"
            )
        if np.any(splits[1:] < splits[:-1]):
            raise ValueError("row_splits must not decrease")

    def __len__(self) -> int:
        return self.row_splits.size - 1

    def lengths(self) -> np.ndarray:
        """Each row's length (int64)."""
        return np.diff(self.row_splits)

    def take(self, indices) -> Ragged:
        """The rows at `indices` (integers, negatives counting from the end, or a boolean mask), in
        that order; a copy, computed without a Python loop over rows."""
        index = np.asarray(indices)
        n = len(self)
        if index.dtype == bool:
            if index.shape != (n,):
                raise IndexError(f"a boolean mask needs shape ({n},); got {index.shape}")
            index = np.flatnonzero(index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise IndexError(f"indices must be a 1-D list of integers; got {index.dtype} {index.shape}")
        index = index.astype(np.int64, copy=False)
        if index.size and (index.min() < -n or index.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        index = np.where(index < 0, index + n, index)
        return Ragged(*gather_rows(self.values, self.row_splits, index))

    def to_lists(self) -> list[list[int]]:
        flat, splits = self.values.tolist(), self.row_splits.tolist()
        return [flat[a:b] for a, b in zip(splits[:-1], splits[1:])]

    @classmethod
    def from_lists(cls, seqs) -> Ragged:
        """From any sequence of integer sequences (lists, arrays, an object array of lists)."""
        if not hasattr(seqs, "__len__"):
            seqs = list(seqs)
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        splits = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=splits[1:])
        values = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(splits[-1]))
        return cls(values, splits)


Inputs = np.ndarray | Ragged | dict[str, np.ndarray]
Targets = np.ndarray | dict[str, np.ndarray]


@dataclass(eq=False)
class Data:
    """A loaded dataset. Dict-valued fields are keyed by model input (x) or output (y) name."""

    x_train: Inputs
    y_train: Targets
    x_test: Inputs | None
    y_test: Targets | None
    task: str | dict[str, str]  # "binary" | "multiclass" | "regression", per output for dict y
    num_classes: int | None | dict[str, int | None]  # 2 for binary, None for regression
    class_names: list[str] | None | dict[str, list[str] | None] = None  # names of ids 0..k-1
    feature_names: list[str] | None = None  # tabular data: the selected columns, in input order
    source: str = ""  # the file or folder read, or e.g. "sklearn.datasets.load_digits"
    vocab_size: int | None = None  # sequences: the largest token id + 1
    # CSV inputs with `dataset.categorical` columns: input ("x" for a single one) -> positions of the
    # columns holding category strings (that input is then an object array); None: none
    categorical: dict[str, list[int]] | None = None
    # `dataset.sample_weight`: each training row's weight in the loss (float32, >= 0); None: none
    w_train: np.ndarray | None = None


Loader = Callable[..., Data]


def _int32(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.int32:
        return values
    if values.size and values.dtype.kind not in "iu":
        raise ValueError(f"token ids must be integers; got {values.dtype}")
    if values.size and (values.min() < np.iinfo(np.int32).min or values.max() > np.iinfo(np.int32).max):
        raise ValueError("token ids do not fit in int32")
    return values.astype(np.int32)


def gather_rows(values: np.ndarray, splits: np.ndarray, index: np.ndarray):
    """(values, row_splits) of the rows at `index` (valid, non-negative), without a loop per row."""
    starts = splits[index]
    lengths = splits[index + 1] - starts
    new_splits = np.zeros(index.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_splits[1:])
    positions = np.arange(new_splits[-1], dtype=np.int64) + np.repeat(starts - new_splits[:-1], lengths)
    return values[positions], new_splits


def take(x: Inputs | Targets, indices: np.ndarray) -> Inputs | Targets:
    """Rows of raw data (an array, a Ragged, or a dict of them), in the order of `indices`."""
    if isinstance(x, dict):
        return {key: take(value, indices) for key, value in x.items()}
    return x.take(indices) if isinstance(x, Ragged) else x[indices]

