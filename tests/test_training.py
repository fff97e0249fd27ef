"""kexp.training: one split as a task (plain data in, plain data out) and the tf.data input pipeline."""

import os
import pickle

import numpy as np
import pytest
import yaml
from helpers import TINY_CONFIG

from kexp.config import validate_config
from kexp.data import Ragged
from kexp.executor import Task
from kexp.preprocessing import MultiHot
from kexp.training import run_task, to_tf_dataset
from kexp.validation import Split

SEQS = Ragged.from_lists([[1, 5, 3], [2], [], [4, 4, 9, 8, 7]])


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


def test_multi_hot_in_the_tf_pipeline_equals_the_dense_matrix():
    x = MultiHot(SEQS, 10)
    y = np.arange(4, dtype="float32")
    batches = list(to_tf_dataset(x, y, batch_size=3).as_numpy_iterator())
    got = np.concatenate([b[0] for b in batches])
    np.testing.assert_array_equal(got, x.dense())
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_tf_dataset_batches_in_order_without_shuffle():
    x = np.arange(10, dtype="float32").reshape(5, 2)
    y = np.arange(5, dtype="float32")
    batches = list(to_tf_dataset(x, y, batch_size=2).as_numpy_iterator())
    assert [len(b[1]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)


def test_tf_dataset_without_labels_yields_features_only():
    x = np.arange(6, dtype="float32").reshape(3, 2)
    batches = list(to_tf_dataset(x, None, batch_size=2).as_numpy_iterator())
    assert [len(b) for b in batches] == [1, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), x)


def test_tf_dataset_shuffle_is_seeded_complete_and_reshuffled_each_epoch():
    n = 64
    x = np.arange(n, dtype="float32").reshape(n, 1)
    y = np.arange(n, dtype="int64")

    def orders(seed, epochs=3):
        ds = to_tf_dataset(x, y, batch_size=32, shuffle=True, seed=seed, repeat=True)
        it = ds.as_numpy_iterator()
        return [np.concatenate([next(it)[1] for _ in range(2)]).tolist() for _ in range(epochs)]

    first, again = orders(1), orders(1)
    assert first == again  # the seed fixes every epoch's order
    for order in first:
        assert sorted(order) == list(range(n))  # every row once per epoch
        assert order != list(range(n))  # shuffled across the whole set
    assert first[0] != first[1] != first[2]  # a new order each epoch
    assert orders(2)[0] != first[0]
    # the shuffle buffer covers every row: the first batch draws from the whole set, not the first rows
    assert max(first[0][:32]) >= 32 and max(orders(3)[0][:32]) >= 32


def test_tf_dataset_repeat_goes_on_past_one_epoch_only_when_asked():
    x = np.arange(3, dtype="float32").reshape(3, 1)
    assert len(list(to_tf_dataset(x, x, batch_size=2).as_numpy_iterator())) == 2
    it = to_tf_dataset(x, x, batch_size=2, repeat=True).as_numpy_iterator()
    got = [next(it)[0].ravel().tolist() for _ in range(4)]
    assert got == [[0, 1], [2], [0, 1], [2]]


def test_tf_dataset_multi_hot_drops_ids_past_the_width_and_is_float32():
    x = MultiHot(SEQS, 5)  # ids 5..9 are out of the vocabulary
    ds = to_tf_dataset(x, np.zeros(4, dtype="float32"), batch_size=4)
    assert ds.element_spec[0].shape.as_list() == [None, 5]
    (bx, _), = list(ds.as_numpy_iterator())
    assert bx.dtype == np.float32
    np.testing.assert_array_equal(bx, x.dense())
    assert bx[3].tolist() == [0, 0, 0, 0, 1]


def test_tf_dataset_encodes_each_multi_hot_input_of_a_dict():
    seqs = MultiHot(SEQS, 10)
    dense = np.arange(8, dtype="float32").reshape(4, 2)
    y = np.arange(4, dtype="float32")
    ds = to_tf_dataset({"words": seqs, "num": dense}, y, batch_size=3)
    assert ds.element_spec[0]["words"].shape.as_list() == [None, 10]
    batches = list(ds.as_numpy_iterator())
    words = np.concatenate([b[0]["words"] for b in batches])
    np.testing.assert_array_equal(words, seqs.dense())
    np.testing.assert_array_equal(np.concatenate([b[0]["num"] for b in batches]), dense)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), y)
    # a dict without labels too
    batches = list(to_tf_dataset({"words": seqs}, None, batch_size=4).as_numpy_iterator())
    np.testing.assert_array_equal(batches[0][0]["words"], seqs.dense())


def test_tf_dataset_shuffled_multi_hot_rows_keep_their_labels():
    seqs = MultiHot(Ragged.from_lists([[i] for i in range(16)]), 16)
    y = np.arange(16, dtype="int64")
    it = to_tf_dataset(seqs, y, batch_size=4, shuffle=True, seed=0).as_numpy_iterator()
    for bx, by in it:
        assert bx.argmax(axis=1).tolist() == by.tolist()


