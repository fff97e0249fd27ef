"""Validation splits: hold-out and (iterated, stratified) K-fold, and the fold curve aggregate."""

import numpy as np
import pytest

from kexp.config import Holdout, KFold
from kexp.validation import holdout_split, kfold_splits, make_splits, mean_curve


def test_holdout_count_takes_the_first_samples_like_the_classic_examples():
    (split,) = holdout_split(10, Holdout(scheme="holdout", size=3), seed=0)
    assert split.val_idx.tolist() == [0, 1, 2]
    assert split.train_idx.tolist() == list(range(3, 10))


def test_holdout_fraction_shuffled_and_stratified_keeps_class_balance():
    labels = np.array([0] * 80 + [1] * 20)
    (split,) = holdout_split(100, Holdout(scheme="holdout", size=0.25, shuffle=True, stratify=True), 0, labels)
    assert len(split.val_idx) == 25
    assert np.bincount(labels[split.val_idx]).tolist() == [20, 5]
    assert not set(split.val_idx) & set(split.train_idx)
    assert sorted([*split.val_idx, *split.train_idx]) == list(range(100))


def test_holdout_too_large_is_an_error():
    with pytest.raises(ValueError, match="validation.size"):
        holdout_split(10, Holdout(scheme="holdout", size=10), seed=0)


def _check_coverage(splits, n, n_splits, repeats):
    assert len(splits) == n_splits * repeats
    for repeat in range(repeats):
        folds = [s for s in splits if s.repeat == repeat]
        seen = np.concatenate([s.val_idx for s in folds])
        assert sorted(seen.tolist()) == list(range(n)), "every sample validated exactly once per repeat"
        for s in folds:
            assert not set(s.train_idx) & set(s.val_idx)
            assert len(s.train_idx) + len(s.val_idx) == n


def test_kfold_folds_cover_every_sample_once_in_contiguous_partitions():
    splits = kfold_splits(404, KFold(scheme="kfold", n_splits=4), seed=0)
    _check_coverage(splits, 404, 4, 1)
    assert splits[1].val_idx.tolist() == list(range(101, 202)), "contiguous, unshuffled like the Boston example"
    assert [s.id for s in splits] == ["r0-f0", "r0-f1", "r0-f2", "r0-f3"]


def test_iterated_kfold_reshuffles_each_repeat_and_covers_each_time():
    scheme = KFold(scheme="kfold", n_splits=3, repeats=2, shuffle=True)
    splits = kfold_splits(30, scheme, seed=5)
    _check_coverage(splits, 30, 3, 2)
    assert splits[0].val_idx.tolist() != splits[3].val_idx.tolist()
    again = kfold_splits(30, scheme, seed=5)
    assert all((a.val_idx == b.val_idx).all() for a, b in zip(splits, again)), "same seed, same folds"


def test_stratified_kfold_balances_classes():
    labels = np.array([0] * 40 + [1] * 20)
    splits = make_splits(60, KFold(scheme="kfold", n_splits=4, stratify=True), 0, labels)
    _check_coverage(splits, 60, 4, 1)
    for s in splits:
        assert np.bincount(labels[s.val_idx]).tolist() == [10, 5]


def test_more_folds_than_samples_is_an_error():
    with pytest.raises(ValueError, match="validation.n_splits"):
        kfold_splits(3, KFold(scheme="kfold", n_splits=4), seed=0)


def test_mean_curve_is_the_per_epoch_mean_up_to_the_shortest_fold():
    mean, std = mean_curve([[1.0, 2.0, 3.0], [3.0, 4.0]])
    assert mean.tolist() == [2.0, 3.0]
    assert std.tolist() == [1.0, 1.0]
