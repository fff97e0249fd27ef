"""kexp.executor: tasks run in process, in local worker processes, or by any executor that returns
results in its own order from elsewhere — and the driver writes the same run folder every time."""

import json
import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import TINY_CONFIG

from kexp.config import validate_config
from kexp.errors import ConfigError, RunError
from kexp.executor import Context, InProcessExecutor, LocalProcessExecutor
from kexp.experiment import execute
from kexp.runs import read_run
from kexp.training import run_task

KFOLD = {**yaml.safe_load(TINY_CONFIG), "validation": {"scheme": "kfold", "n_splits": 3, "final": {"epochs": 1}}}


class FarAwayExecutor:
    """What a remote executor looks like to the driver: it ignores the driver's context, runs every task
    in an empty working directory of its own, and hands the results back in reverse order."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.seen_cwd: list[str] = []

    def run(self, tasks, emit, context=None):
        results, here = [], os.getcwd()
        os.chdir(self.workdir)
        try:
            for task in tasks:
                self.seen_cwd.append(os.getcwd())
                results.append(run_task(task, emit))
        finally:
            os.chdir(here)
        yield from reversed(results)


def _run(tmp_path: Path, executor=None, workers: int = 1) -> Path:
    config = validate_config({**KFOLD, "name": "same"})
    return execute(config, command="kfold", runs_dir=tmp_path / "runs", executor=executor, workers=workers).path


def _files(folder: Path) -> dict[str, object]:
    """Every file of a run folder, with what differs between two identical runs (times, pids, paths,
    model archives' timestamps) left out."""
    out = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if not path.is_file() or name in ("status.json", "environment.json") or name.startswith("plots/"):
            continue
        if path.suffix == ".json":
            out[name] = _without_times(json.loads(path.read_text()))
        elif path.suffix == ".keras":
            out[name] = "model"
        else:
            out[name] = path.read_text()
    return out


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in ("durations", "duration_s")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_a_kfold_through_an_executor_returning_out_of_order_from_elsewhere_writes_the_same_folder(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    far = FarAwayExecutor(elsewhere)
    remote = _run(tmp_path, executor=far)
    local = _run(tmp_path, executor=InProcessExecutor())
    assert set(far.seen_cwd) == {str(elsewhere)} and len(far.seen_cwd) == 4  # 3 folds + the final model
    assert list(elsewhere.iterdir()) == []  # the tasks wrote nothing where they ran
    assert read_run(remote).status == read_run(local).status == "completed"
    remote_files, local_files = _files(remote), _files(local)
    assert sorted(remote_files) == sorted(local_files)
    assert {"folds/r0-f2/metrics.json", "folds/r0-f2/history.csv", "model.keras", "final_history.csv"} <= set(
        remote_files)
    for name in local_files:
        assert remote_files[name] == local_files[name], name
    folds = json.loads((remote / "metrics.json").read_text())["folds"]
    assert [f["id"] for f in folds] == ["r0-f0", "r0-f1", "r0-f2"]  # sorted, whatever the arrival order


def test_local_processes_give_the_same_folder_as_one_process(tmp_path):
    two = _run(tmp_path, workers=2)
    one = _run(tmp_path, workers=1)
    two_files, one_files = _files(two), _files(one)
    differing = [name for name in sorted(set(two_files) | set(one_files)) if two_files.get(name) != one_files.get(name)]
    assert differing == []


def _tasks(n: int):
    from kexp.executor import Task
    from kexp.validation import splits_for

    class Iris:  # what splits_for reads of a dataset
        y_train = np.repeat([0, 1, 2], 40)  # 120 training rows
        task = "multiclass"

    config = validate_config({**KFOLD, "validation": {"scheme": "kfold", "n_splits": n}})
    return [Task(s.id, config.to_dict(), None, s, 1) for s in splits_for(config, Iris)]


def test_local_processes_yield_every_result_once_and_forward_progress_events():
    events = []
    results = list(LocalProcessExecutor(2).run(_tasks(3), events.append, Context()))
    assert sorted(r.key for r in results) == ["r0-f0", "r0-f1", "r0-f2"]
    starts = [e.key for e in events if e.kind == "start"]
    assert len(starts) == len(set(starts)) and set(starts) <= {"r0-f0", "r0-f1", "r0-f2"}
    assert all(r.metrics["epochs_run"] == 1 for r in results)


def test_a_config_error_in_a_worker_reaches_the_driver_with_its_lines():
    tasks = _tasks(2)
    broken = {**tasks[0].config, "model": {"layers": [{"layer": "Dense", "units": 3, "activation": "nope"}],
                                           "inputs": None, "outputs": None}}
    from dataclasses import replace

    tasks = [replace(task, config=broken) for task in tasks]
    with pytest.raises(ConfigError) as caught:
        list(LocalProcessExecutor(2).run(tasks, lambda event: None, Context()))
    assert all("\n" not in line for line in caught.value.problems)
    assert any("activation" in line for line in caught.value.problems)


def test_a_worker_that_dies_fails_the_run_with_the_task_named_and_no_worker_left_behind():
    killed = []

    def emit(event):
        if event.kind == "start" and not killed:
            victim = multiprocessing.active_children()[0]
            os.kill(victim.pid, signal.SIGKILL)
            killed.append(victim)

    with pytest.raises(RunError, match=r"a worker process died \(killed, or out of memory\) while training r0-f"):
        list(LocalProcessExecutor(2).run(_tasks(3), emit, Context()))
    assert killed and not [p for p in multiprocessing.active_children() if p.is_alive()]


def _workers() -> list:
    return [p for p in multiprocessing.active_children() if p.is_alive()]


@pytest.mark.parametrize("pinned", [True, False], ids=["pinned", "floating"])
def test_started_workers_are_up_before_the_first_run_and_run_it_where_the_backend_wants_them(monkeypatch, pinned):
    from kexp import backend

    monkeypatch.setitem(backend.PINS_WORKERS, backend.chosen(), pinned)  # read by the driver as workers start
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with LocalProcessExecutor(2) as executor:
        executor.start(3)
        started = _workers()
        assert len(started) == 2  # spawned now, while the driver would load and check its data
        results = list(executor.run(_tasks(3), lambda event: None, Context()))
        assert sorted(r.key for r in results) == ["r0-f0", "r0-f1", "r0-f2"]
        assert {p.pid for p in _workers()} == {p.pid for p in started}  # the same processes ran the tasks
        if cpus is not None:
            shares = [os.sched_getaffinity(p.pid) for p in started]
            if pinned and len(cpus) >= 2:  # CPUs of its own each
                assert all(shares) and not shares[0] & shares[1] and shares[0] | shares[1] <= cpus
            else:
                assert shares == [cpus, cpus]
    assert not _workers()


def test_one_task_or_one_worker_starts_no_process():
    with LocalProcessExecutor(2) as executor:
        executor.start(1)
        assert not _workers()
    with LocalProcessExecutor(1) as executor:
        executor.start(4)
        assert not _workers()


def test_started_workers_are_ended_at_once_when_the_driver_fails_before_any_task():
    with pytest.raises(ConfigError), LocalProcessExecutor(2) as executor:
        executor.start(4)
        assert len(_workers()) == 2
        raise ConfigError(["c.yaml: model.layers.0: a problem found while the workers start"])
    assert not _workers()
