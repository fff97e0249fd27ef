"""Model building through Keras' registries: sequential stacks, functional graphs, compile, errors."""

import pytest

from kexp.config import validate_config
from kexp.errors import Problems
from kexp.models import build_model, compile_model, make_callbacks


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


def test_names_never_resolve_through_imports():
    _, problems = build([{"layer": "os.system", "units": 1}])
    assert problems[0].startswith("model.layers.0.layer: unknown Keras layer")
    cfg = config([{"layer": "Dense", "units": 1}], compile={"loss": "builtins.eval"})
    problems = Problems()
    model = build_model(cfg, (4,), problems)
    assert not compile_model(model, cfg, problems)
