"""kexp.training: one split as a task (plain data in, plain data out)."""

import os
import pickle

import numpy as np
import pytest
import yaml
from helpers import TINY_CONFIG

from kexp.config import validate_config
from kexp.executor import Task
from kexp.training import run_task
from kexp.validation import Split


def tiny_task(key="r0-f0", *, epochs=2, keep_best=False, keep_model=False, **changes) -> Task:
    config = yaml.safe_load(TINY_CONFIG)
    for dotted, value in changes.items():
        node = config
        *path, last = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    n = 120  # iris: 150 rows, 30 of them held out as its test split
    val = np.arange(0, n, 5)
    split = Split(key, 0, 0, np.setdiff1d(np.arange(n), val), val)
    return Task(key, validate_config(config).to_dict(), None, split, epochs, keep_best=keep_best,
                keep_model=keep_model)


def test_a_task_returns_plain_data_and_writes_nothing_where_it_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    events = []
    result = run_task(tiny_task(training__callbacks=[{"name": "CSVLogger", "filename": "log.csv"}]), events.append)
    assert list(tmp_path.iterdir()) == []  # callbacks wrote into the task's scratch folder
    assert sorted(result.files) == ["log.csv"] and result.files["log.csv"].startswith(b"epoch,")
    assert [e.kind for e in events] == ["start", "epoch", "epoch"]
    assert [e.epoch for e in events[1:]] == [1, 2] and events[0].epochs == 2
    assert len(result.logs) == 2 and result.logs[-1] == events[-1].logs
    assert result.metrics["epochs_run"] == 2 and result.metrics["n_train"] == 96 and result.metrics["n_val"] == 24
    assert result.preprocessing["fitted_on"] == {"split": "r0-f0", "n_samples": 96}
    assert result.model is None and result.test is None and result.summary is None
    again = pickle.loads(pickle.dumps(result))  # crosses a process boundary as it is
    assert again.logs == result.logs and again.metrics == result.metrics


def test_the_same_task_gives_the_same_result_twice():
    first, second = run_task(tiny_task()), run_task(tiny_task())
    assert first.logs == second.logs
    assert {k: v for k, v in first.metrics.items() if k != "duration_s"} == \
        {k: v for k, v in second.metrics.items() if k != "duration_s"}


def test_keep_best_emits_the_model_at_each_improvement_and_keep_model_returns_it_with_test_scores(tmp_path):
    import keras

    events = []
    result = run_task(tiny_task("holdout", epochs=3, keep_best=True, keep_model=True,
                                ), events.append)
    best = [e for e in events if e.kind == "best"]
    assert best and all(e.model.startswith(b"PK") for e in best)  # .keras archives (zip)
    val_loss = [logs["val_loss"] for logs in result.logs]
    improved = [i + 1 for i, v in enumerate(val_loss) if v < min(val_loss[:i], default=np.inf)]
    assert [e.epoch for e in best] == improved
    (tmp_path / "m.keras").write_bytes(result.model)
    model = keras.saving.load_model(tmp_path / "m.keras")
    assert model.output_shape == (None, 3)
    assert set(result.test) == {"loss", "accuracy"} and "Total params" in result.summary


def test_labels_of_one_value_a_row_meet_a_one_unit_output_in_every_metric():
    """Keras' losses align (n,) labels with an (n, 1) output, its metric functions do not: a
    binary_crossentropy metric (or objective) must still log the same value as the loss."""
    config = {"seed": 0, "dataset": {"name": "breast_cancer", "test_split": 0.2},
              "preprocessing": {"standardize": True},
              "model": {"layers": [{"layer": "Dense", "units": 4, "activation": "relu"},
                                   {"layer": "Dense", "units": 1, "activation": "sigmoid"}]},
              "compile": {"loss": "binary_crossentropy", "metrics": ["accuracy", "binary_crossentropy"]},
              "training": {"epochs": 1, "batch_size": 64},
              "validation": {"scheme": "holdout", "monitor": "val_binary_crossentropy"}}
    val = np.arange(0, 400, 4)
    split = Split("holdout", 0, 0, np.setdiff1d(np.arange(400), val), val)
    result = run_task(Task("holdout", validate_config(config).to_dict(), None, split, 1, keep_model=True))
    (logs,) = result.logs
    assert logs["val_binary_crossentropy"] == pytest.approx(logs["val_loss"], rel=1e-5)
    assert result.test["binary_crossentropy"] == pytest.approx(result.test["loss"], rel=1e-5)
    assert result.metrics["best_epoch"] == 1


def test_a_stop_request_ends_the_task_at_the_next_epoch_end():
    with pytest.raises(KeyboardInterrupt):
        run_task(tiny_task(epochs=50), should_stop=lambda: True)


def test_a_task_in_another_working_directory_loads_its_own_data_by_absolute_config_folder(tmp_path, monkeypatch):
    rows = "\n".join(f"{i % 7},{(i * 3) % 5},{i % 2}" for i in range(40))
    (tmp_path / "d.csv").write_text("a,b,y\n" + rows + "\n")
    task = tiny_task(dataset={"name": "csv", "path": "d.csv", "target": "y"},
                     model={"layers": [{"layer": "Dense", "units": 2, "activation": "softmax"}]})
    split = Split("r0-f0", 0, 0, np.arange(24), np.arange(24, 32))  # 32 rows: 8 of 40 are its test split
    task = Task(task.key, task.config, str(tmp_path), split, 1)
    monkeypatch.chdir(tmp_path.parent)
    result = run_task(task)
    assert result.metrics["n_train"] == 24 and os.getcwd() == str(tmp_path.parent)
