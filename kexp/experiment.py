"""Run an experiment: the driver, and the one loop every validation scheme goes through.

    load and check the data -> splits -> an executor runs one task per split -> aggregate the splits
    -> optionally retrain on all training data (one more task) -> test -> baselines, diagnosis, plots

Hold-out is the one-split case. Tasks (kexp.executor) are plain data and return plain data; this
module is the only writer of the run folder (kexp.runs, paths from kexp.layout): it writes each
epoch's history row and the best model as their events arrive, and each split's files as its result
arrives, so a crash at any moment leaves a folder that reads back (and a K-fold run that resumes).
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kexp import checks, layout, runs, scores
from kexp.config import Config, KFold
from kexp.errors import DataError, Interrupted, KexpError, RunError, TrainingFailed
from kexp.executor import Context, Event, Executor, LocalProcessExecutor, Task, TaskResult
from kexp.keras_objects import with_keras_defaults
from kexp.models import metric_directions
from kexp.validation import Split, splits_for

PREPROCESSING_FORMAT = 1  # preprocessing.json


class Observer:
    """Progress hooks; the CLI's display subclasses this. Library code never prints."""

    def start(self, run_path: Path, splits: list[str], epochs: int) -> None: ...
    def split_start(self, split_id: str, epochs: int) -> None: ...
    def epoch_end(self, split_id: str, epoch: int, logs: dict) -> None: ...
    def split_end(self, split_id: str, result: dict) -> None: ...
    def final_start(self, epochs: int) -> None: ...
    def note(self, text: str) -> None: ...


@dataclass
class Result:
    path: Path
    metrics: dict
    status: str
    already_complete: bool = False  # a resume of a completed run: nothing was trained or written


def load_data(config: Config, config_dir: Path | None, source: str | None = None):
    """The dataset; problems are DataErrors prefixed with the config file like config errors."""
    from kexp.data import load_dataset
    from kexp.training import start_backend

    start_backend()  # a download goes through Keras: start TensorFlow quietly first
    try:
        return load_dataset(config.dataset, config_dir=config_dir)
    except DataError as exc:
        if source is None:
            raise
        raise DataError([f"{source}: {line}" for line in exc.problems]) from None


