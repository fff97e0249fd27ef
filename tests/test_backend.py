"""kexp.backend: which Keras backend a run uses, and each backend's input pipeline.

The pipeline tests run over both pipelines: tf.data (TensorFlow) and the NumPy PyDataset (JAX,
PyTorch), which must give the same batches. End-to-end runs on the other installed backends, in
fresh processes (a process keeps the backend it first imported Keras with), are in
test_backend_runs.py."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from cli_runner import invoke, stderr_of

from kexp import backend
from kexp.data import Ragged
from kexp.errors import ConfigError, RunError
from kexp.preprocessing import MultiHot

SEQS = Ragged.from_lists([[1, 5, 3], [2], [], [4, 4, 9, 8, 7]])
PIPELINES = {"tf.data": backend.tf_dataset, "PyDataset": backend.array_batches}


def epochs_of(ds, n: int = 1) -> list[list[tuple]]:
    """`n` epochs of batches as NumPy tuples, gone through as Keras' fit goes through them."""
    if hasattr(ds, "as_numpy_iterator"):  # tf.data: each pass is an epoch (reshuffled)
        return [[tuple(b) for b in ds.as_numpy_iterator()] for _ in range(n)]
    result = []
    for _ in range(n):
        result.append([tuple(ds[i]) for i in range(len(ds))])
        ds.on_epoch_end()
    return result


@pytest.fixture(params=list(PIPELINES))
def pipeline(request):
    return PIPELINES[request.param]


