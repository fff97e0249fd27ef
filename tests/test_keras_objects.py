"""Keras objects by name: Keras' own lookups answer, kexp keeps no list of Keras names."""

import pytest

from kexp import keras_objects
from kexp.preprocessing import loss_encoding


@pytest.mark.parametrize("name, expected", [
    ("bce", "binary_crossentropy"), ("BinaryCrossentropy", "binary_crossentropy"), ("kld", "kl_divergence"),
    ("KLDivergence", "kl_divergence"), ("mse", "mean_squared_error"), ("Huber", "huber"),
    ("binarycrossentropy", None), ("os.system", None), (3, None),
])
def test_loss_name_is_the_canonical_name_keras_resolves_a_spelling_to(name, expected):
    assert keras_objects.loss_name(name) == expected


@pytest.mark.parametrize("name, encoding", [
    ("bce", "binary"), ("SquaredHinge", "binary"), ("CategoricalCrossentropy", "categorical"),
    ("kld", "categorical"), ("SparseCategoricalCrossentropy", "sparse"), ("mae", None), ("", None),
])
def test_the_label_encoding_of_a_loss_follows_every_spelling_keras_takes(name, encoding):
    assert loss_encoding(name) == encoding


def test_with_keras_defaults_fills_what_keras_gives_a_left_out_argument():
    config = {"model": {"layers": [{"layer": "Dense", "units": 2}, {"layer": "Nope"}]},
              "compile": {"optimizer": {"name": "ADAM"}, "loss": "mse", "metrics": ["mae"]},
              "training": {"callbacks": [{"name": "EarlyStopping", "patience": 3}]}}
    filled = keras_objects.with_keras_defaults(config)
    assert config["compile"]["optimizer"] == {"name": "ADAM"}, "the given config is not changed"
    assert filled["compile"]["optimizer"]["learning_rate"] == 0.001  # Keras' lookup ignores case
    assert filled["model"]["layers"][0]["use_bias"] is True and filled["model"]["layers"][0]["units"] == 2
    assert filled["model"]["layers"][1] == {"layer": "Nope"}
    assert filled["training"]["callbacks"][0]["patience"] == 3
    assert filled["training"]["callbacks"][0]["monitor"] == "val_loss"
    assert filled["compile"]["loss"] == "mse" and filled["compile"]["metrics"] == ["mae"]
