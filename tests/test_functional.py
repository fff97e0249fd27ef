"""The functional API beyond one new layer per entry (kexp/graph.py): layer sharing (`share:`), sub-models
(`model.submodels`, `model:`), transfer from an earlier run (`from_run:`), layers given as arguments
(`wrapped:`), and every problem of a graph caught before training with its key."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_runner import invoke, stderr_of

from kexp.config import load_config, validate_config
from kexp.errors import Problems
from kexp.models import build_model, compile_model

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
IRIS_TWO_INPUTS = {"name": "iris", "features": {"sepal": ["sepal length (cm)", "sepal width (cm)"],
                                                "petal": ["petal length (cm)", "petal width (cm)"]}}
SHARED = [
    {"layer": "Dense", "name": "encode", "units": 3, "activation": "relu", "inputs": "sepal"},
    {"share": "encode", "name": "encode_petal", "inputs": "petal"},
    {"layer": "Concatenate", "name": "codes", "inputs": ["encode", "encode_petal"]},
    {"layer": "Dense", "name": "species", "units": 3, "activation": "softmax"},
]


def raw_config(layers, dataset=None, **model):
    return {"seed": 0, "dataset": dataset or {"name": "iris"}, "preprocessing": {"standardize": True},
            "model": {"layers": layers, **model},
            "compile": {"optimizer": {"name": "adam", "learning_rate": 0.05},
                        "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
            "training": {"epochs": 2, "batch_size": 32},
            "validation": {"scheme": "holdout", "size": 0.2, "shuffle": True}}


def build(layers, shape, **model):
    problems = Problems()
    made = build_model(validate_config(raw_config(layers, **model)), shape, problems)
    return made, problems.lines


def write(folder: Path, raw: dict, name="exp.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def train(config: Path, runs: Path, *sets: str) -> Path:
    before = set(runs.glob("*")) if runs.exists() else set()
    args = [item for pair in (("--set", s) for s in sets) for item in pair]
    result = invoke("train", config, "--runs-dir", runs, "--quiet", *args)
    assert result.exit_code == 0, stderr_of(result)
    (folder,) = set(runs.glob("*")) - before
    return folder


def load(folder: Path):
    import keras

    return keras.saving.load_model(folder / "model.keras", compile=False)


def numpy(tensor) -> np.ndarray:
    """A model's output as NumPy on any backend (a PyTorch tensor that needs grad refuses np.asarray)."""
    import keras

    return keras.ops.convert_to_numpy(tensor)


def errors(tmp_path, raw, *args) -> list[str]:
    """`kexp validate` of a config: exit code 2, no traceback; the problem lines without the file."""
    path = write(tmp_path, raw)
    result = invoke("validate", path, *args)
    assert result.exit_code == 2, result.output
    return [line.removeprefix(f"{path}: ") for line in stderr_of(result).strip().splitlines()]


# --------------------------------------------------------------------------- layer sharing
def test_a_shared_layer_is_one_layer_with_one_set_of_weights_called_twice():
    model, problems = build(SHARED, {"sepal": (2,), "petal": (2,)}, inputs=["sepal", "petal"])
    assert problems == []
    assert [layer.name for layer in model.layers].count("encode") == 1
    assert len(model.trainable_weights) == 4  # encode's kernel and bias, species' kernel and bias
    assert model.get_layer("codes").output.shape == (None, 6)


def test_a_shared_layer_trains_as_one_set_of_weights_end_to_end(tmp_path):
    run = train(write(tmp_path, raw_config(SHARED, IRIS_TWO_INPUTS, inputs=["sepal", "petal"])), tmp_path / "runs")
    model = load(run)
    assert [layer.name for layer in model.layers].count("encode") == 1
    kernel = model.get_layer("encode").get_weights()[0]
    assert kernel.shape == (2, 3)
    x = np.array([[0.5, -1.0]], dtype="float32")  # the same numbers into both inputs give the same code
    codes = model.get_layer("codes")
    import keras

    probe = keras.Model(model.inputs, codes.output)
    out = numpy(probe({"sepal": x, "petal": x}))
    np.testing.assert_allclose(out[:, :3], out[:, 3:])