# --------------------------------------------------------------------------- the run folder
def environment(config: Config, argv: list[str], config_path: Path | None) -> dict:
    import kexp
    from kexp.training import versions

    return {
        "kexp": kexp.__version__,
        "python": platform.python_version(),
        **versions(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "seed": config.seed,
        "argv": argv,
        "cwd": os.getcwd(),
        "config_file": str(config_path.resolve()) if config_path else None,
        "git": _git_state(),
    }


def _git_state() -> dict | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def start_run(config: Config, *, command: str, runs_dir: Path, argv: list[str],
              config_path: Path | None, env: dict | None = None) -> runs.Run:
    run = runs.create_run(runs_dir, config.name, command)
    try:
        run.write_config(config.to_dict(), with_keras_defaults(config.to_dict()))
        env = environment(config, argv, config_path) if env is None else {**env, "seed": config.seed}
        run.write_json(layout.ENVIRONMENT, env)
    except OSError as exc:  # e.g. the disk filled up right after the folder was made
        _final_status(run, "failed", error=f"cannot write the run folder: {exc.strerror or exc}")
        raise RunError(f"{run.path}: cannot write the run folder: {exc.strerror or exc}") from None
    return run


def _recorded_splits(run: runs.Run, n: int) -> list[Split]:
    """The folds a K-fold run folder recorded, checked first: folds.json is a file anyone can edit, and
    a fold's id becomes a folder name (`../..` would write outside the run folder)."""
    where = run.path / layout.FOLDS
    try:
        splits = [Split.from_dict(d) for d in runs.read_json(where)["splits"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError, RecursionError) as exc:
        raise RunError(f"{where}: cannot read the folds ({type(exc).__name__}: {exc}); this run folder "
                       "cannot be resumed") from None
    for split in splits:
        if not isinstance(split.id, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", split.id):
            raise RunError(f"{where}: fold id {split.id!r} is not a plain name; this run folder cannot be resumed")
        for index in (split.train_idx, split.val_idx):
            if index.ndim != 1 or (index.size and not 0 <= index.min() <= index.max() < n):
                raise RunError(f"{where}: fold {split.id} has sample indices outside 0..{n - 1}: it was "
                               "written for other data; this run folder cannot be resumed")
    if not splits:
        raise RunError(f"{where}: records no folds; this run folder cannot be resumed")
    return splits


def _reopen(path: Path, splits: list[Split], kfold: bool, extend: bool) -> tuple[runs.Run, list[Split], runs.RunRecord]:
    """An interrupted K-fold run folder, marked running again (a completed one is left untouched,
    unless `extend`: trained on to more epochs). A hold-out run's one split is the config's."""
    run = runs.open_run(path)
    if kfold:
        splits = _recorded_splits(run, len(splits[0].train_idx) + len(splits[0].val_idx))
    record = runs.read_run(run.path)
    if record.status == "running":
        raise RunError(f"{run.path}: is still running (pid {run.status.get('pid')} on "
                       f"{run.status.get('host')}); resume it once that process has stopped")
    if record.status != "completed" or extend:
        run.status.pop("ended", None)
        run.status.pop("error", None)
        run.set_status("running", pid=os.getpid(), resumed=runs.utc_now())
    return run, splits, record


def _final_status(run: runs.Run, status: str, **extra) -> None:
    """Best effort: when not even status.json can be written (a full disk), the error that got us
    here is still the one reported, and the folder reads back as incomplete."""
    try:
        run.set_status(status, **extra)
    except OSError:
        pass


def _preprocessing_file(record: dict, models: list[str]) -> dict:
    return {"format": PREPROCESSING_FORMAT, "models": models, **record}


class _Writer:
    """The driver's side of the tasks: every event and result goes into the run folder as it arrives."""

    def __init__(self, run: runs.Run, kfold: bool, observer: Observer):
        self.run, self.kfold, self.observer = run, kfold, observer
        self.histories: dict[str, runs.HistoryWriter] = {}
        self.rows: dict[str, int] = {}
        self.initial: dict[str, list[dict]] = {}  # a continued split's epochs before its checkpoint

    def folder(self, task: Task) -> Path:
        return self.run.path / layout.split_dir(task.key, self.kfold)

    def emit(self, event: Event) -> None:
        if event.kind == "start":
            history = self.histories[event.key] = self.run.history(layout.split_history(event.key, self.kfold))
            for epoch, logs in enumerate(self.initial.get(event.key, []), start=1):
                history.append(epoch, logs)
            self.rows[event.key] = len(self.initial.get(event.key, []))
            self.observer.split_start(event.key, event.epochs)
        elif event.kind == "epoch" and event.key in self.histories:
            self.histories[event.key].append(event.epoch, event.logs)
            self.rows[event.key] += 1
            self.observer.epoch_end(event.key, event.epoch, event.logs)
        elif event.kind == "best":
            runs.atomic_write(self.run.file(layout.BEST), event.model)

    def finished(self, result: TaskResult) -> None:
        """A split's own files; a K-fold fold's metrics.json last (it marks the fold finished)."""
        history = self.histories.pop(result.key, None)
        if history is not None:
            history.close()
        if self.rows.pop(result.key, None) != len(result.logs):  # events lost on the way: the result has them all
            history = self.run.history(layout.split_history(result.key, self.kfold))
            for epoch, logs in enumerate(result.logs, start=1):
                history.append(epoch, logs)
            history.close()
        folder = layout.split_dir(result.key, self.kfold)
        for name, content in result.files.items():
            runs.atomic_write(self.run.file(folder, name), content)
        if result.checkpoint is not None:
            runs.atomic_write(self.run.file(folder, layout.checkpoint(len(result.logs))), result.checkpoint)
        if self.kfold and result.key != layout.FINAL_SPLIT:
            self.run.write_json(f"{folder}/{layout.PREPROCESSING}", _preprocessing_file(result.preprocessing, []))
            self.run.write_json(f"{folder}/{layout.METRICS}", result.metrics)
            self.prune(folder, len(result.logs))
            self.observer.split_end(result.key, result.metrics)

    def prune(self, folder: str, epochs: int) -> None:
        """Once metrics.json records `epochs`, the split's older checkpoints are of no use."""
        for n, path in layout.checkpoints(self.run.path / folder).items():
            if n != epochs:
                path.unlink(missing_ok=True)

    def close(self) -> None:
        for history in self.histories.values():
            history.close()
        self.histories.clear()


# --------------------------------------------------------------------------- the loop
def execute(config: Config, *, command: str, runs_dir: Path, config_path: Path | None = None,
            argv: list[str] | None = None, observer: Observer | None = None, workers: int = 1,
            resume: Path | None = None, executor: Executor | None = None,
            stop: threading.Event | None = None) -> Result:
    """Check, then train and evaluate, writing the run folder. Raises KexpError subclasses.
    `executor` runs the split tasks (default: `workers` local processes); `stop`, once set, ends
    training at the next epoch end as an interruption (the CLI sets it on SIGINT/SIGTERM)."""
    if executor is None:
        with LocalProcessExecutor(workers) as own:
            return execute(config, command=command, runs_dir=runs_dir, config_path=config_path, argv=argv,
                           observer=observer, resume=resume, executor=own, stop=stop)
    stop = stop or threading.Event()
    pending = prepare(config, command=command, runs_dir=runs_dir, config_path=config_path, argv=argv,
                      observer=observer, resume=resume, executor=executor, stop=stop)
    if isinstance(pending, Result):
        return pending
    with pending.guard():
        for result in executor.run(pending.tasks, pending.emit, pending.context):
            pending.finished(result)
        return pending.finish()


def prepare(config: Config, *, command: str, runs_dir: Path, executor: Executor, stop: threading.Event,
            config_path: Path | None = None, argv: list[str] | None = None, observer: Observer | None = None,
            resume: Path | None = None, data=None, checked: bool = False, env: dict | None = None,
            plots: bool = True, epochs: int | None = None, checkpoint: bool = False) -> Pending | Result:
    """The first half of `execute`: the data loaded and checked (unless given, and `checked`), the run
    folder made (or reopened with `resume`), and the split tasks still to run. A resumed run that had
    completed comes back as its Result. Whoever runs the tasks feeds their events to `emit` and their
    results to `finished`, then calls `finish`, all inside `guard()`; a sweep runs many at once.

    `epochs` (successive halving's rungs): train to this many epochs, not training.epochs; with
    `resume`, a split that has a checkpoint of the epochs it recorded is trained on from there (a
    completed run too). `checkpoint`: keep each split's last model for that."""
    observer = observer or Observer()
    config_dir = config_path.parent if config_path else None
    started = time.perf_counter()
    source = str(config_path) if config_path else "<config>"
    if data is None:
        data = load_data(config, config_dir, source)
    if not checked:
        checks.check(config, data, source)
    data_s = time.perf_counter() - started
    splits = splits_for(config, data)
    kfold = isinstance(config.validation, KFold)
    target = epochs or config.training.epochs
    if resume is not None:
        record = runs.read_run(resume)
        if record is not None and record.status == "completed" and not _trains_on(record, target, kfold):
            # its model.keras and metrics.json are final: touch nothing
            return Result(record.path, record.metrics.to_dict() if record.metrics else {}, "completed",
                          already_complete=True)
        run, splits, record = _reopen(resume, splits, kfold, extend=epochs is not None)
    else:
        run = start_run(config, command=command, runs_dir=runs_dir, argv=argv or [], config_path=config_path,
                        env=env)
        if isinstance(config.validation, KFold):
            run.write_json(layout.FOLDS, {"splits": [s.to_dict() for s in splits]})
    observer.start(run.path, [s.id for s in splits], target)
    writer = _Writer(run, kfold, observer)
    context = Context(data=data, folder_of=writer.folder, should_stop=stop.is_set)
    plan = _Plan(config, config_dir, data, splits, executor, writer, context, target, checkpoint)
    return Pending(plan, stop, started, data_s, plots)


def _trains_on(record: runs.RunRecord, epochs: int, kfold: bool) -> bool:
    """A completed run that a halving rung trains on: fewer epochs than asked (and, hold-out, not
    stopped early; K-fold folds decide that one by one)."""
    metrics = record.metrics
    if metrics is None or (metrics.epochs_run or 0) >= epochs:
        return False
    return kfold or not metrics.stop_reason


class Pending:
    """A run whose split tasks are ready to run (see `prepare`)."""

    def __init__(self, plan: _Plan, stop: threading.Event, started: float, data_s: float, plots: bool):
        self.plan, self.stop, self.started, self.data_s, self.plots = plan, stop, started, data_s, plots
        self.run, self.writer, self.context = plan.writer.run, plan.writer, plan.context
        self.tasks = plan.tasks()
        self.results: dict[str, TaskResult] = {}
        self.train_started = time.perf_counter()

    @property
    def needs_final(self) -> bool:
        """Finishing trains one more task (validation.final) through the executor."""
        return self.plan.config.validation.final is not None

    def emit(self, event: Event) -> None:
        self.writer.emit(event)

    def finished(self, result: TaskResult) -> None:
        self.writer.finished(result)
        self.results[result.key] = result

    @property
    def done(self) -> bool:
        return all(task.key in self.results for task in self.tasks)

    def finish(self) -> Result:
        """Aggregate the splits, train the final model if asked, test, write metrics.json and the status."""
        run = self.run
        metrics = self.plan.complete(self.results, time.perf_counter() - self.train_started)
        metrics["durations"]["data_s"] = round(self.data_s, 3)
        metrics["durations"]["total_s"] = round(time.perf_counter() - self.started, 3)
        run.write_json(layout.METRICS, metrics)
        if not self.plan.kfold:
            self.writer.prune("", metrics.get("epochs_run") or 0)
        if self.plots:
            _plots(run)
        if metrics.get("stop_reason", "") and "NaN" in metrics["stop_reason"]:
            run.set_status("failed", error=metrics["stop_reason"])
            raise TrainingFailed(f"{run.path}: {metrics['stop_reason']}; the metrics up to then are kept")
        run.set_status("completed")
        return Result(run.path, metrics, "completed")

    def end(self, status: str, error: str) -> None:
        """Ended from outside before its tasks finished (a sweep stopped, or another seed failed)."""
        _final_status(self.run, status, error=error)
        self.writer.close()

    @contextmanager
    def guard(self):
        """Whatever ends the run early is recorded in its status.json, and raised as a KexpError."""
        run = self.run
        try:
            yield
        except KeyboardInterrupt:
            _final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
            raise Interrupted(f"interrupted; what was done is kept in {run.path}") from None
        except TrainingFailed:  # its status is written
            raise
        except Interrupted:
            _final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
            raise
        except KexpError as exc:
            _final_status(run, "failed", error=str(exc))
            raise
        except Exception as exc:
            if self.stop.is_set():  # Ctrl-C landed in a library that turned it into its own error (zipfile, h5py)
                _final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
                raise Interrupted(f"interrupted; what was done is kept in {run.path}") from None
            _final_status(run, "failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            raise RunError(f"training failed: {type(exc).__name__}: {exc}; see {run.path}/status.json") from exc
        finally:
            self.writer.close()


def _plots(run: runs.Run) -> None:
    try:
        from kexp import plots

        plots.learning_curves(run.path)
    except Exception:  # plotting never fails a run
        pass


def _columns(logs: list[dict]) -> dict[str, list[float]]:
    """Per-epoch logs as columns (history.csv's shape)."""
    keys = list(dict.fromkeys(k for entry in logs for k in entry))
    return {k: [entry.get(k, float("nan")) for entry in logs] for k in keys}


@dataclass
class _Plan:
    """One run's work: the split tasks, then the optional final model, through one executor."""

    config: Config
    config_dir: Path | None
    data: object
    splits: list[Split]
    executor: Executor
    writer: _Writer
    context: Context
    epochs: int  # what the splits train to (training.epochs, or a halving rung's)
    checkpoint: bool = False  # keep each split's last model, to train it on later

    @property
    def kfold(self) -> bool:
        return isinstance(self.config.validation, KFold)

    def task(self, split: Split, epochs: int, keep_model: bool, **more) -> Task:
        config_dir = str(self.config_dir.resolve()) if self.config_dir else None
        return Task(split.id, self.config.to_dict(), config_dir, split, epochs,
                    keep_best=not self.kfold and split.id != layout.FINAL_SPLIT, keep_model=keep_model, **more)

    def run_tasks(self, tasks: list[Task]) -> dict[str, TaskResult]:
        results = {}
        for result in self.executor.run(tasks, self.writer.emit, self.context):
            self.writer.finished(result)
            results[result.key] = result
        return results

    def finished_folds(self) -> dict[str, scores.Outcome]:
        """K-fold folds a resumed run already finished (a readable folds/<id>/metrics.json)."""
        done = {}
        for split in self.splits:
            folder = self.writer.run.path / layout.split_dir(split.id, True)
            fold = layout.read_fold_metrics(folder)
            if fold is None or ((fold.epochs_run or 0) < self.epochs and not fold.stop_reason
                                and (fold.epochs_run or 0) in layout.checkpoints(folder)):
                continue  # not finished, or trained on to a halving rung's epochs
            history = runs.read_history(folder / layout.HISTORY)
            history.pop("epoch", None)
            done[split.id] = scores.Outcome(fold.to_dict(), history)
            self.writer.observer.note(f"fold {split.id} already finished; kept")
        return done

    def tasks(self) -> list[Task]:
        """The split tasks still to run (a resumed K-fold run keeps the folds it finished; a split
        with a checkpoint of the epochs it recorded trains on from there)."""
        self.outcomes = self.finished_folds() if self.kfold else {}
        keep = not self.kfold and self.config.validation.final is None  # the hold-out model is the tested one
        tasks = []
        for split in self.splits:
            if split.id in self.outcomes:
                continue
            more = self.continued(split)
            self.writer.initial[split.id] = list(more.get("initial_logs", ()))
            tasks.append(self.task(split, self.epochs, keep, checkpoint=self.checkpoint, **more))
        return tasks

    def recorded(self, split: Split) -> tuple[dict, dict] | None:
        """What a split recorded: its metrics (a fold's metrics.json, a hold-out run's) and history."""
        run = self.writer.run
        folder = run.path / layout.split_dir(split.id, self.kfold)
        found = layout.read_fold_metrics(folder) if self.kfold else layout.read_metrics(run.path)
        if found is None or not (folder / layout.HISTORY).exists():
            return None
        history = runs.read_history(folder / layout.HISTORY)
        history.pop("epoch", None)
        return found.to_dict(), history

    def continued(self, split: Split) -> dict:
        """A split that trains on from its checkpoint: the checkpoint and the epochs before it."""
        recorded = self.recorded(split)
        if recorded is None:
            return {}
        metrics, history = recorded
        n = metrics.get("epochs_run") or 0
        path = layout.checkpoints(self.writer.run.path / layout.split_dir(split.id, self.kfold)).get(n)
        if not n or path is None or any(len(values) < n for values in history.values()):
            return {}
        logs = tuple({k: v[i] for k, v in history.items()} for i in range(n))
        return {"initial_model": path.read_bytes(), "initial_logs": logs}

    def complete(self, results: dict[str, TaskResult], train_s: float) -> dict:
        """metrics.json's content from the splits' results (and the final model, trained here)."""
        config, run = self.config, self.writer.run
        outcomes = dict(self.outcomes)
        keep = not self.kfold and config.validation.final is None
        outcomes.update({key: scores.Outcome(r.metrics, _columns(r.logs)) for key, r in results.items()})
        ordered = [outcomes[s.id] for s in self.splits]
        metrics = self.header(run.command, ordered)
        if self.kfold:
            metrics.update(scores.aggregate(config, ordered, metrics["mode"]))
        else:
            metrics.update({k: ordered[0].metrics[k] for k in ("epochs_run", "best_epoch", "validation", "train")})
        metrics["durations"] = {"train_s": round(train_s, 3)}
        holdout = None if self.kfold else results.get(self.splits[0].id)
        tested = self.final(metrics, holdout) or (holdout if keep else None)
        metrics["test"] = None
        if tested is not None:
            metrics["test"] = tested.test
            self.write_model(tested)
        found = scores.baselines(self.data, self.splits, metrics)
        metrics["baseline"] = next(iter(found.values()), None)
        metrics["baselines"] = found
        history = metrics.get("curves", {}) if self.kfold else ordered[0].history
        metrics["diagnostics"] = scores.diagnosis(history, metrics.get("best_epoch"))
        metrics["directions"] = metric_directions(config)  # which way each logged metric improves
        return metrics

    def header(self, command: str, outcomes: list[scores.Outcome]) -> dict:
        from kexp.training import monitor_mode

        outputs = scores.outputs(self.config, self.data, outcomes[0].metrics)
        return {
            "format": layout.METRICS_FORMAT,
            "command": command,
            "dataset": self.config.dataset.name,
            "scheme": self.config.validation.scheme,
            "monitor": self.config.validation.monitor,
            "mode": monitor_mode(self.config),
            "main_metric": next(iter(outputs.values()))["main_metric"],
            "outputs": outputs,
            "stop_reason": next((o.metrics.get("stop_reason") for o in outcomes if o.metrics.get("stop_reason")),
                                None),
        }

    def final(self, metrics: dict, holdout: TaskResult | None) -> TaskResult | None:
        """Retrain on all training data (validation.final), unless the loss blew up."""
        spec, stop = self.config.validation.final, metrics["stop_reason"]
        if spec is None or (stop and "NaN" in stop):
            metrics["final_model"] = None
            return None
        epochs = metrics["best_epoch"] if spec.epochs == "best" else spec.epochs
        epochs = int(epochs or self.config.training.epochs)
        self.writer.observer.final_start(epochs)
        started = time.perf_counter()
        n = len(self.splits[0].train_idx) + len(self.splits[0].val_idx)
        whole = Split(layout.FINAL_SPLIT, 0, 0, np.arange(n), np.arange(0))
        run = self.writer.run
        if holdout is not None and (run.path / layout.BEST).exists():  # best.keras keeps its own preprocessing
            run.write_json(layout.BEST_PREPROCESSING, _preprocessing_file(holdout.preprocessing, [layout.BEST]))
        result = self.run_tasks([self.task(whole, epochs, keep_model=True)])[layout.FINAL_SPLIT]
        metrics["final_model"] = {"epochs": epochs, "n_train": n, "train": result.metrics["train"]["last"]}
        metrics["durations"]["final_s"] = round(time.perf_counter() - started, 3)
        return result

    def write_model(self, result: TaskResult) -> None:
        run = self.writer.run
        runs.atomic_write(run.file(layout.MODEL), result.model)
        has_best = result.key != layout.FINAL_SPLIT and (run.path / layout.BEST).exists()
        run.write_json(layout.PREPROCESSING, _preprocessing_file(result.preprocessing,
                                                                 [layout.MODEL] + ([layout.BEST] if has_best else [])))
        run.write_text(layout.SUMMARY, result.summary)
