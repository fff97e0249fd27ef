"""`kexp sweep`: many configs, each scored on its validation scheme (the leak-free K-fold mean for a
K-fold config), in one sweep folder (kexp.layout: "sweep folders").

    the search section -> trials (kexp.search) -> every trial checked before anything trains
    -> each trial (and seed) run by kexp.experiment through one shared executor, as a run folder of
       its own under trials/ -> its objective into sweep.json (atomically, as it finishes)
    -> the best trial -> best.yaml, plots

A trial's objective is read from its metrics.json: `validation.best` of the objective metric (the
fold mean at the mean curve's best epoch for K-fold, the best epoch's value for hold-out), with its
std across folds; with several seeds, the mean and std over the seeds. Resume (`--resume`) keeps every
finished trial, finishes a K-fold trial's missing folds, and reruns the rest.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

from kexp import layout, runs
from kexp.config import Config, KFold, validate_config
from kexp.errors import ConfigError, Interrupted, KexpError, RunError
from kexp.executor import Context, Executor, LocalProcessExecutor, Task
from kexp.experiment import Observer, Pending, Result, environment, load_data, prepare


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


def objective_of(metrics: dict, metric: str) -> tuple[float | None, float | None]:
    """A run's score on `metric` (a `val_` name) and its std across folds (None for hold-out)."""
    key = metric.removeprefix("val_")
    validation = metrics.get("validation") or {}
    part = "best" if metrics.get("best_epoch") else "last"
    value = (validation.get(part) or {}).get(key)
    std = (validation.get(f"{part}_std") or {}).get(key)
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return (float(value) if finite else None), (float(std) if finite and isinstance(std, (int, float)) else None)


def _summary(metrics: dict, metric: str) -> dict:
    value, std = objective_of(metrics, metric)
    folds = metrics.get("folds") or []
    epochs = sum(f.get("epochs_run") or 0 for f in folds) if folds else metrics.get("epochs_run") or 0
    baseline = metrics.get("baseline") or {}
    return {"objective": value, "objective_std": std, "best_epoch": metrics.get("best_epoch"),
            "overfit_epoch": (metrics.get("diagnostics") or {}).get("overfit_epoch"),
            "margin": baseline.get("margin"), "epochs_trained": epochs, "mode": metrics.get("mode")}


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
    datasets = check_trials(planned, config_path, source)
    if resume is not None:
        sweep = _reopen(resume, planned)
    else:
        sweep = _start(config, planned, runs_dir, argv or [], config_path)
    env = environment(config, argv or [], config_path)
    with (LocalProcessExecutor(workers) if executor is None else _Borrowed(executor)) as shared:
        try:
            def batch(rung: int | None = None) -> _Batch:
                return _Batch(sweep, planned, observer, stop, shared, datasets, config_path, env, rung)

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
    problems: list[str] = []
    for trial in _distinct(planned.trials):
        trial_config = validate_config(copy.deepcopy(trial.config), source)
        try:
            if not data:
                check_without_data(trial_config, source)
                continue
            spec = dataset_key(trial_config)
            if spec not in datasets:
                datasets[spec] = load_data(trial_config, config_path.parent if config_path else None, source)
            check(trial_config, datasets[spec], source)
        except ConfigError as exc:
            where = f"search (trial {trial.id}: {_params_text(trial.params)})"
            problems += [line.replace(f"{source}: ", f"{source}: {where}: ", 1) for line in exc.problems]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return datasets


def dataset_key(config: Config) -> str:
    return repr(config.dataset)


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


class _TrialObserver(Observer):
    """One run of a trial: its progress to the sweep's observer (split ids prefixed with the trial's
    id), and its run folder into sweep.json as soon as it exists (so that a killed sweep can resume the
    trial's finished folds)."""

    def __init__(self, batch: _Batch, trial: dict, prefix: str):
        self.batch, self.trial, self.prefix = batch, trial, prefix
        self.inner, self.sweep = batch.observer, batch.sweep

    def start(self, run_path, splits, epochs):
        name = run_path.relative_to(self.sweep.run.path).as_posix()
        if name not in self.trial["runs"]:
            self.trial["runs"].append(name)
            self.sweep.save()

    def split_start(self, split_id, epochs):
        self.batch.trial_started(self.trial)
        self.inner.split_start(f"{self.prefix}/{split_id}", epochs)

    def epoch_end(self, split_id, epoch, logs):
        self.inner.epoch_end(f"{self.prefix}/{split_id}", epoch, logs)

    def split_end(self, split_id, result):
        self.inner.split_end(f"{self.prefix}/{split_id}", result)

    def final_start(self, epochs):
        self.inner.final_start(epochs)

    def note(self, text):
        self.inner.note(f"{self.trial['id']}: {text}")