def test_a_shared_layer_on_inputs_of_another_shape_is_a_problem_with_the_key(tmp_path):
    dataset = {"name": "iris", "features": {"sepal": ["sepal length (cm)", "sepal width (cm)"],
                                            "petal": ["petal length (cm)"]}}
    lines = errors(tmp_path, raw_config(SHARED, dataset, inputs=["sepal", "petal"]))
    assert len(lines) == 1
    assert lines[0].startswith("model.layers.1.inputs: the shared layer of model.layers.0 (encode) was first "
                               "called on (2,); this call gives (1,)")


# --------------------------------------------------------------------------- sub-models
ENCODER = {"encoder": {"layers": ["Flatten", {"layer": "Dense", "name": "code", "units": 32, "activation": "relu"}]}}


def test_the_shipped_shared_encoder_builds_one_encoder_called_on_both_halves():
    config = load_config(CONFIGS / "digits_shared_encoder.yaml")
    problems = Problems()
    model = build_model(config, (64,), problems)
    assert problems.lines == []
    names = [layer.name for layer in model.layers]
    assert names.count("encoder") == 1
    encoder = model.get_layer("encoder")
    assert encoder.input.shape == (None, 4, 8)
    assert len(model.trainable_weights) == 4  # the encoder's Dense and the classifier: one set each
    assert compile_model(model, config, problems), problems.lines


def test_a_submodel_used_twice_keeps_one_set_of_weights_through_training(tmp_path):
    raw = yaml.safe_load((CONFIGS / "digits_shared_encoder.yaml").read_text())
    raw["training"]["epochs"] = 1
    raw["validation"]["final"] = None
    run = train(write(tmp_path, raw), tmp_path / "runs")
    model = load(run)
    encoder = model.get_layer("encoder")
    assert [layer.name for layer in model.layers].count("encoder") == 1
    assert len(model.trainable_weights) == 4
    x = np.random.default_rng(0).random((3, 64)).astype("float32")
    top_half = numpy(encoder(x.reshape(3, 8, 8)[:, :4]))
    codes = numpy(__import__("keras").Model(model.inputs, model.get_layer("codes").output)(x))
    np.testing.assert_allclose(codes[:, :32], top_half, rtol=1e-5, atol=1e-6)


def test_the_shipped_functional_configs_validate_offline():
    result = invoke("validate", CONFIGS / "digits_shared_encoder.yaml")
    assert result.exit_code == 0, stderr_of(result)
    result = invoke("validate", CONFIGS / "digits_transfer.yaml", "--no-data")  # the model file is data
    assert result.exit_code == 0, stderr_of(result)


def test_a_submodel_with_two_inputs_is_called_with_a_list():
    submodels = {"pair": {"inputs": ["a", "b"], "layers": [
        {"layer": "Concatenate", "name": "both", "inputs": ["a", "b"]},
        {"layer": "Dense", "units": 2}]}}
    layers = [{"model": "pair", "name": "paired", "inputs": ["sepal", "petal"]},
              {"layer": "Dense", "units": 3, "activation": "softmax"}]
    model, problems = build(layers, {"sepal": (2,), "petal": (2,)}, inputs=["sepal", "petal"], submodels=submodels)
    assert problems == []
    assert model.get_layer("pair").output.shape == (None, 2)


