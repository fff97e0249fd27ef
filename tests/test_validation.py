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


def test_kfold_with_shuffle_and_one_repeat_shuffles_by_seed():
    scheme = KFold(scheme="kfold", n_splits=3, shuffle=True)
    splits = kfold_splits(30, scheme, seed=0)
    _check_coverage(splits, 30, 3, 1)
    contiguous = [list(range(10)), list(range(10, 20)), list(range(20, 30))]
    assert [s.val_idx.tolist() for s in splits] != contiguous, "shuffle: true must not give contiguous folds"
    assert all(s.val_idx.tolist() != list(range(s.val_idx.min(), s.val_idx.max() + 1)) for s in splits)
    again = kfold_splits(30, scheme, seed=0)
    assert [s.val_idx.tolist() for s in again] == [s.val_idx.tolist() for s in splits], "same seed, same folds"
    other = kfold_splits(30, scheme, seed=1)
    assert [s.val_idx.tolist() for s in other] != [s.val_idx.tolist() for s in splits], "the seed is used"


def test_stratified_kfold_with_shuffle_keeps_class_balance_and_shuffles():
    labels = np.array([0] * 40 + [1] * 20)
    splits = make_splits(60, KFold(scheme="kfold", n_splits=4, shuffle=True, stratify=True), 0, labels)
    _check_coverage(splits, 60, 4, 1)
    for s in splits:
        assert np.bincount(labels[s.val_idx]).tolist() == [10, 5]
    unshuffled = make_splits(60, KFold(scheme="kfold", n_splits=4, stratify=True), 0, labels)
    assert [s.val_idx.tolist() for s in splits] != [s.val_idx.tolist() for s in unshuffled]


def test_iterated_kfold_honours_stratify_in_every_repeat():
    labels = np.array([0] * 40 + [1] * 20)
    scheme = KFold(scheme="kfold", n_splits=4, repeats=3, shuffle=True, stratify=True)
    splits = make_splits(60, scheme, 7, labels)
    _check_coverage(splits, 60, 4, 3)
    for s in splits:
        assert np.bincount(labels[s.val_idx], minlength=2).tolist() == [10, 5], s.id
    # without stratify, some fold of some repeat is unbalanced for this seed (the test's control)
    plain = make_splits(60, KFold(scheme="kfold", n_splits=4, repeats=3, shuffle=True), 7, labels)
    assert any(np.bincount(labels[s.val_idx], minlength=2).tolist() != [10, 5] for s in plain)


# --------------------------------------------------------------------------- mutation-testing kills (TESTING.md)
def _holdout(**kw):
    return Holdout(scheme="holdout", **kw)


@pytest.mark.parametrize("shuffle", [False, True])
def test_a_holdout_split_is_one_split_named_holdout_repeat_0_fold_0(shuffle):
    (split,) = holdout_split(20, _holdout(size=5, shuffle=shuffle), seed=0)
    assert (split.id, split.repeat, split.fold) == ("holdout", 0, 0)
    assert type(split.repeat) is int and type(split.fold) is int


def test_holdout_size_bounds_one_sample_and_all_but_one_are_allowed_zero_is_an_error():
    assert holdout_split(10, _holdout(size=1), seed=0)[0].val_idx.tolist() == [0]
    assert holdout_split(10, _holdout(size=9), seed=0)[0].train_idx.tolist() == [9]
    with pytest.raises(ValueError, match=r"^validation\.size: 0\.01 leaves no training or validation samples of 10$"):
        holdout_split(10, _holdout(size=0.01), seed=0)  # rounds to 0 validation samples


@pytest.mark.parametrize("stratify", [False, True])
def test_a_shuffled_holdout_is_scikit_learns_split_with_the_seed_and_size(stratify):
    from sklearn.model_selection import train_test_split

    labels = np.array([0] * 70 + [1] * 30)
    (split,) = holdout_split(100, _holdout(size=0.2, shuffle=True, stratify=stratify), 5, labels)
    train, val = train_test_split(np.arange(100), test_size=20, random_state=5, shuffle=True,
                                  stratify=labels if stratify else None)
    assert split.val_idx.tolist() == sorted(val) and split.train_idx.tolist() == sorted(train)
    (other,) = holdout_split(100, _holdout(size=0.2, shuffle=True, stratify=stratify), 6, labels)
    assert other.val_idx.tolist() != split.val_idx.tolist()


def test_stratify_false_ignores_the_labels_even_a_class_with_one_sample():
    labels = np.array([0] * 9 + [1] * 10 + [2])
    (split,) = holdout_split(20, _holdout(size=5, shuffle=True), 0, labels)
    assert len(split.val_idx) == 5


@pytest.mark.parametrize("size, labels, message", [
    (0.05, [0] * 10 + [1] * 10 + [2] * 10, r"^validation\.size: 0\.05 gives 2 validation samples, fewer than the 3 "
                                           r"classes that stratify: true puts in each part; use a size of at least 3 "
                                           r"\(or a fraction such as 0\.2\), or set stratify: false$"),
    (28, [0] * 10 + [1] * 10 + [2] * 10, r"^validation\.size: 28 leaves 2 training samples, fewer than the 3 classes "
                                         r"that stratify: true puts in each part; use a smaller size, or set "
                                         r"stratify: false$"),
    (5, [0] * 10 + [1] * 9 + [7], r"^validation\.stratify: class np\.int64\(7\) has 1 sample|^validation\.stratify: "
                                  r"class 7 has 1 sample; a stratified split needs at least 2 of each class; set "
                                  r"stratify: false$"),
])
def test_a_stratified_holdout_scikit_learn_would_refuse_is_explained_in_config_terms(size, labels, message):
    with pytest.raises(ValueError, match=message):
        holdout_split(len(labels), _holdout(size=size, shuffle=True, stratify=True), 0, np.array(labels))


