"""Model building through Keras' registries: sequential stacks, functional graphs, compile, errors."""

import numpy as np
import pytest

from kexp.config import validate_config
from kexp.errors import Problems
from kexp.models import build_model, compile_model, make_callbacks, metric_directions


def config(layers, **sections):
    raw = {"dataset": {"name": "boston_housing"}, "model": {"layers": layers},
           "compile": {"loss": "mse", "metrics": ["mae"]}}
    raw.update(sections)
    return validate_config(raw)


def build(layers, shape=(4,), **sections):
    problems = Problems()
    model = build_model(config(layers, **sections), shape, problems)
    return model, problems.lines


def test_sequential_stack_with_names_resolved_by_keras():
    model, problems = build([
        {"layer": "Dense", "units": 8, "activation": "relu", "kernel_regularizer": {"name": "L2", "l2": 0.01},
         "kernel_initializer": "he_normal"},
        {"layer": "Dropout", "rate": 0.5},
        "BatchNormalization",
        {"layer": "Dense", "units": 1},
    ])
    assert problems == []
    assert model.input_shape == (None, 4) and model.output_shape == (None, 1)
    dense = model.layers[1]
    assert type(dense).__name__ == "Dense" and dense.units == 8
    assert type(dense.kernel_regularizer).__name__ == "L2"
    assert abs(float(dense.kernel_regularizer.l2) - 0.01) < 1e-9


def test_functional_graph_with_two_inputs_merge_and_two_outputs():
    problems = Problems()
    cfg = validate_config({
        "dataset": {"name": "boston_housing"},
        "model": {
            "inputs": ["a", "b"],
            "layers": [
                {"layer": "Dense", "name": "da", "units": 4, "inputs": "a"},
                {"layer": "Dense", "name": "db", "units": 4, "inputs": "b"},
                {"layer": "Concatenate", "name": "merged", "inputs": ["da", "db"]},
                {"layer": "Dense", "name": "price", "units": 1},
                {"layer": "Dense", "name": "cheap", "units": 1, "activation": "sigmoid", "inputs": "merged"},
            ],
            "outputs": ["price", "cheap"],
        },
        "compile": {"loss": {"price": "mse", "cheap": "binary_crossentropy"},
                    "loss_weights": {"price": 1.0, "cheap": 0.5}, "metrics": {"price": ["mae"]}},
    })
    model = build_model(cfg, {"a": (3,), "b": (5,)}, problems)
    assert problems.lines == []
    assert [tuple(t.shape) for t in model.inputs] == [(None, 3), (None, 5)]
    assert sorted(model.output_names) == ["cheap", "price"]
    assert model.get_layer("price").input.shape == (None, 8)
    assert compile_model(model, cfg, problems), problems.lines


def test_unknown_layer_lists_close_matches():
    _, problems = build([{"layer": "Dence", "units": 1}])
    assert problems[0].startswith("model.layers.0.layer: unknown Keras layer (did you mean Dense")


def test_unknown_layer_argument_names_the_key_and_allowed_arguments():
    _, problems = build([{"layer": "Dense", "untis": 1}])
    assert problems[0].startswith("model.layers.0.untis: not an argument of Dense (did you mean units?)")
    assert "kernel_regularizer" in problems[0]


def test_bad_values_and_shapes_are_reported_by_layer():
    _, problems = build([{"layer": "Dense", "units": -2}])
    assert problems and problems[0].startswith("model.layers.0: Dense:")
    _, problems = build([{"layer": "Conv2D", "filters": 2, "kernel_size": 3}])
    assert problems[0].startswith("model.layers.0: Conv2D cannot take its input")


def test_graph_reference_to_an_unknown_layer():
    _, problems = build([{"layer": "Dense", "name": "h", "units": 2},
                         {"layer": "Dense", "units": 1, "inputs": "hh"}])
    assert problems[0].startswith("model.layers.1.inputs: unknown 'hh' (did you mean h?)")


@pytest.mark.parametrize("compile_section, expected", [
    ({"loss": "mse", "optimizer": "adamm"}, "compile.optimizer.name: unknown Keras optimizer (did you mean"),
    ({"loss": "mse", "optimizer": {"name": "adam", "learnin_rate": 0.1}},
     "compile.optimizer.learnin_rate: not an argument of Adam (did you mean learning_rate?)"),
    ({"loss": "msee"}, "compile.loss: unknown Keras loss"),
    ({"loss": {"name": "mse", "delta": 1}}, "compile.loss: mse is a function and takes no arguments"),
    ({"loss": "mse", "metrics": ["accuracy", "maee"]}, "compile.metrics.1: unknown Keras metric"),
])
def test_compile_problems(compile_section, expected):
    cfg = config([{"layer": "Dense", "units": 1}], compile=compile_section)
    problems = Problems()
    model = build_model(cfg, (4,), problems)
    assert not compile_model(model, cfg, problems)
    assert any(line.startswith(expected) for line in problems.lines), problems.lines


