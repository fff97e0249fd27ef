"""`kexp sweep` with `method: tpe`: Optuna asks, kexp's executor trains, the K-fold mean is told back."""

import threading

import pytest
import yaml
from cli_runner import invoke, stderr_of
from helpers import TINY_CONFIG

from kexp import layout, search
from kexp.config import load_config
from kexp.errors import Interrupted
from kexp.runs import read_json, read_run
from kexp.sweep import SweepObserver, run_sweep

pytest.importorskip("optuna")

TPE = {**yaml.safe_load(TINY_CONFIG), "validation": {"scheme": "kfold", "n_splits": 2},
       "search": {"method": "tpe", "trials": 3, "objective": "val_loss",
                  "space": {"model.layers.0.units": [2, 4, 8],
                            "compile.optimizer.learning_rate": {"min": 0.001, "max": 0.1, "log": True}}}}


def write(tmp_path, data=TPE):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_of(tmp_path, data=TPE, **kwargs):
    path = write(tmp_path, data)
    return run_sweep(load_config(path), config_path=path, runs_dir=tmp_path / "runs", **kwargs)


def points(path):
    return [t["params"] for t in read_json(path / layout.SWEEP_JSON)["trials"]]


@pytest.fixture(scope="module")
def tpe_sweep(tmp_path_factory):
    return sweep_of(tmp_path_factory.mktemp("tpe"))


def test_optuna_proposes_the_points_and_each_is_scored_on_its_fold_mean(tpe_sweep):
    record = read_json(tpe_sweep.path / layout.SWEEP_JSON)
    assert record["method"] == "tpe" and tpe_sweep.status == "completed"
    assert [t["id"] for t in record["trials"]] == ["t000", "t001", "t002"]
    assert len({yaml.safe_dump(p) for p in points(tpe_sweep.path)}) == 3  # distinct points
    for trial in record["trials"]:
        assert trial["params"]["model.layers.0.units"] in (2, 4, 8)
        assert 0.001 <= trial["params"]["compile.optimizer.learning_rate"] <= 0.1
        metrics = read_json(tpe_sweep.path / trial["runs"][0] / layout.METRICS)
        assert len(metrics["folds"]) == 2
        assert trial["objective"] == pytest.approx(metrics["validation"]["best"]["loss"])
    best = min(record["trials"], key=lambda t: t["objective"])
    assert record["best"]["trial"] == best["id"]
    assert yaml.safe_load((tpe_sweep.path / layout.BEST_CONFIG).read_text())["model"]["layers"][0]["units"] == \
        best["params"]["model.layers.0.units"]


def test_the_same_seed_asks_the_same_points(tpe_sweep):
    from kexp.tpe import Asker

    planned = search.plan(load_config(tpe_sweep.path / layout.SWEEP_CONFIG), "sweep.yaml")
    first, second = (Asker(planned.dimensions, planned.seed, "min", 1) for _ in range(2))
    for value in (1.0, 0.5, 0.7):
        (a, pa), (b, pb) = first.ask(), second.ask()
        assert pa == pb
        first.tell(a, value)
        second.tell(b, value)
    other = Asker(planned.dimensions, planned.seed + 1, "min", 1)
    assert [other.ask()[1] for _ in range(3)] != points(tpe_sweep.path)[:0] + [first.ask()[1]] * 3


def test_an_interrupted_tpe_sweep_resumes_to_its_budget_keeping_what_finished(tmp_path):
    stop = threading.Event()

    class StopAfterFirstTrial(SweepObserver):
        def trial_end(self, trial):
            stop.set()

    with pytest.raises(Interrupted):
        sweep_of(tmp_path, observer=StopAfterFirstTrial(), stop=stop)
    folder = next((tmp_path / "runs").iterdir())
    before = read_json(folder / layout.SWEEP_JSON)["trials"]
    assert before[0]["status"] == "completed" and len(before) == 2 and before[1]["status"] == "interrupted"
    result = invoke("sweep", "--resume", folder, "--quiet")
    assert result.exit_code == 0, result.output
    after = read_json(folder / layout.SWEEP_JSON)["trials"]
    assert len(after) == 3 and all(t["status"] == "completed" for t in after)
    assert after[0] == before[0]  # kept as it was, not trained again
    assert after[1]["params"] == before[1]["params"]  # the unfinished point finished, not asked anew
    assert read_run(folder).status == "completed"


def test_tpe_without_optuna_is_a_config_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(search, "_has_optuna", lambda: False)
    result = invoke("validate", write(tmp_path))
    assert result.exit_code == 2
    assert 'search.method: tpe needs Optuna: pip install "kexp[optuna]"' in stderr_of(result)


@pytest.mark.parametrize(("change", "expected"), [
    ({"trials": None}, "search.trials: required with method: tpe"),
    ({"space": {"model.layers.0.units": [2, 4]}, "trials": 3},
     "search.trials: 3 distinct points asked, but the space has only 2"),
    ({"method": "grid", "trials": None, "batch": 2}, "search.batch: has no effect with method: grid"),
])
def test_tpe_settings_are_checked_before_anything_trains(tmp_path, change, expected):
    data = {**TPE, "search": {k: v for k, v in {**TPE["search"], **change}.items() if v is not None}}
    result = invoke("validate", write(tmp_path, data))
    assert result.exit_code == 2 and expected in stderr_of(result), stderr_of(result)