# --------------------------------------------------------------------------- transfer from a run
def test_transfer_from_a_run_folder_frozen_keeps_its_weights_trainable_changes_them(tmp_path):
    first = raw_config([{"layer": "Dense", "name": "hidden", "units": 5, "activation": "relu"},
                        {"layer": "Dense", "name": "species", "units": 3, "activation": "softmax"}])
    source = train(write(tmp_path, first, "first.yaml"), tmp_path / "runs")
    trained = load(source).get_layer("hidden").get_weights()
    second = raw_config([{"from_run": f"runs/{source.name}", "layers": ":-1", "name": "features"},
                         {"layer": "Dense", "name": "head", "units": 3, "activation": "softmax"}])
    second["training"]["epochs"] = 3
    path = write(tmp_path, second, "second.yaml")  # the run folder relative to this file

    frozen = train(path, tmp_path / "runs")
    features = load(frozen).get_layer("features")
    assert [type(layer).__name__ for layer in features.layers] == ["InputLayer", "Dense"]
    assert not features.trainable
    for before, after in zip(trained, features.get_layer("hidden").get_weights()):
        np.testing.assert_array_equal(before, after)
    config = yaml.safe_load((frozen / "config.yaml").read_text())
    assert config["model"]["layers"][0]["from_run"] == str(source)  # absolute: tasks read it where they run

    tuned = train(path, tmp_path / "runs", "model.layers.0.trainable=true")
    changed = load(tuned).get_layer("features").get_layer("hidden").get_weights()
    assert not np.allclose(trained[0], changed[0])


def test_transfer_of_a_keras_file_and_of_a_middle_range_round_trips(tmp_path):
    import keras

    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="a")(inputs)
    x = keras.layers.Dense(5, name="b")(x)
    x = keras.layers.Dense(3, name="c", activation="softmax")(x)
    keras.Model(inputs, x).save(tmp_path / "net.keras")
    layers = [{"layer": "Dense", "units": 6, "name": "front"},
              {"from_run": str(tmp_path / "net.keras"), "layers": "1:2", "name": "middle", "trainable": True},
              {"layer": "Dense", "units": 3, "activation": "softmax"}]
    model, problems = build(layers, (4,))
    assert problems == []
    middle = model.get_layer("middle")
    assert middle.trainable and [layer.name for layer in middle.layers][-1] == "b"
    model.save(tmp_path / "whole.keras")
    again = keras.saving.load_model(tmp_path / "whole.keras", compile=False)
    x = np.ones((2, 4), dtype="float32")
    np.testing.assert_allclose(numpy(model(x)), numpy(again(x)), rtol=1e-6)


# --------------------------------------------------------------------------- layers as arguments
def test_layers_given_as_arguments_are_written_like_layers():
    layers = [{"layer": "Bidirectional", "wrapped": {"layer": "LSTM", "units": 4, "return_sequences": True},
               "backward_layer": {"layer": "LSTM", "units": 4, "return_sequences": True, "go_backwards": True}},
              {"layer": "TimeDistributed", "wrapped": {"layer": "Dense", "units": 2}},
              {"layer": "TimeDistributed", "wrapped": "Flatten"},
              "GlobalAveragePooling1D",
              {"layer": "Dense", "units": 3, "activation": "softmax"}]
    model, problems = build(layers, (5, 3))
    assert problems == []
    bidirectional, distributed = model.layers[1], model.layers[2]
    assert type(bidirectional.forward_layer).__name__ == "LSTM" and bidirectional.forward_layer.units == 4
    assert bidirectional.output.shape == (None, 5, 8)
    assert type(distributed.layer).__name__ == "Dense" and distributed.output.shape == (None, 5, 2)


def test_problems_of_layers_given_as_arguments_name_their_key():
    _, problems = build([{"layer": "Bidirectional", "wrapped": {"layer": "LSTMM", "unitz": 4}},
                         {"layer": "TimeDistributed", "layer_": {"layer": "Dense", "units": 2}},
                         {"layer": "Bidirectional", "wrapped": {"layer": "LSTM", "unitz": 4}},
                         {"layer": "Dense", "units": 3}], (5, 3))
    assert problems[0].startswith("model.layers.0.wrapped.layer: unknown Keras layer (did you mean LSTM")
    assert any(line.startswith("model.layers.1.layer_: not an argument of TimeDistributed (did you mean wrapped?); "
                               "allowed: wrapped, ") for line in problems)
    assert not any(line.startswith("model.layers.1: ") for line in problems)  # the hint says it all
    assert any(line.startswith("model.layers.2.wrapped.unitz: not an argument of LSTM (did you mean units?)")
               for line in problems)
    _, problems = build(["Bidirectional", {"layer": "Dense", "units": 3}], (5, 3))
    assert problems == ["model.layers.0: Bidirectional wraps a layer: give it as wrapped: {layer: CLASS, ...its "
                        "arguments} (Keras' `layer` argument)"]