def test_optimizer_and_loss_arguments_reach_keras():
    cfg = config([{"layer": "Dense", "units": 1, "activation": "sigmoid"}],
                 compile={"optimizer": {"name": "adam", "learning_rate": 0.005},
                          "loss": {"name": "BinaryCrossentropy", "label_smoothing": 0.1},
                          "metrics": ["accuracy", {"name": "AUC", "num_thresholds": 50}]})
    problems = Problems()
    model = build_model(cfg, (4,), problems)
    assert compile_model(model, cfg, problems), problems.lines
    assert type(model.optimizer).__name__ == "Adam"
    assert abs(float(model.optimizer.learning_rate) - 0.005) < 1e-9
    assert model.loss.label_smoothing == 0.1


def test_callbacks_by_name_with_arguments():
    cfg = config([{"layer": "Dense", "units": 1}], training={"callbacks": [
        {"name": "EarlyStopping", "patience": 3}, "ReduceLROnPlateau", {"name": "EarlyStop"},
        {"name": "EarlyStopping", "patients": 1}]})
    problems = Problems()
    callbacks = make_callbacks(cfg, problems)
    assert [type(c).__name__ for c in callbacks] == ["EarlyStopping", "ReduceLROnPlateau"]
    assert callbacks[0].patience == 3
    assert problems.lines[0].startswith("training.callbacks.2.name: unknown Keras callback (did you mean EarlyStopping")
    assert problems.lines[1].startswith("training.callbacks.3.patients: not an argument of EarlyStopping")


def test_callbacks_that_fit_makes_itself_are_refused_and_never_offered():
    cfg = config([{"layer": "Dense", "units": 1}], training={"callbacks": ["History", "ProgbarLogger", "Callback"]})
    problems = Problems()
    assert make_callbacks(cfg, problems) == []
    assert [line.split(":")[0] for line in problems.lines] == [f"training.callbacks.{i}.name" for i in range(3)]
    allowed = problems.lines[0].split("; allowed: ")[1].split(", ")
    assert "EarlyStopping" in allowed and "TerminateOnNaN" in allowed
    assert not {"History", "ProgbarLogger", "Callback", "CallbackList"} & set(allowed), allowed


def test_optimizer_names_in_any_case_and_only_what_keras_builds_from_a_name():
    for name, expected in (("ADAM", "Adam"), ("rmsprop", "RMSprop"), ("lamb", "Lamb"), ("AdamW", "AdamW")):
        cfg = config([{"layer": "Dense", "units": 1}], compile={"loss": "mse", "optimizer": name})
        problems = Problems()
        model = build_model(cfg, (4,), problems)
        assert compile_model(model, cfg, problems), problems.lines
        assert type(model.optimizer).__name__ == expected
    cfg = config([{"layer": "Dense", "units": 1}], compile={"loss": "mse", "optimizer": "LossScaleOptimizer"})
    problems = Problems()
    assert not compile_model(build_model(cfg, (4,), problems), cfg, problems)
    (line,) = problems.lines
    assert line.startswith("compile.optimizer.name: unknown Keras optimizer"), line
    allowed = line.split("; allowed: ")[1].split(", ")
    assert {"adam", "sgd", "lamb"} <= set(allowed) and allowed == sorted(allowed)
    assert not {"optimizer", "lossscaleoptimizer", "multioptimizer"} & set(allowed), allowed


def test_names_never_resolve_through_imports():
    _, problems = build([{"layer": "os.system", "units": 1}])
    assert problems[0].startswith("model.layers.0.layer: unknown Keras layer")
    cfg = config([{"layer": "Dense", "units": 1}], compile={"loss": "builtins.eval"})
    problems = Problems()
    model = build_model(cfg, (4,), problems)
    assert not compile_model(model, cfg, problems)


def test_a_metric_class_with_required_arguments_is_found_and_reaches_keras():
    """`keras.metrics.get` builds a class without arguments, which MeanIoU cannot be: still a Keras metric."""
    cfg = config([{"layer": "Dense", "units": 3, "activation": "softmax"}],
                 compile={"loss": "sparse_categorical_crossentropy",
                          "metrics": [{"name": "MeanIoU", "num_classes": 3}, "MeanIoU"]})
    problems = Problems()
    model = build_model(cfg, (4,), problems)
    assert not compile_model(model, cfg, problems)
    assert problems.lines == ["compile.metrics.1: MeanIoU: MeanIoU.__init__() missing 1 required positional "
                              "argument: 'num_classes'"], problems.lines
    cfg = config([{"layer": "Dense", "units": 3, "activation": "softmax"}],
                 compile={"loss": "sparse_categorical_crossentropy",
                          "metrics": [{"name": "MeanIoU", "num_classes": 3}]})
    assert compile_model(build_model(cfg, (4,), problems), cfg, problems), problems.lines


