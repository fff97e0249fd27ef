"""Validation schemes as `(train_idx, val_idx)` splits: hold-out is the one-split case.

K-fold uses scikit-learn's splitters (KFold, StratifiedKFold and their Repeated* forms), so folds
cover every training sample exactly once per repeat. Also the fold aggregates: the per-epoch mean
validation curve over folds and its (optionally smoothed) best epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kexp.config import Holdout, KFold


@dataclass(frozen=True)
class Split:
    id: str  # "holdout", or "r0-f2" (repeat 0, fold 2)
    repeat: int
    fold: int
    train_idx: np.ndarray
    val_idx: np.ndarray

    def to_dict(self) -> dict:
        return {"id": self.id, "repeat": self.repeat, "fold": self.fold,
                "train_idx": self.train_idx.tolist(), "val_idx": self.val_idx.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Split:
        return cls(d["id"], int(d["repeat"]), int(d["fold"]),
                   np.asarray(d["train_idx"], dtype="int64"), np.asarray(d["val_idx"], dtype="int64"))


def holdout_split(n: int, scheme: Holdout, seed: int, labels: np.ndarray | None = None) -> list[Split]:
    """The first `size` samples (or a shuffled, optionally stratified, draw) as validation."""
    size = scheme.size if isinstance(scheme.size, int) else int(round(scheme.size * n))
    if not 0 < size < n:
        raise ValueError(f"validation.size: {scheme.size} leaves no training or validation samples of {n}")
    index = np.arange(n)
    if not scheme.shuffle:
        return [Split("holdout", 0, 0, index[size:], index[:size])]
    if scheme.stratify and labels is not None:
        _check_strata(labels, size, n, scheme.size)
    from sklearn.model_selection import train_test_split

    train, val = train_test_split(index, test_size=size, random_state=seed, shuffle=True,
                                  stratify=labels if scheme.stratify else None)
    return [Split("holdout", 0, 0, np.sort(train), np.sort(val))]


def _check_strata(labels: np.ndarray, size: int, n: int, given) -> None:
    """What scikit-learn's stratified split would refuse, said in config terms."""
    classes, counts = np.unique(labels, return_counts=True)
    k = len(classes)
    if size < k:
        raise ValueError(f"validation.size: {given} gives {size} validation samples, fewer than the {k} classes "
                         f"that stratify: true puts in each part; use a size of at least {k} (or a fraction "
                         "such as 0.2), or set stratify: false")
    if n - size < k:
        raise ValueError(f"validation.size: {given} leaves {n - size} training samples, fewer than the {k} "
                         "classes that stratify: true puts in each part; use a smaller size, or set stratify: false")
    if counts.min() < 2:
        rare = classes[counts.argmin()].item()  # 7 or 'fraud', not np.int64(7)
        raise ValueError(f"validation.stratify: class {rare!r} has 1 sample; a stratified split needs at least 2 "
                         "of each class; set stratify: false")


def kfold_splits(n: int, scheme: KFold, seed: int, labels: np.ndarray | None = None) -> list[Split]:
    """K folds (P times with reshuffling when repeats > 1) from scikit-learn's splitters."""
    from sklearn import model_selection as ms

    if scheme.n_splits > n:
        raise ValueError(f"validation.n_splits: {scheme.n_splits} folds need at least that many samples; got {n}")
    stratified = scheme.stratify
    if stratified and labels is not None and np.unique(labels, return_counts=True)[1].max() < scheme.n_splits:
        raise ValueError(f"validation.n_splits: {scheme.n_splits} stratified folds need a class with at least "
                         f"{scheme.n_splits} samples; use fewer folds, or set stratify: false")
    if scheme.repeats > 1:
        cls = ms.RepeatedStratifiedKFold if stratified else ms.RepeatedKFold
        splitter = cls(n_splits=scheme.n_splits, n_repeats=scheme.repeats, random_state=seed)
    else:
        cls = ms.StratifiedKFold if stratified else ms.KFold
        splitter = cls(n_splits=scheme.n_splits, shuffle=scheme.shuffle,
                       random_state=seed if scheme.shuffle else None)
    index = np.zeros(n) if labels is None else labels
    splits = []
    for i, (train, val) in enumerate(splitter.split(np.zeros((n, 1)), index if stratified else None)):
        repeat, fold = divmod(i, scheme.n_splits)
        splits.append(Split(f"r{repeat}-f{fold}", repeat, fold, train, val))
    return splits


def make_splits(n: int, scheme: Holdout | KFold, seed: int, labels: np.ndarray | None = None) -> list[Split]:
    if isinstance(scheme, KFold):
        return kfold_splits(n, scheme, seed, labels)
    return holdout_split(n, scheme, seed, labels)


def mean_curve(curves: list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch mean and std (ddof=0) over folds, up to the shortest fold (early stopping)."""
    length = min(len(c) for c in curves)
    stacked = np.asarray([c[:length] for c in curves], dtype="float64")
    return stacked.mean(axis=0), stacked.std(axis=0)


def splits_for(config, data) -> list[Split]:
    """The config's validation splits of a dataset's training rows (stratified on the first output's
    class ids when asked); a ValueError names the `validation` key at fault."""
    y = next(iter(data.y_train.values())) if isinstance(data.y_train, dict) else data.y_train
    task = next(iter(data.task.values())) if isinstance(data.task, dict) else data.task
    labels = np.asarray(y).reshape(len(y), -1)[:, 0] if task != "regression" else None
    try:
        return make_splits(len(y), config.validation, config.split_seed, labels)
    except ValueError as exc:
        text = str(exc)
        if not text.startswith("validation."):
            text = f"validation: {text}"
        raise ValueError(text) from None
