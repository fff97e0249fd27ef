"""Shared fixtures. Append new fixtures; do not rewrite the ones others use."""

import pytest

# A tiny offline experiment: scikit-learn's iris (150 rows, 4 features, 3 classes), one small hidden
# layer. A `kexp train` of it spends nearly all of its time importing TensorFlow.
TINY_CONFIG = """\
seed: 0
dataset: {name: iris}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, units: 4, activation: relu}
    - {layer: Dense, units: 3, activation: softmax}
compile:
  optimizer: {name: adam, learning_rate: 0.01}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
training: {epochs: 2, batch_size: 32}
validation: {scheme: holdout, size: 0.2, shuffle: true}
"""


@pytest.fixture
def tiny_config(tmp_path):
    """Path of `tiny.yaml` (TINY_CONFIG) in a fresh temporary folder."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path