@dataclass
class _Member:
    """One run of a batch: a trial trained with one of its seeds."""

    trial: dict
    prefix: str  # its tasks' keys are prefix/split id
    pending: Pending | None  # None once finished
    outcome: dict | None = None


class _Batch:
    """Many trials' split tasks through one executor call (so that workers never wait for a trial's
    last fold), each task's events and result routed to its own run folder; a trial is finished (and
    scored in sweep.json) as soon as all its tasks are. A task that fails fails its trial only."""

    def __init__(self, sweep: _Sweep, planned, observer: SweepObserver, stop: threading.Event,
                 executor: Executor, datasets: dict, config_path: Path | None, env: dict, rung: int | None = None):
        self.sweep, self.planned, self.observer, self.stop, self.executor = sweep, planned, observer, stop, executor
        self.datasets, self.config_path, self.env, self.rung = datasets, config_path, env, rung
        self.members: dict[str, _Member] = {}
        self.started: dict[str, float] = {}  # trial id -> when its first task started

    def add(self, trial: dict) -> None:
        """Make (or reopen) the trial's run folders, one per seed, and queue their tasks."""
        trial["status"] = "running"
        trial.pop("error", None)
        self.sweep.save()
        runs_dir = self.sweep.run.path / layout.TRIALS_DIR
        seeds = [t for t in self.planned.trials if t.id == trial["id"]]
        for k, planned_trial in enumerate(seeds):
            config = validate_config(copy.deepcopy(planned_trial.config))
            prefix = trial["id"] + (f"s{k}" if len(seeds) > 1 else "")
            previous = _resumable(self.sweep, trial, k)
            if previous is None:
                del trial["runs"][k:]  # an unfinished hold-out run is not resumed: it is trained again
            member = _Member(trial, prefix, None)
            self.members[prefix] = member
            try:
                found = prepare(config, command="kfold" if isinstance(config.validation, KFold) else "train",
                                runs_dir=runs_dir, config_path=self.config_path, executor=self.executor,
                                stop=self.stop, observer=_TrialObserver(self, trial, prefix), resume=previous,
                                data=self.datasets.get(dataset_key(config)), checked=True, env=self.env,
                                plots=False, **self._rung_args())
            except Interrupted:
                raise
            except KexpError as exc:
                self._fail(trial, str(exc))
                return
            if isinstance(found, Result):  # a run an earlier sweep finished
                member.outcome = _summary(found.metrics, self.planned.objective)
            else:
                member.pending = found
        self._maybe_done(trial)

    def _rung_args(self) -> dict:
        """Successive halving: train to this rung's epochs, and keep checkpoints unless it is the last."""
        if self.rung is None:
            return {}
        return {"epochs": self.planned.rungs[self.rung], "checkpoint": self.rung < len(self.planned.rungs) - 1}

    def trial_started(self, trial: dict) -> None:
        if trial["id"] not in self.started:
            self.started[trial["id"]] = time.perf_counter()
            total = max(len(self.sweep.trials), self.planned.budget)
            self.observer.trial_start(trial, self.sweep.trials.index(trial), total)

    # ------------------------------------------------------------------ routing
    def _member(self, key: str) -> tuple[_Member, str]:
        prefix, _, split = key.partition("/")
        return self.members[prefix], split

    def emit(self, event) -> None:
        member, split = self._member(event.key)
        if member.pending is not None:
            member.pending.emit(replace(event, key=split))

    def folder_of(self, task: Task) -> Path:
        member, split = self._member(task.key)
        return member.pending.writer.folder(replace(task, key=split))

    def data_of(self, task: Task):
        member, _ = self._member(task.key)
        return member.pending.context.data

    def run(self) -> None:
        """Every queued task, then the runs whose finishing trains a final model."""
        remaining = {f"{m.prefix}/{t.key}": replace(t, key=f"{m.prefix}/{t.key}")
                     for m in self.members.values() if m.pending is not None for t in m.pending.tasks}
        context = Context(folder_of=self.folder_of, data_of=self.data_of, should_stop=self.stop.is_set)
        while remaining:
            try:
                for result in self.executor.run(list(remaining.values()), self.emit, context):
                    del remaining[result.key]
                    member, split = self._member(result.key)
                    if member.pending is None:
                        continue
                    member.pending.finished(replace(result, key=split))
                    if member.pending.done and not member.pending.needs_final:
                        self._finish(member)
            except (KeyboardInterrupt, Interrupted):
                self._interrupted()
                raise
            except Exception as exc:
                key = getattr(exc, "task_key", None)
                if key is None or key.partition("/")[0] not in self.members:
                    self._interrupted(failed=True)
                    raise
                member, _ = self._member(key)
                error = self._recorded(member, exc)
                member.pending = None
                self._fail(member.trial, error)
                remaining = {k: t for k, t in remaining.items()
                             if self._member(k)[0].trial is not member.trial}
        for member in list(self.members.values()):
            if member.pending is not None and member.pending.done:
                self._finish(member)

    # ------------------------------------------------------------------ ends
    def _finish(self, member: _Member) -> None:
        pending = member.pending
        try:
            with pending.guard():
                result = pending.finish()
        except Interrupted:
            raise
        except KexpError as exc:  # this trial failed (a NaN loss): record it, go on
            member.pending = None
            self._fail(member.trial, str(exc))
            return
        member.pending = None
        member.outcome = _summary(result.metrics, self.planned.objective)
        self._maybe_done(member.trial)

    def _maybe_done(self, trial: dict) -> None:
        mine = [m for m in self.members.values() if m.trial is trial]
        if trial["status"] != "running" or any(m.outcome is None for m in mine):
            return
        started = self.started.get(trial["id"], time.perf_counter())
        self.sweep.finish_trial(trial, [m.outcome for m in mine], started)
        if self.rung is not None:
            trial.setdefault("rungs", [])[self.rung:] = [{"epochs": self.planned.rungs[self.rung],
                                                         "objective": trial["objective"],
                                                         "objective_std": trial["objective_std"]}]
            self.sweep.save()
        self.observer.trial_end(trial)

    def _recorded(self, member: _Member, exc: BaseException) -> str:
        """The failed task's exception into its run's status.json (as `execute` would); its text."""
        try:
            with member.pending.guard():
                raise exc
        except KexpError as mapped:
            return str(mapped)

    def _fail(self, trial: dict, error: str) -> None:
        """A trial failed: its other runs end (failed) and it is scored no more; the sweep goes on."""
        for member in self.members.values():
            if member.trial is trial and member.pending is not None:
                member.pending.end("failed", f"another run of trial {trial['id']} failed")
                member.pending = None
        trial["status"], trial["error"] = "failed", error
        started = self.started.get(trial["id"])
        if started is not None:
            trial["duration_s"] = round(trial.get("duration_s", 0) + time.perf_counter() - started, 3)
        self.sweep.save()
        self.observer.trial_end(trial)

    def _interrupted(self, failed: bool = False) -> None:
        for member in self.members.values():
            if member.pending is not None:
                member.pending.end("failed" if failed else "interrupted",
                                   "the sweep failed" if failed else "interrupted (SIGINT/SIGTERM)")


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


def search_key(point: dict) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def _resumable(sweep: _Sweep, trial: dict, seed_index: int) -> Path | None:
    """The K-fold run folder of this trial and seed that an earlier, interrupted sweep left unfinished."""
    if seed_index >= len(trial["runs"]):
        return None
    folder = sweep.run.path / trial["runs"][seed_index]
    record = runs.read_run(folder) if folder.is_dir() else None
    if record is None or record.status == "completed" or not (folder / layout.FOLDS).exists():
        return folder if record is not None and record.status == "completed" else None
    return folder


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
