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
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kexp import layout, runs
from kexp.config import Config, KFold, validate_config
from kexp.errors import ConfigError, Interrupted, KexpError, RunError
from kexp.executor import Executor, LocalProcessExecutor
from kexp.experiment import Observer, environment, execute, load_data


class SweepObserver(Observer):
    """Progress hooks of a sweep (besides each run's own): the CLI's display subclasses this."""

    def trial_start(self, trial: dict, index: int, total: int) -> None: ...
    def trial_end(self, trial: dict) -> None: ...


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
    check_trials(planned, config_path, source)
    if resume is not None:
        sweep = _reopen(resume, planned)
    else:
        sweep = _start(config, planned, runs_dir, argv or [], config_path)
    with (LocalProcessExecutor(workers) if executor is None else _Borrowed(executor)) as shared:
        try:
            for index, trial in enumerate(sweep.trials):
                if trial["status"] == "completed":
                    continue
                observer.trial_start(trial, index, len(sweep.trials))
                _run_trial(sweep, trial, planned, shared, observer, stop, config_path, argv or [])
                observer.trial_end(trial)
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


def check_trials(planned, config_path: Path | None, source: str, data: bool = True) -> None:
    """Every distinct trial config through kexp's pre-training checks (names, shapes, labels, the
    objective among the logged metrics; without `data`, what needs no data), all problems at once,
    before anything trains."""
    from kexp.checks import check, check_without_data

    datasets: dict[str, object] = {}  # a search may vary the dataset's own settings
    problems: list[str] = []
    for trial in _distinct(planned.trials):
        trial_config = validate_config(copy.deepcopy(trial.config), source)
        try:
            if not data:
                check_without_data(trial_config, source)
                continue
            spec = repr(trial_config.dataset)
            if spec not in datasets:
                datasets[spec] = load_data(trial_config, config_path.parent if config_path else None, source)
            check(trial_config, datasets[spec], source)
        except ConfigError as exc:
            where = f"search (trial {trial.id}: {_params_text(trial.params)})"
            problems += [line.replace(f"{source}: ", f"{source}: {where}: ", 1) for line in exc.problems]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))


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
    """Forwards one run's progress to the sweep's observer, and records its run folder in sweep.json
    as soon as it exists (so that a killed sweep can resume the trial's finished folds)."""

    def __init__(self, inner: Observer, sweep: _Sweep, trial: dict):
        self.inner, self.sweep, self.trial = inner, sweep, trial

    def start(self, run_path, splits, epochs):
        name = run_path.relative_to(self.sweep.run.path).as_posix()
        if name not in self.trial["runs"]:
            self.trial["runs"].append(name)
            self.sweep.save()
        self.inner.start(run_path, splits, epochs)

    def split_start(self, split_id, epochs):
        self.inner.split_start(split_id, epochs)

    def epoch_end(self, split_id, epoch, logs):
        self.inner.epoch_end(split_id, epoch, logs)

    def split_end(self, split_id, result):
        self.inner.split_end(split_id, result)

    def final_start(self, epochs):
        self.inner.final_start(epochs)

    def note(self, text):
        self.inner.note(text)


def _run_trial(sweep: _Sweep, trial: dict, planned, executor: Executor, observer: Observer,
               stop: threading.Event, config_path: Path | None, argv: list[str]) -> None:
    started = time.perf_counter()
    trial["status"] = "running"
    trial.pop("error", None)
    sweep.save()
    outcomes = []
    runs_dir = sweep.run.path / layout.TRIALS_DIR
    for k, planned_trial in enumerate(t for t in planned.trials if t.id == trial["id"]):
        config = validate_config(copy.deepcopy(planned_trial.config))
        command = "kfold" if isinstance(config.validation, KFold) else "train"
        previous = _resumable(sweep, trial, k)
        if previous is None:
            del trial["runs"][k:]  # an unfinished hold-out run is not resumed: it is trained again
        try:
            result = execute(config, command=command, runs_dir=runs_dir, config_path=config_path, argv=argv,
                             observer=_TrialObserver(observer, sweep, trial), executor=executor, stop=stop,
                             resume=previous)
        except Interrupted:
            raise
        except KexpError as exc:  # this trial failed (a NaN loss, a worker died): record it, go on
            trial["status"], trial["error"] = "failed", str(exc)
            trial["duration_s"] = round(trial.get("duration_s", 0) + time.perf_counter() - started, 3)
            sweep.save()
            return
        outcomes.append(_summary(result.metrics, planned.objective))
    sweep.finish_trial(trial, outcomes, started)


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