@pytest.mark.parametrize("size, labels", [
    (3, [0] * 10 + [1] * 10 + [2] * 10),  # exactly one validation sample per class
    (27, [0] * 10 + [1] * 10 + [2] * 10),  # exactly one training sample per class
    (4, [0] * 10 + [1] * 8 + [2] * 2),  # the rarest class has the 2 samples a stratified split needs
])
def test_a_stratified_holdout_at_the_limits_is_allowed(size, labels):
    labels = np.array(labels)
    (split,) = holdout_split(len(labels), _holdout(size=size, shuffle=True, stratify=True), 0, labels)
    assert len(split.val_idx) == size
    assert sorted([*split.val_idx, *split.train_idx]) == list(range(len(labels)))
    assert set(labels[split.train_idx]) == set(labels)


def test_kfold_limits_as_many_folds_as_samples_and_a_class_as_large_as_the_folds():
    assert [s.val_idx.tolist() for s in kfold_splits(3, KFold(scheme="kfold", n_splits=3), 0)] == [[0], [1], [2]]
    with pytest.raises(ValueError, match=r"^validation\.n_splits: 4 folds need at least that many samples; got 3$"):
        kfold_splits(3, KFold(scheme="kfold", n_splits=4), 0)
    labels = np.array([0, 0, 0, 1, 1, 1])
    splits = kfold_splits(6, KFold(scheme="kfold", n_splits=3, stratify=True, shuffle=True), 0, labels)
    assert all(sorted(labels[s.val_idx].tolist()) == [0, 1] for s in splits)
    with pytest.raises(ValueError, match=r"^validation\.n_splits: 3 stratified folds need a class with at least 3 "
                                         r"samples; use fewer folds, or set stratify: false$"):
        kfold_splits(4, KFold(scheme="kfold", n_splits=3, stratify=True, shuffle=True), 0, np.array([0, 0, 1, 1]))


def test_stratified_kfold_without_labels_splits_as_one_class():
    """Regression targets have no classes: stratify then splits as if all samples were one class."""
    splits = kfold_splits(9, KFold(scheme="kfold", n_splits=3, stratify=True, shuffle=True), 0)
    _check_coverage(splits, 9, 3, 1)
    assert [len(s.val_idx) for s in splits] == [3, 3, 3]


def test_kfold_split_ids_repeats_and_folds_number_every_split():
    splits = kfold_splits(12, KFold(scheme="kfold", n_splits=3, repeats=2, shuffle=True), 0)
    assert [(s.id, s.repeat, s.fold) for s in splits] == [
        ("r0-f0", 0, 0), ("r0-f1", 0, 1), ("r0-f2", 0, 2), ("r1-f0", 1, 0), ("r1-f1", 1, 1), ("r1-f2", 1, 2)]


@pytest.mark.parametrize("scheme", [_holdout(size=0.25, shuffle=True, stratify=True),
                                    KFold(scheme="kfold", n_splits=4, shuffle=True, stratify=True)])
def test_make_splits_passes_the_size_seed_and_labels_on(scheme):
    labels = np.array([0] * 30 + [1] * 10)
    direct = (kfold_splits if isinstance(scheme, KFold) else holdout_split)(40, scheme, 3, labels)
    made = make_splits(40, scheme, 3, labels)
    assert [s.val_idx.tolist() for s in made] == [s.val_idx.tolist() for s in direct]
    assert [s.val_idx.tolist() for s in make_splits(40, scheme, 4, labels)] != [s.val_idx.tolist() for s in made]
    assert all(np.bincount(labels[s.val_idx]).tolist() in ([7, 3], [8, 2], [7, 2], [8, 3]) for s in made)
    assert all(len(s.val_idx) == 10 for s in made)


def test_a_split_round_trips_through_its_dict_as_written_to_folds_json():
    import json

    from kexp.validation import Split

    split = kfold_splits(10, KFold(scheme="kfold", n_splits=5, repeats=2, shuffle=True), 0)[7]
    data = json.loads(json.dumps(split.to_dict()))
    assert data == {"id": "r1-f2", "repeat": 1, "fold": 2, "train_idx": split.train_idx.tolist(),
                    "val_idx": split.val_idx.tolist()}
    back = Split.from_dict({**data, "repeat": "1", "fold": 2.0})
    assert (back.id, back.repeat, back.fold) == ("r1-f2", 1, 2) and type(back.repeat) is int
    assert type(back.fold) is int
    assert back.train_idx.dtype == np.int64 and back.val_idx.dtype == np.int64
    assert back.train_idx.tolist() == split.train_idx.tolist() and back.val_idx.tolist() == split.val_idx.tolist()
    empty = Split.from_dict({"id": "x", "repeat": 0, "fold": 0, "train_idx": [], "val_idx": []})
    assert empty.train_idx.dtype == np.int64 and empty.val_idx.dtype == np.int64


def test_a_class_with_one_sample_is_named_with_the_whole_advice():
    with pytest.raises(ValueError) as info:
        holdout_split(20, _holdout(size=5, shuffle=True, stratify=True), 0, np.array([0] * 10 + [1] * 9 + [7]))
    message = str(info.value)  # a class id reads as people write it: 7, not np.int64(7)
    assert message == ("validation.stratify: class 7 has 1 sample; a stratified split needs at least 2 of each "
                       "class; set stratify: false")