# --------------------------------------------------------------------------- graph problems, all at once
def test_graph_problems_without_data_are_reported_at_once_with_their_keys(tmp_path):
    submodels = {"a": {"layers": [{"model": "b"}]}, "b": {"layers": [{"model": "a"}]},
                 "spare": {"layers": ["Flatten"]}, "loop": {"layers": [{"model": "loop"}]}}
    layers = [{"layer": "Dense", "name": "one", "units": 3, "inputs": "two"},
              {"layer": "Dense", "name": "two", "units": 3, "inputs": "two"},
              {"share": "onee", "units": 4},
              {"share": "later"},
              {"model": "encodr"},
              {"model": "a"},
              {"model": "loop"},
              {"from_run": "nowhere", "layers": "1-2", "trainable": "no"},
              {"layer": "Dense", "name": "later", "units": 3}]
    lines = errors(tmp_path, raw_config(layers, submodels=submodels), "--no-data")
    assert "model.layers.0.inputs: 'two' is defined later (model.layers.1); an entry takes only entries before " \
           "it, so that the graph has no cycle: move it after model.layers.1" in lines
    assert "model.layers.1.inputs: 'two' is this entry itself: a cycle; an entry takes only entries before it" \
           in lines
    assert "model.layers.2.units: not a key of a `share:` entry; allowed: share, name, inputs; the shared layer " \
           "keeps the arguments of its entry" in lines
    assert "model.layers.2.share: unknown 'onee' (did you mean one?); defined before this entry: one, two" in lines
    assert any(line.startswith("model.layers.3.share: 'later' is defined later (model.layers.8)") for line in lines)
    assert "model.layers.4.model: unknown sub-model; got 'encodr'; defined: a, b, spare, loop" in lines
    assert "model.submodels.a.layers.0.model: a cycle of sub-models: b -> a -> b; a sub-model cannot contain " \
           "itself" in lines or "model.submodels.b.layers.0.model: a cycle of sub-models: a -> b -> a; a " \
           "sub-model cannot contain itself" in lines
    assert "model.submodels.loop.layers.0.model: a cycle of sub-models: loop -> loop; a sub-model cannot contain " \
           "itself" in lines
    assert "model.submodels.spare: is not used; call it with an entry {model: spare} in model.layers, or remove " \
           "it" in lines
    assert any(line.startswith("model.layers.7.layers: must be a range START:STOP") for line in lines)
    assert "model.layers.7.trainable: must be true or false; got 'no'" in lines


def test_an_entry_with_two_kinds_is_a_schema_error(tmp_path):
    lines = errors(tmp_path, raw_config([{"layer": "Dense", "share": "x", "units": 3}]), "--no-data")
    assert lines == ["model.layers.0: layer and share exclude each other; keep one"]


