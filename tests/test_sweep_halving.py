"""`kexp sweep` with `method: halving`: rungs, promotion on fold means, survivors trained on from their
checkpoints (not from scratch), the same sweep on one or two workers, and resume."""

import threading
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from helpers import TINY_CONFIG

from kexp import layout, search
from kexp.config import load_config
from kexp.errors import ConfigError, Interrupted
from kexp.runs import read_history, read_json, read_run
from kexp.sweep import SweepObserver, run_sweep

# four learning rates (so the trials differ), 2 folds; rungs 1, 2, 4 epochs: 4 -> 2 -> 1 trials
HALVING = {**yaml.safe_load(TINY_CONFIG), "validation": {"scheme": "kfold", "n_splits": 2},
           "search": {"method": "halving", "eta": 2, "min_epochs": 1, "max_epochs": 4, "objective": "val_loss",
                      "space": {"compile.optimizer.learning_rate": [0.001, 0.01, 0.03, 0.1]}}}


class Epochs(SweepObserver):
    """Every epoch each (trial, fold) trained, as the sweep reports them."""

    def __init__(self, stop_in_rung: int | None = None, stop: threading.Event | None = None):
        self.seen: dict[str, list[int]] = defaultdict(list)
        self.rung, self.stop_in_rung, self.stop = None, stop_in_rung, stop

    def rung_start(self, rung, rungs, epochs, trials):
        self.rung = rung

    def epoch_end(self, split_id, epoch, logs):
        self.seen[split_id].append(epoch)

    def trial_end(self, trial):
        if self.rung == self.stop_in_rung and self.stop is not None:
            self.stop.set()  # as Ctrl-C does: the next epoch end interrupts


def sweep_of(tmp_path: Path, data: dict = HALVING, **kwargs):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return run_sweep(load_config(path), config_path=path, runs_dir=tmp_path / "runs", **kwargs)


def scores(record: dict) -> dict:
    """(trial id, rung's epochs) -> the rung's objective, for every rung each trial reached."""
    return {(t["id"], r["epochs"]): r["objective"] for t in record["trials"] for r in t.get("rungs") or []}


@pytest.fixture(scope="module")
def halved(tmp_path_factory):
    observer = Epochs()
    return sweep_of(tmp_path_factory.mktemp("halving"), observer=observer), observer


def test_the_best_one_in_eta_of_each_rung_goes_on_by_the_fold_mean(halved):
    result, _ = halved
    record = read_json(result.path / layout.SWEEP_JSON)
    assert record["rungs"] == [1, 2, 4] and record["eta"] == 2 and result.status == "completed"
    trials = record["trials"]
    assert sorted(len(t["rungs"]) for t in trials) == [1, 1, 2, 3]  # 4 trials -> 2 -> 1
    for k, survivors in ((0, 2), (1, 1)):
        entered = [t for t in trials if len(t["rungs"]) > k]
        ranked = sorted(entered, key=lambda t: t["rungs"][k]["objective"])
        promoted = {t["id"] for t in trials if len(t["rungs"]) > k + 1}
        assert promoted == {t["id"] for t in ranked[:survivors]}
    winner = max(trials, key=lambda t: len(t["rungs"]))
    assert record["best"]["trial"] == winner["id"] and winner["objective"] == winner["rungs"][-1]["objective"]
    # a rung's objective is the run's K-fold score at that many epochs: the fold mean at the mean curve's best
    metrics = read_json(result.path / winner["runs"][0] / layout.METRICS)
    assert metrics["epochs_run"] == 4 and winner["objective"] == pytest.approx(metrics["validation"]["best"]["loss"])
    assert winner["epochs_trained"] == 4 * 2  # 4 epochs in each of 2 folds, counted once


def test_survivors_train_on_from_their_checkpoints_not_from_scratch(halved):
    result, observer = halved
    record = read_json(result.path / layout.SWEEP_JSON)
    for trial in record["trials"]:
        epochs = trial["rungs"][-1]["epochs"]
        for fold in ("r0-f0", "r0-f1"):
            assert observer.seen[f"{trial['id']}/{fold}"] == list(range(1, epochs + 1))  # each epoch once
            folder = result.path / trial["runs"][0] / "folds" / fold
            assert read_history(folder / layout.HISTORY)["epoch"] == list(range(1, epochs + 1))
            # the checkpoint of the epochs recorded is the only one kept (the last rung keeps none)
            kept = sorted(p.name for p in folder.glob("checkpoint-*.keras"))
            assert kept == ([] if epochs == 4 else [layout.checkpoint(epochs)])


def test_two_workers_give_the_same_sweep(halved, tmp_path):
    result, _ = halved
    again = sweep_of(tmp_path, workers=2)
    first, second = read_json(result.path / layout.SWEEP_JSON), read_json(again.path / layout.SWEEP_JSON)
    assert scores(second) == pytest.approx(scores(first)) and second["best"]["trial"] == first["best"]["trial"]


def test_an_interrupted_halving_sweep_resumes_without_training_a_finished_rung_again(halved, tmp_path):
    result, _ = halved
    stop = threading.Event()
    with pytest.raises(Interrupted):
        sweep_of(tmp_path, observer=Epochs(stop_in_rung=1, stop=stop), stop=stop)
    folder = next((tmp_path / "runs").iterdir())
    assert read_run(folder).status == "interrupted"
    observer = Epochs()
    resumed = run_sweep(load_config(folder / layout.SWEEP_CONFIG), config_path=folder / layout.SWEEP_CONFIG,
                        runs_dir=tmp_path / "runs", resume=folder, observer=observer)
    assert resumed.status == "completed"
    assert all(1 not in epochs for epochs in observer.seen.values())  # rung 1 (1 epoch) was not trained again
    record = read_json(folder / layout.SWEEP_JSON)
    assert scores(record) == pytest.approx(scores(read_json(result.path / layout.SWEEP_JSON)))


@pytest.mark.parametrize(("search_section", "expected"), [
    ({"method": "halving", "min_epochs": 9, "max_epochs": 4},
     "sweep.yaml: search.min_epochs: must be at most search.max_epochs (4); got 9"),
    ({"method": "grid", "eta": 2}, "sweep.yaml: search.eta: has no effect with method: grid"),
    ({"method": "halving", "eta": 1}, "search.eta"),
])
def test_halving_settings_are_checked_before_anything_trains(tmp_path, search_section, expected):
    data = {**HALVING, "search": {**HALVING["search"], **search_section}}
    data["search"] = {k: v for k, v in data["search"].items()
                      if search_section.get("method") == "halving" or k not in ("eta", "min_epochs", "max_epochs")
                      or k in search_section}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as caught:
        search.plan(load_config(path), str(path.name))
    assert any(expected in line for line in caught.value.problems), caught.value.problems


def test_the_rungs_go_up_by_eta_to_max_epochs_and_trials_train_to_the_last(tmp_path):
    data = {**HALVING, "training": {"epochs": 100, "batch_size": 16},
            "search": {"method": "halving", "space": HALVING["search"]["space"]}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    planned = search.plan(load_config(path), "sweep.yaml")
    assert planned.rungs == (12, 36, 100) and planned.eta == 3  # min_epochs: 100 / 3^2, rounded up
    assert {t.config["training"]["epochs"] for t in planned.trials} == {100}