# --------------------------------------------------------------------------- metric directions
CLASSIFIER = [{"layer": "Dense", "units": 3, "activation": "softmax"}]
TWO_OUTPUTS = {
    "outputs": ["error", "price"],
    "layers": [{"layer": "Dense", "name": "h", "units": 4},
               {"layer": "Dense", "name": "error", "units": 1, "activation": "sigmoid", "inputs": "h"},
               {"layer": "Dense", "name": "price", "units": 1, "inputs": "h"}],
}


def two_output_config():
    return validate_config({"dataset": {"name": "boston_housing"}, "model": TWO_OUTPUTS,
                            "compile": {"loss": {"error": "binary_crossentropy", "price": "mse"},
                                        "metrics": {"error": ["accuracy"], "price": ["mae", "r2_score"]}}})


def logged_names(cfg, x, y) -> list[str]:
    """The names Keras logs when it fits the config's model for one epoch, without `val_`."""
    problems = Problems()
    model = build_model(cfg, x.shape[1:], problems)
    assert compile_model(model, cfg, problems), problems.lines
    history = model.fit(x, y, validation_data=(x, y), epochs=1, batch_size=4, verbose=0).history
    return [key for key in history if not key.startswith("val_")]


def test_metric_directions_are_the_ones_keras_metrics_carry():
    cfg = config(CLASSIFIER, compile={"loss": "sparse_categorical_crossentropy", "metrics": [
        "accuracy", {"name": "AUC", "num_thresholds": 50}, "pearson_correlation",
        {"name": "MeanIoU", "num_classes": 3}, "categorical_crossentropy", "mae", "cosine_similarity"]})
    directions = metric_directions(cfg)
    # pearson_correlation and mean_io_u are maximised although no score word is in their names
    assert directions == {"loss": "min", "accuracy": "max", "auc": "max", "pearson_correlation": "max",
                          "mean_io_u": "max", "categorical_crossentropy": "min", "mae": "min",
                          "cosine_similarity": "max"}
    assert list(directions) == ["loss", "accuracy", "auc", "pearson_correlation", "mean_io_u",
                                "categorical_crossentropy", "mae", "cosine_similarity"]


def test_metric_directions_of_two_outputs_name_each_output_and_its_loss():
    # an output named like a loss: its accuracy is still maximised
    assert metric_directions(two_output_config()) == {
        "loss": "min", "error_accuracy": "max", "price_mae": "min", "price_r2_score": "max",
        "error_loss": "min", "price_loss": "min"}


def test_metric_directions_name_exactly_what_keras_logs():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 4)).astype("float32")
    cfg = two_output_config()
    y = {"error": (x[:, 0] > 0).astype("float32"), "price": x[:, 1]}
    assert sorted(metric_directions(cfg)) == sorted(logged_names(cfg, x, y))
    cfg = config(CLASSIFIER, compile={"loss": "sparse_categorical_crossentropy",
                                      "metrics": ["acc", {"name": "SparseTopKCategoricalAccuracy", "k": 2},
                                                  "sparse_categorical_crossentropy"]})
    assert sorted(metric_directions(cfg)) == sorted(logged_names(cfg, x, np.arange(8) % 3))


def test_a_metric_keras_gives_no_direction_falls_back_to_its_name():
    cfg = config(CLASSIFIER, compile={"loss": "sparse_categorical_crossentropy",
                                      "metrics": ["false_negatives", "true_positives"]})
    assert metric_directions(cfg) == {"loss": "min", "false_negatives": "min", "true_positives": "max"}


def test_a_built_model_starts_from_the_weights_keras_gives_the_same_layers_with_the_same_seed():
    """Checking the graph before building it must not draw from the random state the initializers use:
    the same config and seed give the weights of the same Keras layers built by hand (and so the same
    results as every earlier kexp)."""
    import keras

    from kexp.config import validate_config
    from kexp.errors import Problems
    from kexp.models import build_model

    data = {"name": "t", "dataset": {"name": "iris"},
            "model": {"layers": [{"layer": "Dense", "units": 8, "activation": "relu"}, {"layer": "Dense", "units": 3}]},
            "compile": {"loss": "mse"}}
    keras.utils.set_random_seed(7)
    built = build_model(validate_config(data), (4,), Problems())
    keras.utils.set_random_seed(7)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    by_hand = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    for mine, theirs in zip(built.get_weights(), by_hand.get_weights(), strict=True):
        np.testing.assert_array_equal(mine, theirs)
