"""A process's compiled models, kept for its next tasks (kexp.reuse): a task that trains a kept model
gives the numbers, to the bit, of the same task on a new model; what the compiled steps depend on
decides when a model is built anew."""

import numpy as np
import pytest
import yaml
from helpers import TINY_CONFIG

from kexp import reuse
from kexp.config import validate_config
from kexp.errors import Interrupted
from kexp.executor import Task
from kexp.training import run_task
from kexp.validation import Split

# dropout (a seed generator's state), batch normalization (moving statistics) and Adam (slots) all
# carry state from one task to the next unless it is put back
LAYERS = [{"layer": "Dense", "units": 8, "activation": "relu"}, {"layer": "Dropout", "rate": 0.3},
          "BatchNormalization", {"layer": "Dense", "units": 3, "activation": "softmax"}]


def task(fold=0, *, epochs=2, seed=0, rate=0.01, layers=LAYERS, optimizer="adam", **training) -> Task:
    config = yaml.safe_load(TINY_CONFIG)
    config["seed"] = seed
    config["model"]["layers"] = layers
    config["compile"]["optimizer"].update(name=optimizer, learning_rate=rate)
    config["training"].update({"batch_size": 16, **training})
    n = 120
    val = np.arange(fold, n, 4)
    split = Split(f"r0-f{fold}", 0, fold, np.setdiff1d(np.arange(n), val), val)
    return Task(split.id, validate_config(config).to_dict(), None, split, epochs)


def backend() -> str:
    import keras

    return keras.backend.backend()


@pytest.fixture()
def compiles(monkeypatch):
    """How many models were compiled (each one a new model) since the test began, with nothing kept."""
    if not reuse.KEEPS[backend()]:
        pytest.skip(f"nothing is kept on {backend()}")
    reuse.clear()
    count = []
    real = reuse.compile_model

    def counted(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(reuse, "compile_model", counted)
    yield count
    reuse.clear()


def alone(t: Task) -> list[dict]:
    """The task on a new model: nothing kept in this process."""
    reuse.clear()
    return run_task(t).logs


def test_the_folds_of_a_trial_compile_once_and_train_as_on_a_new_model(compiles):
    first = run_task(task(0)).logs
    second = run_task(task(1)).logs
    assert len(compiles) == 1
    assert second == alone(task(1)) and first == alone(task(0))  # every logged number, bit for bit


def test_another_learning_rate_reuses_the_model_and_trains_with_its_own_rate(compiles):
    run_task(task(0, rate=0.001))
    reused = run_task(task(0, rate=0.05)).logs
    assert len(compiles) == 1
    assert reused == alone(task(0, rate=0.05))
    assert reused != alone(task(0, rate=0.001))


def test_a_callback_that_changed_the_rate_does_not_leak_into_the_next_task(compiles):
    plateau = [{"name": "ReduceLROnPlateau", "monitor": "loss", "factor": 0.1, "patience": 0, "min_delta": 10}]
    run_task(task(0, epochs=3, callbacks=plateau))
    assert run_task(task(1, epochs=3)).logs == alone(task(1, epochs=3))


def test_what_the_compiled_steps_depend_on_builds_a_new_model(compiles):
    run_task(task(0))
    run_task(task(0, layers=[{"layer": "Dense", "units": 5, "activation": "relu"}, *LAYERS[1:]]))
    assert len(compiles) == 2
    run_task(task(0, optimizer="rmsprop"))
    assert len(compiles) == 3
    run_task(task(1))  # the first is still kept
    assert len(compiles) == 3


def test_a_stopped_task_drops_its_model(compiles):
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        run_task(task(0, epochs=20), should_stop=lambda: True)
    assert run_task(task(1)).logs == alone(task(1))
    assert len(compiles) == 3  # the stopped task's, the next one's, alone()'s


def test_at_most_max_kept_models_are_kept(compiles, monkeypatch):
    monkeypatch.setattr(reuse, "MAX_KEPT", 2)
    for units in (4, 5, 6):
        run_task(task(0, layers=[{"layer": "Dense", "units": units}, {"layer": "Dense", "units": 3,
                                                                     "activation": "softmax"}]))
    assert len(compiles) == 3
    run_task(task(0, layers=[{"layer": "Dense", "units": 4}, {"layer": "Dense", "units": 3, "activation": "softmax"}]))
    assert len(compiles) == 4  # the oldest was let go


def test_tasks_on_pytorch_build_a_new_model_each_time(monkeypatch):
    """Where nothing is kept (PyTorch), each task compiles its own model."""
    monkeypatch.setitem(reuse.KEEPS, backend(), False)
    reuse.clear()
    first = reuse.compiled_model(validate_config(task(0).config), (4,), 1)
    assert reuse.compiled_model(validate_config(task(0).config), (4,), 1) is not first