@pytest.mark.parametrize("content, expected", [
    (None, "no such run folder or .keras file: {path}"),
    (b"not a zip", "{path}: not a Keras model file (a .keras file is a zip archive)"),
    (b"PK\x05\x06" + bytes(18), "{path}: cannot be loaded in Keras' safe mode: "),
])
def test_a_missing_or_corrupt_model_file_is_a_problem_found_before_training(tmp_path, content, expected):
    path = tmp_path / "old.keras"
    if content is not None:
        path.write_bytes(content)
    raw = raw_config([{"from_run": "old.keras"}, {"layer": "Dense", "units": 3, "activation": "softmax"}])
    lines = errors(tmp_path, raw)
    assert len(lines) == 1 and lines[0].startswith("model.layers.0.from_run: " + expected.format(path=path))
    result = invoke("train", write(tmp_path, raw), "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 2 and not (tmp_path / "runs").exists()


def test_a_model_file_with_code_is_refused_by_safe_mode(tmp_path):
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(tmp_path / "code.keras")
    raw = raw_config([{"from_run": "code.keras"}, {"layer": "Dense", "units": 3, "activation": "softmax"}])
    lines = errors(tmp_path, raw)
    assert len(lines) == 1 and lines[0].startswith(f"model.layers.0.from_run: {tmp_path / 'code.keras'}: cannot be "
                                                   "loaded in Keras' safe mode: ")


def test_a_model_file_of_other_shapes_or_a_range_of_nothing_is_a_problem(tmp_path):
    import keras

    inputs = keras.Input((7,))
    keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs)).save(tmp_path / "seven.keras")
    raw = raw_config([{"from_run": "seven.keras"}, {"layer": "Dense", "units": 3, "activation": "softmax"}])
    assert errors(tmp_path, raw) == [f"model.layers.0.inputs: the model of {tmp_path / 'seven.keras'} takes (7,); "
                                     "got (4,)"]
    raw["model"]["layers"][0]["layers"] = "3:"
    assert errors(tmp_path, raw) == [f"model.layers.0.layers: '3:' selects no layer of {tmp_path / 'seven.keras'}; "
                                     "its layers: 0 d (Dense)"]


def test_a_submodel_called_on_other_shapes_is_a_problem(tmp_path):
    dataset = {"name": "iris", "features": {"sepal": ["sepal length (cm)", "sepal width (cm)"],
                                            "petal": ["petal length (cm)"]}}
    submodels = {"enc": {"layers": [{"layer": "Dense", "units": 2}]}}
    layers = [{"model": "enc", "name": "s", "inputs": "sepal"}, {"model": "enc", "name": "p", "inputs": "petal"},
              {"layer": "Concatenate", "inputs": ["s", "p"]}, {"layer": "Dense", "units": 3, "activation": "softmax"}]
    lines = errors(tmp_path, raw_config(layers, dataset, inputs=["sepal", "petal"], submodels=submodels))
    assert len(lines) == 1 and lines[0].startswith("model.layers.1.inputs: sub-model enc was built for (2,) (its first "
                                                   "call, model.layers.0); this call gives (1,); every call of a "
                                                   "sub-model shares its weights, so takes those shapes")


def test_a_layer_range_that_is_not_one_connected_piece_is_a_problem(tmp_path):
    import keras

    inputs = keras.Input((4,))
    r = keras.layers.Dense(3, name="r")(inputs)
    a = keras.layers.Dense(3, name="a")(inputs)
    joined = keras.layers.Concatenate(name="c")([a, keras.layers.Dense(3, name="b")(r)])
    keras.Model(inputs, joined).save(tmp_path / "fork.keras")
    raw = raw_config([{"from_run": "fork.keras", "layers": "2:4"},  # b and c: c needs a, which b does not reach
                      {"layer": "Dense", "units": 3, "activation": "softmax"}])
    (line,) = errors(tmp_path, raw)
    assert line.startswith(f"model.layers.0.layers: layers 2:4 of {tmp_path / 'fork.keras'} are not one piece from "
                           "the input of b to the output of c (")
    assert line.endswith("its layers: 0 r (Dense), 1 a (Dense), 2 b (Dense), 3 c (Concatenate)")


def test_a_transferred_model_as_the_last_entry_is_checked_against_the_labels_by_its_key(tmp_path):
    import keras

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs)).save(tmp_path / "two.keras")
    lines = errors(tmp_path, raw_config([{"from_run": "two.keras", "trainable": True}]))
    assert lines == ["model.layers.0: the last layer has 2 units but the data has 3 classes; use units: 3 with "
                     "activation: softmax"]
