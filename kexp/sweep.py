"""`kexp sweep`: many configs, each scored on its validation scheme (the leak-free K-fold mean for a
K-fold config), in one sweep folder (kexp.layout: "sweep folders").

    the search section -> trials (kexp.search) -> every trial checked before anything trains
    -> the trials' split tasks through one shared executor (kexp.trials.Batch), each trial (and seed)
       a run folder of its own under trials/ -> its objective into sweep.json (atomically, as it finishes)
    -> the best trial -> best.yaml, plots

Methods: grid and random run every trial as one batch; halving runs rung by rung, a batch per rung;
tpe asks Optuna (kexp.tpe) for `search.batch` points at a time. A trial's objective is read from its
metrics.json (kexp.trials.objective_of): `validation.best` of the objective metric (the fold mean at
the mean curve's best epoch for K-fold, the best epoch's value for hold-out), with its std across
folds; with several seeds, the mean and std over the seeds. Resume (`--resume`) keeps every finished
trial, finishes a K-fold trial's missing folds, and reruns the rest.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from kexp import layout, runs
from kexp.config import Config, KFold, validate_config
from kexp.errors import ConfigError, Interrupted, RunError
from kexp.executor import Executor, LocalProcessExecutor
from kexp.experiment import Observer, execute, load_data, split_count
from kexp.runfolder import environment, start_run
from kexp.trials import Batch, dataset_key


class SweepObserver(Observer):
    """Progress hooks of a sweep (besides each run's own): the CLI's display subclasses this."""

    def trial_start(self, trial: dict, index: int, total: int) -> None: ...
    def trial_end(self, trial: dict) -> None: ...
    def rung_start(self, rung: int, rungs: int, epochs: int, trials: int) -> None: ...


@dataclass
class SweepResult:
    path: Path
    sweep: dict
    status: str


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


class _Sweep:
    """One sweep folder being written: sweep.json rewritten atomically at every change."""

    def __init__(self, run: runs.Run, record: dict):
        self.run, self.record = run, record

    @property
    def trials(self) -> list[dict]:
        return self.record["trials"]

    def save(self) -> None:
        self.run.write_json(layout.SWEEP_JSON, self.record)

    def finish_trial(self, trial: dict, outcomes: list[dict], started: float) -> None:
        values = [o["objective"] for o in outcomes if o["objective"] is not None]
        if len(outcomes) == 1:
            trial.update({k: v for k, v in outcomes[0].items() if k != "mode"})
        elif values:
            trial["objective"], trial["objective_std"] = _mean_std(values)
            first = outcomes[0]
            trial.update(best_epoch=first["best_epoch"], overfit_epoch=first["overfit_epoch"],
                         margin=first["margin"], epochs_trained=sum(o["epochs_trained"] for o in outcomes))
        trial["status"] = "completed" if trial.get("objective") is not None else "failed"
        if trial["status"] == "failed":
            trial.setdefault("error", "no finite objective value (the loss diverged?)")
        trial["duration_s"] = round(trial.get("duration_s", 0) + time.perf_counter() - started, 3)
        if outcomes and outcomes[0].get("mode"):
            self.record["objective"]["mode"] = outcomes[0]["mode"]
        self.record["best"] = self.best()
        self.save()

    def best(self) -> dict | None:
        done = [t for t in self.trials if t.get("status") == "completed" and t.get("objective") is not None]
        if not done:
            return None
        sign = -1 if self.record["objective"].get("mode") == "max" else 1
        top = min(done, key=lambda t: sign * t["objective"])
        return {"trial": top["id"], "objective": top["objective"], "objective_std": top.get("objective_std"),
                "params": top["params"]}


def run_sweep(config: Config, *, config_path: Path | None, runs_dir: Path, argv: list[str] | None = None,
              observer: SweepObserver | None = None, workers: int = 1, yes: bool = False,
              resume: Path | None = None, executor: Executor | None = None,
              stop: threading.Event | None = None) -> SweepResult:
    """Plan, check and run a sweep, writing its folder. Raises KexpError subclasses (ConfigError
    before anything trains; Interrupted on Ctrl-C, with the sweep folder marked interrupted)."""
    from kexp import search

    observer = observer or SweepObserver()
    stop = stop or threading.Event()
    source = str(config_path) if config_path else "<config>"
    planned = search.plan(config, source, yes=yes)
    with (LocalProcessExecutor(workers) if executor is None else _Borrowed(executor)) as shared:
        if executor is None:  # workers start up while this process checks every trial
            shared.start(len(planned.trials) * split_count(config))
        datasets = check_trials(planned, config_path, source)
        if resume is not None:
            sweep = _reopen(resume, planned)
        else:
            sweep = _start(config, planned, runs_dir, argv or [], config_path)
        env = environment(config, argv or [], config_path)
        try:
            def batch(rung: int | None = None) -> Batch:
                return Batch(sweep, planned, observer, stop, shared, datasets, config_path, env, rung)

            if planned.rungs:
                _halving(sweep, planned, observer, batch)
            elif planned.method == "tpe":
                _tpe(sweep, planned, batch, lambda made: check_trials(SimpleNamespace(trials=made), config_path,
                                                                       source))
            else:
                everything = batch()
                for trial in sweep.trials:
                    if trial["status"] != "completed":
                        everything.add(trial)
                everything.run()
            if config.search.final and not sweep.record.get("final") and sweep.best() is not None:
                _final_model(sweep, planned, shared, observer, stop, config_path, argv or [])
        except (KeyboardInterrupt, Interrupted):
            for trial in sweep.trials:
                if trial["status"] == "running":
                    trial["status"] = "interrupted"
            _final(sweep, "interrupted", error="interrupted (SIGINT/SIGTERM)")
            raise Interrupted(f"interrupted; what was done is kept in {sweep.run.path} "
                              f"(finish it with `kexp sweep --resume {sweep.run.path}`)") from None
        except Exception as exc:
            _final(sweep, "failed", error=f"{type(exc).__name__}: {exc}")
            raise
    _write_best(sweep, planned)
    _plots(sweep.run.path)
    status = "completed" if sweep.record["best"] is not None else "failed"
    _final(sweep, status, **({} if status == "completed" else {"error": "no trial finished with a score"}))
    return SweepResult(sweep.run.path, sweep.record, status)


class _Borrowed:
    """An executor the caller owns: used, not closed."""

    def __init__(self, executor: Executor):
        self.executor = executor

    def __enter__(self) -> Executor:
        return self.executor

    def __exit__(self, *exc) -> None:
        return None


def check_trials(planned, config_path: Path | None, source: str, data: bool = True) -> dict[str, object]:
    """Every distinct trial config through kexp's pre-training checks (names, shapes, labels, the
    objective among the logged metrics; without `data`, what needs no data), all problems at once,
    before anything trains. Returns the datasets loaded, by `dataset_key`."""
    from kexp.checks import check, check_without_data

    datasets: dict[str, object] = {}  # a search may vary the dataset's own settings
    unloadable: dict[str, list[str]] = {}  # a dataset that cannot be loaded is tried once
    trials = _distinct(planned.trials)
    found: list[tuple[object, list[str]]] = []
    for trial in trials:
        trial_config = validate_config(copy.deepcopy(trial.config), source)
        try:
            if not data:
                check_without_data(trial_config, source)
                continue
            spec = dataset_key(trial_config)
            if spec in unloadable:
                raise ConfigError(unloadable[spec])
            if spec not in datasets:
                try:
                    datasets[spec] = load_data(trial_config, config_path.parent if config_path else None, source)
                except ConfigError as exc:
                    unloadable[spec] = exc.problems
                    raise
            check(trial_config, datasets[spec], source)
        except ConfigError as exc:
            found.append((trial, exc.problems))
    # a problem of every trial is the config's own: said once, not once a trial
    common = set.intersection(*(set(lines) for _, lines in found)) if len(found) == len(trials) > 1 else set()
    problems = [line for line in found[0][1] if line in common] if common else []
    for trial, lines in found:
        where = f"search (trial {trial.id}: {_params_text(trial.params)})"
        problems += [line.replace(f"{source}: ", f"{source}: {where}: ", 1) for line in lines if line not in common]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return datasets


def _params_text(params: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.items())


def _start(config: Config, planned, runs_dir: Path, argv: list[str], config_path: Path | None) -> _Sweep:
    run = runs.create_run(runs_dir, f"{config.name}-sweep", "sweep")
    record = {
        "format": layout.SWEEP_FORMAT,
        "name": config.name,
        "method": planned.method,
        "space": planned.space,
        "objective": {"metric": planned.objective, "mode": None,
                      "score": "fold mean at the mean curve's best epoch" if isinstance(config.validation, KFold)
                      else "the best epoch's value"},
        "seeds": planned.seeds,
        **({"rungs": list(planned.rungs), "eta": planned.eta} if planned.rungs else {}),
        **({"budget": planned.budget, "batch": planned.batch} if planned.method == "tpe" else {}),
        "trials": [{"id": t.id, "params": t.params, "status": "pending", "runs": [], "objective": None,
                    "objective_std": None} for t in _distinct(planned.trials)],
        "best": None,
    }
    try:
        run.write_yaml(layout.SWEEP_CONFIG, config.to_dict())
        run.write_json(layout.ENVIRONMENT, environment(config, argv, config_path))
        sweep = _Sweep(run, record)
        sweep.save()
    except OSError as exc:
        _final(_Sweep(run, record), "failed", error=f"cannot write the sweep folder: {exc.strerror or exc}")
        raise RunError(f"{run.path}: cannot write the sweep folder: {exc.strerror or exc}") from None
    return sweep


def _distinct(trials) -> list:
    """One entry per trial id (a trial repeated over several seeds is one entry)."""
    return list({t.id: t for t in trials}.values())


def _reopen(path: Path, planned) -> _Sweep:
    run = runs.open_run(path)
    problems: list[str] = []
    sweep = layout.read_sweep(run.path, problems)
    if sweep is None:
        raise RunError(f"{run.path / layout.SWEEP_JSON}: cannot be read ({'; '.join(problems) or 'missing'}); "
                       "this sweep cannot be resumed")
    record = sweep.to_dict()
    if runs.read_run(run.path).status == "running":  # its process is still alive
        raise RunError(f"{run.path}: is still running (pid {run.status.get('pid')}); resume it once that process "
                       "has stopped")
    if planned.method == "tpe":  # its trials are the points Optuna asked for, as recorded
        for trial in record.get("trials", []):
            planned.new_trial(trial.get("params") or {})
    ids = [t.id for t in _distinct(planned.trials)]
    if [t.get("id") for t in record.get("trials", [])] != ids:
        raise RunError(f"{run.path / layout.SWEEP_JSON}: its trials are not the ones its sweep.yaml plans; "
                       "this sweep cannot be resumed")
    run.status.pop("ended", None)
    run.status.pop("error", None)
    run.set_status("running", resumed=runs.utc_now())
    return _Sweep(run, record)


def _final(sweep: _Sweep, status: str, **extra) -> None:
    try:
        sweep.save()
        sweep.run.set_status(status, **extra)
    except OSError:
        pass


def _halving(sweep: _Sweep, planned, observer: SweepObserver, batch) -> None:
    """Successive halving, rung by rung: every trial trains to the first rung's epochs; the best 1 in
    eta by the rung's objective (the fold mean, for K-fold) trains on from its checkpoints to the next
    rung; and so on to max_epochs. Rungs are synchronous, so the trials promoted do not depend on the
    workers or on the order tasks finish in; a resumed sweep recomputes the same promotions from the
    rungs recorded in sweep.json."""
    alive = list(sweep.trials)
    for k, epochs in enumerate(planned.rungs):
        observer.rung_start(k, len(planned.rungs), epochs, len(alive))
        rung = batch(k)
        for trial in alive:
            if len(trial.get("rungs") or []) <= k:
                rung.add(trial)
        rung.run()
        sign = -1 if sweep.record["objective"].get("mode") == "max" else 1  # known once a trial is scored
        scored = [t for t in alive if len(t.get("rungs") or []) > k and t["rungs"][k]["objective"] is not None]
        keep = max(1, len(alive) // planned.eta)
        chosen = {t["id"] for t in sorted(scored, key=lambda t: sign * t["rungs"][k]["objective"])[:keep]}
        alive = [t for t in alive if t["id"] in chosen]


def _tpe(sweep: _Sweep, planned, batch, check) -> None:
    """Model-based search (kexp.tpe): ask Optuna for `search.batch` points, train them as one batch,
    tell it their objectives; until `search.trials` distinct points have been tried. A point asked
    again is told its known score without training; a trial whose config fails kexp's checks is told
    as failed."""
    from kexp.tpe import Asker
    from kexp.training import monitor_mode

    base = copy.deepcopy(planned.base)
    base["validation"]["monitor"] = planned.objective
    mode = monitor_mode(validate_config(base))
    sweep.record["objective"]["mode"] = mode
    asker = Asker(planned.dimensions, planned.seed, mode, planned.batch)
    known = {}
    for trial in sweep.trials:
        if trial["status"] == "completed":
            asker.add(trial["params"], trial["objective"])
            known[search_key(trial["params"])] = trial["objective"]
    unfinished = [t for t in sweep.trials if t["status"] != "completed"]
    repeats = 0
    while True:
        round_, asked = batch(), []
        for trial in unfinished:  # a resumed sweep's trials that had not finished
            round_.add(trial)
            asked.append((None, trial))
        unfinished = []
        while len(asked) < planned.batch and len(sweep.trials) < planned.budget and repeats < 100:
            handle, point = asker.ask()
            if search_key(point) in known:  # asked again: its score is known
                asker.tell(handle, known[search_key(point)])
                repeats += 1
                continue
            repeats = 0
            made = planned.new_trial(point)
            trial = {"id": made[0].id, "params": point, "status": "pending", "runs": [], "objective": None,
                     "objective_std": None}
            sweep.trials.append(trial)
            known[search_key(point)] = None
            try:
                round_.datasets.update(check(made))
            except ConfigError as exc:
                trial.update(status="failed", error="; ".join(exc.problems))
                sweep.save()
                asker.tell(handle, None)
                continue
            round_.add(trial)
            asked.append((handle, trial))
        if not asked:
            return
        round_.run()
        for handle, trial in asked:
            value = trial["objective"] if trial["status"] == "completed" else None
            known[search_key(trial["params"])] = value
            if handle is None:
                asker.add(trial["params"], value)
            else:
                asker.tell(handle, value)


def _final_model(sweep: _Sweep, planned, executor: Executor, observer: SweepObserver, stop: threading.Event,
                 config_path: Path | None, argv: list[str]) -> None:
    """search.final: the best trial's config retrained on all training data (`validation.final`, the
    best epoch by default) and scored on the test split: the one time a sweep touches the test set.
    A K-fold trial's folds are not trained again: its folds are copied into the final run, which then
    trains only the final model (as `kexp kfold --resume` would)."""
    best = sweep.best()
    trial = next(t for t in sweep.trials if t["id"] == best["trial"])
    data = copy.deepcopy(next(t for t in planned.trials if t.id == best["trial"]).config)
    data["validation"]["final"] = data["validation"].get("final") or {"epochs": "best"}
    config = validate_config(data)
    kfold = isinstance(config.validation, KFold)
    runs_dir = sweep.run.path / layout.SWEEP_FINAL_DIR
    observer.note(f"final model: {trial['id']} retrained on all training data, then tested")
    resume = None
    if kfold:
        run = start_run(config, command="kfold", runs_dir=runs_dir, argv=argv, config_path=config_path)
        source = sweep.run.path / trial["runs"][0]
        runs.atomic_write(run.file(layout.FOLDS), (source / layout.FOLDS).read_bytes())
        for fold in sorted((source / layout.FOLDS_DIR).iterdir()):
            for name in (layout.METRICS, layout.HISTORY, layout.PREPROCESSING):
                if (fold / name).is_file():
                    runs.atomic_write(run.file(layout.FOLDS_DIR, fold.name, name), (fold / name).read_bytes())
        run.set_status("interrupted", error=f"folds copied from trial {trial['id']}; the final model comes next")
        resume = run.path
    result = execute(config, command="kfold" if kfold else "train", runs_dir=runs_dir, config_path=config_path,
                     argv=argv, observer=observer, executor=executor, stop=stop, resume=resume)
    sweep.record["final"] = {"trial": trial["id"], "run": result.path.relative_to(sweep.run.path).as_posix(),
                             "epochs": (result.metrics.get("final_model") or {}).get("epochs"),
                             "test": result.metrics.get("test")}
    sweep.save()


def search_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def _write_best(sweep: _Sweep, planned) -> None:
    best = sweep.record.get("best")
    if best is None:
        return
    chosen = next(t for t in planned.trials if t.id == best["trial"])
    config = copy.deepcopy(chosen.config)
    sweep.run.write_yaml(layout.BEST_CONFIG, config)


def _plots(path: Path) -> None:
    try:
        from kexp import plots

        plots.sweep_plots(path)
    except Exception:  # plotting never fails a sweep
        pass
