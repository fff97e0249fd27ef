"""Checks before training (issue 14, items 4 and 8): whatever `validate` accepts must train, and every
problem of a config is reported in one run, each with its dotted key and, for typos, a suggestion."""

import sys
import textwrap

import numpy as np
import pytest
from cli_runner import invoke, stderr_of
from helpers import TINY_CONFIG

IRIS = TINY_CONFIG.replace("seed: 0\n", "").replace("epochs: 2", "epochs: 1")


def write(tmp_path, text, name="exp.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def validate(path, *args):
    """(exit code, stderr lines) of `kexp validate PATH ARGS...`."""
    result = invoke("validate", path, *args)
    return result.exit_code, stderr_of(result).splitlines()


def only(lines, key):
    found = [line for line in lines if line.split(": ")[1] == key]
    assert len(found) == 1, (key, lines)
    return found[0]


SIX_TYPOS = """\
dataset: {name: iris}
model:
  layers:
    - {layer: Dense, untis: 4, activation: rellu}
    - {layer: Dense, units: 3, activation: softmax}
compile:
  optimizer: adamm
  loss: msee
  metrics: [maee]
training: {epochs: 1, callbacks: [EarlyStoping]}
"""


@pytest.mark.parametrize("data", ["--data", "--no-data"])
def test_six_typos_are_all_reported_in_one_run_with_suggestions(tmp_path, data):
    path = write(tmp_path, SIX_TYPOS)
    code, lines = validate(path, data)
    assert code == 2
    assert all(line.startswith(f"{path}: ") for line in lines), lines
    assert "(did you mean units?)" in only(lines, "model.layers.0.untis")
    assert "(did you mean relu" in only(lines, "model.layers.0.activation")
    assert "got 'rellu'" in only(lines, "model.layers.0.activation")
    assert "(did you mean adam" in only(lines, "compile.optimizer.name")
    assert "(did you mean mse" in only(lines, "compile.loss")
    assert "(did you mean mae" in only(lines, "compile.metrics.0")
    assert "(did you mean EarlyStopping?)" in only(lines, "training.callbacks.0.name")
    assert len(lines) == 6, lines


def test_validate_without_data_catches_the_readme_untis_example(tmp_path):
    path = write(tmp_path, IRIS.replace("units: 3", "untis: 3"))
    code, lines = validate(path, "--no-data")
    assert code == 2
    assert lines == [line for line in lines if "model.layers.1.untis: not an argument of Dense (did you mean units?)"
                     in line] and len(lines) == 1, lines
    code, lines = validate(write(tmp_path, IRIS), "--no-data")
    assert code == 0, lines


def test_an_unrelated_compile_error_adds_no_monitor_complaint(tmp_path):
    path = write(tmp_path, IRIS.replace("name: adam,", "name: adamm,")
                 .replace("shuffle: true}", "shuffle: true, monitor: val_accuracy}"))
    code, lines = validate(path)
    assert code == 2
    assert len(lines) == 1 and ": compile.optimizer.name: " in lines[0], lines


def test_optimizer_argument_alias_suggests_the_keras_name(tmp_path):
    code, lines = validate(write(tmp_path, IRIS.replace("learning_rate: 0.01", "lr: 0.01")), "--no-data")
    assert code == 2
    assert "not an argument of Adam (did you mean learning_rate?)" in only(lines, "compile.optimizer.lr")


def test_callback_arguments_swallowed_by_keras_are_errors(tmp_path):
    text = IRIS + "training: {epochs: 1, callbacks: [{name: ReduceLROnPlateau, patiense: 1}]}\n"
    code, lines = validate(write(tmp_path, text.replace("training: {epochs: 1, batch_size: 32}\n", "")))
    assert code == 2
    assert "not an argument of ReduceLROnPlateau (did you mean patience?)" in only(
        lines, "training.callbacks.0.patiense")


def test_callback_monitor_must_be_a_logged_metric(tmp_path):
    text = IRIS.replace("training: {epochs: 1, batch_size: 32}",
                        "training: {epochs: 1, callbacks: [{name: EarlyStopping, monitor: val_acuracy}]}")
    code, lines = validate(write(tmp_path, text))
    assert code == 2
    line = only(lines, "training.callbacks.0.monitor")
    assert "not a logged metric (did you mean val_accuracy" in line and "got 'val_acuracy'" in line
    assert "allowed: val_loss, val_accuracy, loss, accuracy" in line


def test_monitor_names_of_a_two_output_model_are_checked(tmp_path):
    text = """\
    dataset: {name: iris}
    model:
      layers:
        - {layer: Dense, units: 4, name: h}
        - {layer: Dense, units: 1, name: price}
        - {layer: Dense, units: 3, activation: softmax, name: band, inputs: h}
      outputs: [price, band]
    compile:
      loss: {price: mse, band: sparse_categorical_crossentropy}
      metrics: {price: [mae], band: [accuracy]}
    validation: {monitor: val_price_mea}
    """
    code, lines = validate(write(tmp_path, text), "--no-data")
    assert code == 2
    line = only(lines, "validation.monitor")
    assert "(did you mean val_price_mae" in line and "val_band_accuracy" in line and "val_price_loss" in line


def test_tensorboard_without_its_package_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    text = IRIS.replace("training: {epochs: 1, batch_size: 32}",
                        "training: {epochs: 1, callbacks: [{name: TensorBoard, log_dir: tb}]}")
    code, lines = validate(write(tmp_path, text), "--no-data")
    assert code == 2
    assert "TensorBoard needs the tensorboard package" in only(lines, "training.callbacks.0.name")
    assert "pip install tensorboard" in lines[0]


@pytest.mark.parametrize("data", ["--data", "--no-data"])
def test_loss_weights_for_an_output_the_model_lacks(tmp_path, data):
    code, lines = validate(write(tmp_path, IRIS.replace("metrics: [accuracy]",
                                                          "metrics: [accuracy]\n  loss_weights: {price: 1.0}")), data)
    assert code == 2
    assert "the model has no output 'price'; outputs: model.layers.1 (unnamed)" in only(
        lines, "compile.loss_weights.price")


@pytest.mark.parametrize("data", ["--data", "--no-data"])
def test_crossentropy_on_a_linear_last_layer_says_both_fixes(tmp_path, data):
    code, lines = validate(write(tmp_path, IRIS.replace("units: 3, activation: softmax", "units: 3")), data)
    assert code == 2
    line = only(lines, "model.layers.1.activation")
    assert "sparse_categorical_crossentropy expects probabilities" in line and "activation is linear" in line
    assert "set activation: softmax" in line
    assert "compile.loss: {name: SparseCategoricalCrossentropy, from_logits: true}" in line


def test_logits_with_from_logits_true_are_accepted(tmp_path):
    text = IRIS.replace("units: 3, activation: softmax", "units: 3").replace(
        "loss: sparse_categorical_crossentropy", "loss: {name: SparseCategoricalCrossentropy, from_logits: true}")
    code, lines = validate(write(tmp_path, text))
    assert code == 0, lines


def test_images_without_a_channel_axis_into_conv2d_say_how_to_add_one(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "img.npz", x_train=rng.random((20, 8, 8)).astype("float32"),
             y_train=np.arange(20) % 2, x_test=rng.random((4, 8, 8)).astype("float32"), y_test=np.arange(4) % 2)
    text = """\
    dataset: {name: npz, path: img.npz}
    model:
      layers:
        - {layer: Conv2D, filters: 2, kernel_size: 3}
        - Flatten
        - {layer: Dense, units: 1, activation: sigmoid}
    compile: {loss: binary_crossentropy}
    """
    code, lines = validate(write(tmp_path, text))
    assert code == 2
    line = only(lines, "model.layers.0")
    assert "Conv2D cannot take its input: the data has shape (8, 8) per sample, one axis short" in line
    assert "preprocessing.channels_last: true" in line and "{layer: Reshape, target_shape: [8, 8, 1]}" in line


def test_stratified_holdout_of_one_sample_is_a_config_error(tmp_path):
    text = IRIS.replace("{scheme: holdout, size: 0.2, shuffle: true}",
                        "{scheme: holdout, size: 1, shuffle: true, stratify: true}")
    code, lines = validate(write(tmp_path, text))
    assert code == 2
    line = only(lines, "validation.size")
    assert "fewer than the 3 classes" in line and "use a size of at least 3" in line
    assert "test_size" not in line and "should be greater" not in line  # not scikit-learn's wording


def test_learning_rate_schedule_resolves_through_keras_and_trains(tmp_path):
    text = IRIS.replace("learning_rate: 0.01", "learning_rate: {name: ExponentialDecay, "
                        "initial_learning_rate: 0.01, decay_steps: 10, decay_rate: 0.9}")
    path = write(tmp_path, text)
    result = invoke("train", path, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    code, lines = validate(write(tmp_path, text.replace("decay_rate", "decay_rat"), "typo.yaml"))
    assert code == 2
    assert "(did you mean decay_rate" in only(lines, "compile.optimizer.learning_rate.decay_rat")


def test_a_metric_class_is_logged_under_one_name_by_check_and_training(tmp_path):
    """Keras numbers each new unnamed metric object (auc, auc_1, ...): the model `check` builds must
    not shift the name the trained model logs, or `monitor: val_auc` would watch nothing."""
    text = """\
    dataset: {name: breast_cancer}
    preprocessing: {standardize: true}
    model:
      layers:
        - {layer: Dense, units: 1, activation: sigmoid}
    compile: {loss: binary_crossentropy, metrics: [{name: AUC, num_thresholds: 20}]}
    training: {epochs: 2}
    validation: {monitor: val_auc, mode: max}
    """
    runs_dir = tmp_path / "runs"
    result = invoke("train", write(tmp_path, text), "--runs-dir", runs_dir, "--quiet")
    assert result.exit_code == 0, result.output
    (run,) = runs_dir.iterdir()
    header = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert "val_auc" in header, header
    assert (run / "best.keras").exists()


def test_a_probabilistic_metric_on_a_binary_target_passes_the_checks(tmp_path):
    text = """\
    dataset: {name: breast_cancer}
    model:
      layers:
        - {layer: Dense, units: 1, activation: sigmoid}
    compile: {loss: binary_crossentropy, metrics: [accuracy, binary_crossentropy, KLDivergence]}
    validation: {monitor: val_binary_crossentropy}
    """
    assert validate(write(tmp_path, text)) == (0, [])


def test_a_metric_named_by_a_string_that_cannot_read_the_labels_is_a_config_error(tmp_path):
    """Keras resolves `metrics: [categorical_crossentropy]` at compile time; on class-id labels it
    fails in the first training step unless the checks compute it first."""
    text = IRIS.replace("metrics: [accuracy]", "metrics: [accuracy, categorical_crossentropy]")
    code, lines = validate(write(tmp_path, text))
    assert code == 2
    line = only(lines, "compile.metrics.1")
    assert "categorical_crossentropy needs one 0/1 column per class" in line
    assert "or use sparse_categorical_crossentropy" in line


def test_a_metric_class_named_without_arguments_keeps_one_name(tmp_path):
    from kexp.config import validate_config
    from kexp.models import make_metrics

    config = validate_config({"dataset": {"name": "iris"}, "model": {"layers": [{"layer": "Dense", "units": 1}]},
                              "compile": {"loss": "binary_crossentropy", "metrics": ["AUC", "mae"]}})
    from kexp.errors import Problems

    names = [[m if isinstance(m, str) else m.name for m in make_metrics(config, ["out"], Problems())]
             for _ in range(3)]
    assert names == [["auc", "mae"]] * 3


def test_a_seed_outside_what_numpy_takes_is_a_config_error_before_any_check(tmp_path):
    text = IRIS.replace("{scheme: holdout, size: 0.2, shuffle: true}", "{scheme: kfold, n_splits: 3, shuffle: true}")
    code, lines = validate(write(tmp_path, "seed: -1\n" + text))
    assert code == 2
    wanted = "exp.yaml: seed: input should be greater than or equal to 0; got -1"
    assert any(line.endswith(wanted) for line in lines), lines
