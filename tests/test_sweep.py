"""kexp.sweep and `kexp sweep`: trials as run folders, objectives from fold means, resume, best.yaml."""

import json
import threading
from pathlib import Path

import pytest
import yaml
from cli_runner import invoke, stderr_of
from helpers import TINY_CONFIG

from kexp import layout
from kexp.config import load_config
from kexp.errors import ConfigError, Interrupted
from kexp.runs import read_json, read_run
from kexp.sweep import SweepObserver, run_sweep
from kexp.trials import objective_of

SWEEP = {**yaml.safe_load(TINY_CONFIG), "validation": {"scheme": "kfold", "n_splits": 2},
         "search": {"method": "grid", "space": {"model.layers.0.units": [4, 8]}, "objective": "val_loss"}}


def write(tmp_path: Path, data: dict, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_of(tmp_path: Path, data: dict = SWEEP, **kwargs):
    path = write(tmp_path, data)
    return run_sweep(load_config(path), config_path=path, runs_dir=tmp_path / "runs", **kwargs)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One tiny K-fold grid sweep (2 trials x 2 folds x 2 epochs), read by several tests."""
    return sweep_of(tmp_path_factory.mktemp("sweep"))


def _trial_metrics(sweep_path: Path, trial: dict) -> dict:
    return read_json(sweep_path / trial["runs"][0] / layout.METRICS)


def test_every_trial_is_a_complete_run_folder_scored_on_its_fold_mean(finished):
    record = read_json(finished.path / layout.SWEEP_JSON)
    assert finished.status == "completed" and read_run(finished.path).status == "completed"
    assert record["format"] == layout.SWEEP_FORMAT and record["method"] == "grid"
    assert sorted(t["params"]["model.layers.0.units"] for t in record["trials"]) == [4, 8]
    for trial in record["trials"]:
        assert trial["status"] == "completed" and len(trial["runs"]) == 1
        run = finished.path / trial["runs"][0]
        assert run.parent == finished.path / layout.TRIALS_DIR and read_run(run).status == "completed"
        metrics = _trial_metrics(finished.path, trial)
        assert len(metrics["folds"]) == 2
        # the K-fold objective: the fold mean at the mean curve's best epoch, with its std across folds
        assert trial["objective"] == pytest.approx(metrics["validation"]["best"]["loss"])
        assert trial["objective_std"] == pytest.approx(metrics["validation"]["best_std"]["loss"])
        assert trial["best_epoch"] == metrics["best_epoch"]
        assert trial["epochs_trained"] == sum(f["epochs_run"] for f in metrics["folds"])
    best = min(record["trials"], key=lambda t: t["objective"])
    assert record["best"]["trial"] == best["id"] and record["objective"]["mode"] == "min"


def test_the_best_config_file_runs_as_a_plain_config_and_reproduces_the_best_trial(finished, tmp_path):
    record = read_json(finished.path / layout.SWEEP_JSON)
    best = next(t for t in record["trials"] if t["id"] == record["best"]["trial"])
    config = load_config(finished.path / layout.BEST_CONFIG)
    assert config.search is None
    assert config.model.layers[0]["units"] == best["params"]["model.layers.0.units"]
    result = invoke("kfold", finished.path / layout.BEST_CONFIG, "--runs-dir", tmp_path / "again", "--quiet")
    assert result.exit_code == 0, result.output
    again = read_json(next((tmp_path / "again").iterdir()) / layout.METRICS)
    assert again["validation"]["best"]["loss"] == pytest.approx(best["objective"], abs=1e-6)


def test_objective_of_reads_the_best_epoch_value_and_its_fold_std():
    kfold = {"best_epoch": 3, "validation": {"best": {"mae": 2.5}, "best_std": {"mae": 0.25}, "last": {"mae": 3.0}}}
    assert objective_of(kfold, "val_mae") == (2.5, 0.25)
    holdout = {"best_epoch": 2, "validation": {"best": {"accuracy": 0.9}, "last": {"accuracy": 0.8}}}
    assert objective_of(holdout, "val_accuracy") == (0.9, None)
    assert objective_of({"best_epoch": None, "validation": {"last": {"mae": 1.0}}}, "val_mae") == (1.0, None)
    assert objective_of({"best_epoch": 1, "validation": {"best": {"mae": float("nan")}}}, "val_mae") == (None, None)


def test_two_workers_give_the_same_sweep_as_one(finished, tmp_path):
    two = sweep_of(tmp_path, workers=2)
    one = read_json(finished.path / layout.SWEEP_JSON)
    by_id = {t["id"]: t for t in read_json(two.path / layout.SWEEP_JSON)["trials"]}
    for trial in one["trials"]:
        assert by_id[trial["id"]]["params"] == trial["params"]
        assert by_id[trial["id"]]["objective"] == trial["objective"]
        assert by_id[trial["id"]]["objective_std"] == trial["objective_std"]


def test_a_trial_that_fails_its_check_stops_a_sweep_on_two_workers_with_none_left_running(tmp_path):
    import multiprocessing

    bad = {**SWEEP, "search": {**SWEEP["search"], "space": {"model.layers.0.activation": ["relu", "nope"]}}}
    with pytest.raises(ConfigError) as caught:
        sweep_of(tmp_path, bad, workers=2)
    assert any("model.layers.0.activation" in line and "nope" in line for line in caught.value.problems)
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_problem_of_every_trial_is_said_once_and_a_missing_dataset_is_looked_for_once(tmp_path, monkeypatch):
    from kexp import sweep as sweep_module

    loads = []
    real = sweep_module.load_data
    monkeypatch.setattr(sweep_module, "load_data", lambda *args: loads.append(1) or real(*args))
    missing = {**SWEEP, "dataset": {"name": "csv", "path": "absent.csv", "target": "y"}}
    with pytest.raises(ConfigError) as caught:
        sweep_of(tmp_path, missing)
    (line,) = caught.value.problems
    assert "absent.csv" in line and "search (trial" not in line and line.startswith(str(tmp_path / "sweep.yaml"))
    assert len(loads) == 1


def test_resume_recomputes_no_finished_trial_or_fold(tmp_path):
    done = sweep_of(tmp_path)
    record = read_json(done.path / layout.SWEEP_JSON)
    first, last = record["trials"]
    kept_trial = done.path / first["runs"][0] / layout.METRICS
    last_run = done.path / last["runs"][0]
    kept_fold = last_run / "folds" / "r0-f0" / layout.HISTORY
    stamps = (kept_trial.stat().st_mtime_ns, kept_fold.stat().st_mtime_ns)
    # as if killed during the last trial's second fold
    (last_run / "folds" / "r0-f1" / layout.METRICS).unlink()
    (last_run / layout.METRICS).unlink()
    for folder in (last_run, done.path):
        status = read_json(folder / layout.STATUS) | {"status": "interrupted"}
        (folder / layout.STATUS).write_text(json.dumps(status))
    last.update(status="running", objective=None)
    record["best"] = None
    (done.path / layout.SWEEP_JSON).write_text(json.dumps(record))

    result = invoke("sweep", "--resume", done.path, "--quiet")
    assert result.exit_code == 0, result.output
    resumed = read_json(done.path / layout.SWEEP_JSON)
    assert [t["status"] for t in resumed["trials"]] == ["completed", "completed"]
    assert resumed["trials"][1]["runs"] == last["runs"]  # the same run folder, finished
    assert (kept_trial.stat().st_mtime_ns, kept_fold.stat().st_mtime_ns) == stamps
    assert (last_run / "folds" / "r0-f1" / layout.METRICS).exists()
    assert resumed["trials"][1]["objective"] == pytest.approx(read_json(last_run / layout.METRICS)
                                                              ["validation"]["best"]["loss"])
    assert read_run(done.path).status == "completed"


def test_ctrl_c_marks_the_sweep_and_its_running_trial_interrupted(tmp_path):
    stop = threading.Event()

    class StopAfterFirstTrial(SweepObserver):
        def trial_end(self, trial):
            stop.set()  # what the CLI's SIGINT handler does: the next epoch end raises KeyboardInterrupt

    with pytest.raises(Interrupted, match="kexp sweep --resume"):
        sweep_of(tmp_path, observer=StopAfterFirstTrial(), stop=stop)
    folder = next((tmp_path / "runs").iterdir())
    assert read_run(folder).status == "interrupted"
    statuses = [t["status"] for t in read_json(folder / layout.SWEEP_JSON)["trials"]]
    assert statuses == ["completed", "interrupted"]


def test_a_trial_whose_loss_diverges_is_recorded_failed_and_the_sweep_goes_on(tmp_path):
    data = {**SWEEP, "search": {"space": {"compile.optimizer.learning_rate": [1e30, 0.01]}, "objective": "val_loss"}}
    result = sweep_of(tmp_path, data)
    trials = {t["params"]["compile.optimizer.learning_rate"]: t for t in result.sweep["trials"]}
    assert trials[1e30]["status"] == "failed" and "NaN" in trials[1e30]["error"]
    assert trials[0.01]["status"] == "completed" and result.sweep["best"]["trial"] == trials[0.01]["id"]


def test_train_and_kfold_refuse_a_sweep_config(tmp_path):
    path = write(tmp_path, SWEEP)
    for command in ("kfold", "train"):
        result = invoke(command, path, "--runs-dir", tmp_path / "runs")
        assert result.exit_code == 2, result.output
        assert "search:" in stderr_of(result) and "kexp sweep" in stderr_of(result)
    assert not (tmp_path / "runs").exists()


def test_a_config_without_search_is_refused_by_sweep(tmp_path):
    path = write(tmp_path, {k: v for k, v in SWEEP.items() if k != "search"})
    result = invoke("sweep", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "search: missing" in stderr_of(result)


def test_a_trial_that_cannot_build_is_reported_before_anything_trains(tmp_path):
    data = {**SWEEP, "search": {"space": {"model.layers.1.units": [3, 5]}, "objective": "val_loss"}}
    result = invoke("sweep", write(tmp_path, data), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2, result.output
    assert "model.layers.1.units" in stderr_of(result) and "5" in stderr_of(result)
    assert not (tmp_path / "runs").exists()


def test_the_sweep_command_shows_each_trial_and_ends_with_the_leaderboard(tmp_path):
    result = invoke("sweep", write(tmp_path, SWEEP), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "trial t000 (1/2): model.layers.0.units=" in out and "trial t001 (2/2)" in out
    assert "trial t000: objective " in out and "trial t001: objective " in out  # both scored
    assert "leaderboard" in out and "best.yaml" in out
    folder = next((tmp_path / "runs").iterdir())
    assert "-sweep-" in folder.name
    assert (folder / layout.BEST_CONFIG).exists()


def test_search_final_retrains_the_best_config_on_all_training_data_and_tests_it_once(tmp_path):
    data = {**SWEEP, "search": {**SWEEP["search"], "final": True}}
    result = sweep_of(tmp_path, data)
    record = read_json(result.path / layout.SWEEP_JSON)
    final = record["final"]
    assert result.status == "completed" and final["trial"] == record["best"]["trial"]
    run = result.path / final["run"]
    assert run.parent == result.path / layout.SWEEP_FINAL_DIR and read_run(run).status == "completed"
    metrics = read_json(run / layout.METRICS)
    assert final["test"] == metrics["test"] and set(final["test"]) >= {"loss", "accuracy"}
    assert metrics["final_model"]["n_train"] == 120 and (run / layout.MODEL).is_file()
    # its folds are the best trial's, not trained again; and no trial was scored on the test split
    best = next(t for t in record["trials"] if t["id"] == final["trial"])
    trial_metrics = _trial_metrics(result.path, best)
    assert metrics["folds"] == trial_metrics["folds"] and final["epochs"] == trial_metrics["best_epoch"]
    assert all(_trial_metrics(result.path, t)["test"] is None for t in record["trials"])
    shown = invoke("show", result.path)
    assert f"{final['trial']} retrained on all training data" in shown.output


def test_hold_out_trials_keep_their_model_but_never_touch_the_test_split(tmp_path):
    data = {**SWEEP, "validation": {"scheme": "holdout", "size": 0.2, "shuffle": True}}
    result = sweep_of(tmp_path, data)
    for trial in read_json(result.path / layout.SWEEP_JSON)["trials"]:
        run = result.path / trial["runs"][0]
        assert (run / layout.MODEL).is_file() and read_json(run / layout.METRICS)["test"] is None