# --------------------------------------------------------------------------- the pipelines
def test_multi_hot_batches_equal_the_dense_matrix(pipeline):
    x = MultiHot(SEQS, 10)
    y = np.arange(4, dtype="float32")
    (batches,) = epochs_of(pipeline(x, y, 3))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x.dense())
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_batches_come_in_order_without_shuffle(pipeline):
    x = np.arange(10, dtype="float32").reshape(5, 2)
    y = np.arange(5, dtype="float32")
    (batches,) = epochs_of(pipeline(x, y, 2))
    assert [len(b[1]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_batches_without_labels_hold_the_features_only(pipeline):
    x = np.arange(6, dtype="float32").reshape(3, 2)
    (batches,) = epochs_of(pipeline(x, None, 2))
    assert [len(b) for b in batches] == [1, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)


def test_shuffle_is_seeded_complete_and_new_each_epoch(pipeline):
    n = 64
    x = np.arange(n, dtype="float32").reshape(n, 1)
    y = np.arange(n, dtype="int64")

    def orders(seed, epochs=3):
        return [np.concatenate([b[1] for b in batches]).tolist()
                for batches in epochs_of(pipeline(x, y, 32, shuffle=True, seed=seed), epochs)]

    first, again = orders(1), orders(1)
    assert first == again  # the seed fixes every epoch's order
    for order in first:
        assert sorted(order) == list(range(n))  # every row once per epoch
        assert order != list(range(n))  # shuffled across the whole set
    assert first[0] != first[1] != first[2]  # a new order each epoch
    assert orders(2)[0] != first[0]
    # the shuffle covers every row: the first batch draws from the whole set, not the first rows
    assert max(first[0][:32]) >= 32 and max(orders(3)[0][:32]) >= 32


def test_multi_hot_drops_ids_past_the_width_and_is_float32(pipeline):
    x = MultiHot(SEQS, 5)  # ids 5..9 are out of the vocabulary
    ((bx, _),), = epochs_of(pipeline(x, np.zeros(4, dtype="float32"), 4))
    assert bx.dtype == np.float32 and bx.shape == (4, 5)
    np.testing.assert_array_equal(bx, x.dense())
    assert bx[3].tolist() == [0, 0, 0, 0, 1]


def test_each_multi_hot_input_of_a_dict_is_encoded(pipeline):
    seqs = MultiHot(SEQS, 10)
    dense = np.arange(8, dtype="float32").reshape(4, 2)
    y = np.arange(4, dtype="float32")
    (batches,) = epochs_of(pipeline({"words": seqs, "num": dense}, y, 3))
    np.testing.assert_array_equal(np.concatenate([b[0]["words"] for b in batches]), seqs.dense())
    np.testing.assert_array_equal(np.concatenate([b[0]["num"] for b in batches]), dense)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    (batches,) = epochs_of(pipeline({"words": seqs}, None, 4))  # a dict without labels too
    np.testing.assert_array_equal(batches[0][0]["words"], seqs.dense())


def test_shuffled_rows_keep_their_labels_and_weights(pipeline):
    seqs = MultiHot(Ragged.from_lists([[i] for i in range(16)]), 16)
    y = np.arange(16, dtype="int64")
    w = np.arange(16, dtype="float32") / 10
    for batches in epochs_of(pipeline(seqs, y, 4, shuffle=True, seed=0, weights=w), 2):
        for bx, by, bw in batches:
            assert bx.argmax(axis=1).tolist() == by.tolist()
            np.testing.assert_allclose(bw, by / 10)


def test_the_tf_pipeline_repeats_past_one_epoch_only_when_asked():
    x = np.arange(3, dtype="float32").reshape(3, 1)
    assert len(list(backend.tf_dataset(x, x, 2).as_numpy_iterator())) == 2
    it = backend.tf_dataset(x, x, 2, repeat=True).as_numpy_iterator()
    assert [next(it)[0].ravel().tolist() for _ in range(4)] == [[0, 1], [2], [0, 1], [2]]


def test_the_shuffled_pipelines_give_the_same_batches_run_after_run_but_not_each_other():
    x = np.arange(40, dtype="float32").reshape(20, 2)
    y = np.arange(20, dtype="int64")
    numpy_order = [b[1].tolist() for b in epochs_of(backend.array_batches(x, y, 5, shuffle=True, seed=3))[0]]
    again = [b[1].tolist() for b in epochs_of(backend.array_batches(x, y, 5, shuffle=True, seed=3))[0]]
    assert numpy_order == again and sorted(sum(numpy_order, [])) == list(range(20))


@pytest.mark.parametrize("name", ["tensorflow", "jax", "torch"])
def test_batches_are_the_pipeline_of_the_backend_in_use(monkeypatch, name):
    import keras
    import tensorflow as tf

    monkeypatch.setattr(backend, "current", lambda: name)  # the backend Keras was imported with
    x = np.zeros((4, 2), dtype="float32")
    ds = backend.batches(x, x[:, 0], 2, shuffle=True, seed=0, repeat=True)
    assert isinstance(ds, tf.data.Dataset) if name == "tensorflow" else isinstance(ds, keras.utils.PyDataset)


# --------------------------------------------------------------------------- which backend
@pytest.fixture
def keras_unset(tmp_path, monkeypatch):
    """No KERAS_BACKEND and an empty KERAS_HOME (no keras.json)."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def test_the_default_is_tensorflow_then_keras_own_choice_then_the_config(keras_unset, monkeypatch):
    monkeypatch.setattr(backend, "installed", lambda name: True)
    assert backend.resolve(None) == "tensorflow"
    keras_unset.mkdir()
    (keras_unset / "keras.json").write_text(json.dumps({"backend": "torch"}))
    assert backend.resolve(None) == "torch"  # keras.json, as Keras reads it
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend.resolve(None) == "jax"  # KERAS_BACKEND before keras.json
    assert backend.resolve("tensorflow") == "tensorflow"  # the config's backend before either


def test_an_unknown_backend_and_a_missing_package_are_one_line_errors(keras_unset, monkeypatch):
    with pytest.raises(ConfigError) as caught:
        backend.resolve("numpyy", "c.yaml: backend")
    assert str(caught.value) == "c.yaml: backend: unknown Keras backend; got 'numpyy'; allowed: tensorflow, jax, torch"
    monkeypatch.setattr(backend, "installed", lambda name: name == "tensorflow")
    for name in ("jax", "torch"):
        with pytest.raises(ConfigError) as caught:
            backend.resolve(name, "c.yaml: backend")
        assert str(caught.value) == (f"c.yaml: backend: the {name} backend needs the {name} package, which is not "
                                     f'installed: pip install "kexp[{name}]"')
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    with pytest.raises(ConfigError, match=r'^KERAS_BACKEND: the torch backend .* pip install "kexp\[torch\]"$'):
        backend.resolve(None)


def test_a_process_cannot_change_the_backend_keras_was_imported_with(monkeypatch):
    import keras

    assert keras.backend.backend() == "tensorflow"  # this test session's (conftest.py)
    backend.select("tensorflow")
    with pytest.raises(RunError, match="already imported with the tensorflow backend"):
        backend.select("jax")


def test_versions_name_the_backend_and_its_version():
    import tensorflow as tf

    found = backend.versions()
    assert found["backend"] == "tensorflow" and found["backend_version"] == tf.__version__
    assert found["tensorflow"] == tf.__version__  # the key older run folders have


# --------------------------------------------------------------------------- the commands
def test_a_run_records_its_backend_and_compare_filters_by_it(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("train", tiny_config, "--quiet", "--backend", "tensorflow", "--set", "training.epochs=1")
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "config.json").read_text())["backend"] == "tensorflow"
    env = json.loads((run / "environment.json").read_text())
    assert env["backend"] == "tensorflow" and env["backend_version"]
    shown = invoke("compare", "runs", "--where", "backend=tensorflow", "--format", "json")
    assert [row["run"] for row in json.loads(shown.output)] == [run.name]
    none = invoke("compare", "runs", "--where", "backend=jax")
    assert "1 run found, none match --where backend=jax" in none.output


def test_a_missing_backend_package_stops_a_command_before_any_run_folder(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(backend, "installed", lambda name: name == "tensorflow")
    for args in (["train", tiny_config, "--backend", "torch"], ["validate", tiny_config, "--set", "backend=jax"]):
        result = invoke(*args)
        lines = stderr_of(result).strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, stderr_of(result)
        assert lines[0].startswith(f"{tiny_config}: backend: ") and 'pip install "kexp[' in lines[0]
    assert not (tmp_path / "runs").exists()


def test_an_unknown_backend_option_is_a_usage_error(tiny_config):
    result = invoke("train", tiny_config, "--backend", "theano")
    assert result.exit_code == 2 and "theano" in stderr_of(result)


def test_a_sweep_cannot_vary_the_backend(tiny_config):
    text = tiny_config.read_text() + "search:\n  space:\n    backend: [tensorflow, jax]\n"
    tiny_config.write_text(text)
    result = invoke("validate", tiny_config, "--no-data")
    assert result.exit_code == 2
    assert "search.space.backend: cannot vary" in stderr_of(result)


def test_a_resumed_run_stays_on_the_backend_it_started_on(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    holdout, kfold = "{scheme: holdout, size: 0.2, shuffle: true}", "{scheme: kfold, n_splits: 2}"
    text = tiny_config.read_text().replace(holdout, kfold)
    assert "scheme: kfold" in text
    tiny_config.write_text(text)
    result = invoke("kfold", tiny_config, "--quiet", "--set", "training.epochs=1")
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").iterdir()
    result = invoke("kfold", "--resume", run, "--backend", "jax")
    assert result.exit_code == 2
    assert "was started on the tensorflow backend" in stderr_of(result)


def test_what_the_torch_backend_cannot_do_is_a_problem_with_its_key(monkeypatch):
    from kexp.config import validate_config

    config = validate_config({**yaml_tiny(), "training": {"steps_per_execution": 8}})
    assert backend.limits(config) == []  # TensorFlow runs 8 steps per call
    assert backend.steps_per_execution("epoch", 5) == 5 and backend.steps_per_execution(8, 5) == 8
    monkeypatch.setattr(backend, "current", lambda: "torch")
    assert backend.limits(config) == [("training.steps_per_execution", "the torch backend runs one step per "
                                       "execution (Keras' PyTorch trainer); got 8; allowed: 1 or epoch")]
    assert backend.limits(validate_config(yaml_tiny())) == []  # the default, `epoch`, is one step there
    assert backend.steps_per_execution("epoch", 5) == 1


def yaml_tiny() -> dict:
    import yaml
    from helpers import TINY_CONFIG

    return yaml.safe_load(TINY_CONFIG)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_a_tensorflow_run_does_not_import_jax_though_it_is_installed(tiny_config, tmp_path):
    args = ["train", str(tiny_config), "--quiet", "--set", "training.epochs=1"]
    code = ("import sys\nfrom kexp.cli import app\n"
            f"code = app({args!r}, standalone_mode=False)\n"
            "assert not code, code\nassert 'jax' not in sys.modules, 'jax imported'\n"
            "import jax  # still importable afterwards\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "runs").iterdir())) == 1
