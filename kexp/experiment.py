"""Run an experiment: the driver, and the one loop every validation scheme goes through.

    load and check the data -> splits -> an executor runs one task per split -> aggregate the splits
    -> optionally retrain on all training data (one more task) -> test -> baselines, diagnosis, plots

Hold-out is the one-split case. Tasks (kexp.executor) are plain data and return plain data; the
driver alone writes the run folder (kexp.runfolder's Writer): each epoch's history row and the best
model as their events arrive, and each split's files as its result arrives, so a crash at any moment
leaves a folder that reads back (and a K-fold run that resumes). `prepare` + `Pending` are the two
halves of `execute`, for a caller that runs many runs' tasks at once (a sweep).
"""

from __future__ import annotations

import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kexp import backend, checks, layout, runfolder, runs, scores
from kexp.config import Config, KFold
from kexp.errors import DataError, Interrupted, KexpError, RunError, TrainingFailed
from kexp.executor import Context, Event, Executor, LocalProcessExecutor, Task, TaskResult
from kexp.models import metric_directions
from kexp.validation import Split, splits_for


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
    from kexp.backend import use
    from kexp.data import load_dataset

    use(config, source)  # the config's backend, before anything imports Keras (a download goes through Keras)
    try:
        return load_dataset(config.dataset, config_dir=config_dir)
    except DataError as exc:
        if source is None:
            raise
        raise DataError([f"{source}: {line}" for line in exc.problems]) from None


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
            own.start(split_count(config))  # workers start up while this process loads and checks the data
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


def split_count(config: Config) -> int:
    """How many split tasks the config trains (a hold-out's final model aside)."""
    scheme = config.validation
    return scheme.n_splits * scheme.repeats if isinstance(scheme, KFold) else 1


def prepare(config: Config, *, command: str, runs_dir: Path, executor: Executor, stop: threading.Event,
            config_path: Path | None = None, argv: list[str] | None = None, observer: Observer | None = None,
            resume: Path | None = None, data=None, checked: bool = False, env: dict | None = None,
            plots: bool = True, epochs: int | None = None, checkpoint: bool = False,
            test: bool = True) -> Pending | Result:
    """The first half of `execute`: the data loaded and checked (unless given, and `checked`), the run
    folder made (or reopened with `resume`), and the split tasks still to run. A resumed run that had
    completed comes back as its Result. Whoever runs the tasks feeds their events to `emit` and their
    results to `finished`, then calls `finish`, all inside `guard()`; a sweep runs many at once.

    `epochs` (successive halving's rungs): train to this many epochs, not training.epochs; with
    `resume`, a split that has a checkpoint of the epochs it recorded is trained on from there (a
    completed run too). `checkpoint`: keep each split's last model for that. `test`: False leaves the
    test split untouched (a sweep's trials: the test set is for the sweep's one final model)."""
    observer = observer or Observer()
    config_dir = config_path.parent if config_path else None
    started = time.perf_counter()
    source = str(config_path) if config_path else "<config>"
    if config.backend is None:  # the run folder's config says which backend it trained on
        config = config.model_copy(update={"backend": backend.resolve(None)})
    if data is None:
        data = load_data(config, config_dir, source)
    if not checked:
        checks.check(config, data, source)
    data_s = time.perf_counter() - started
    splits = splits_for(config, data)
    kfold = isinstance(config.validation, KFold)
    target = epochs or config.training.epochs
    if resume is not None:
        found = runs.read_run(resume) if epochs is not None else None
        extend = found is not None and found.status == "completed" and _trains_on(found, target, kfold)
        run, splits, record = runfolder.reopen(resume, splits, kfold, extend=extend)  # checks folds.json first
        if record.status == "completed" and not extend:  # its model.keras and metrics.json are final: touch nothing
            return Result(run.path, record.metrics.to_dict() if record.metrics else {}, "completed",
                          already_complete=True)
    else:
        run = runfolder.start_run(config, command=command, runs_dir=runs_dir, argv=argv or [], config_path=config_path,
                        env=env)
        if isinstance(config.validation, KFold):
            run.write_json(layout.FOLDS, {"splits": [s.to_dict() for s in splits]})
    observer.start(run.path, [s.id for s in splits], target)
    writer = runfolder.Writer(run, kfold, observer)
    context = Context(data=data, folder_of=writer.folder, should_stop=stop.is_set)
    plan = _Plan(config, config_dir, data, splits, executor, writer, context, target, checkpoint, test)
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
        runfolder.final_status(self.run, status, error=error)
        self.writer.close()

    @contextmanager
    def guard(self):
        """Whatever ends the run early is recorded in its status.json, and raised as a KexpError."""
        run = self.run
        try:
            yield
        except KeyboardInterrupt:
            runfolder.final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
            raise Interrupted(f"interrupted; what was done is kept in {run.path}") from None
        except TrainingFailed:  # its status is written
            raise
        except Interrupted:
            runfolder.final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
            raise
        except KexpError as exc:
            runfolder.final_status(run, "failed", error=str(exc))
            raise
        except Exception as exc:
            if self.stop.is_set():  # Ctrl-C landed in a library that turned it into its own error (zipfile, h5py)
                runfolder.final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
                raise Interrupted(f"interrupted; what was done is kept in {run.path}") from None
            runfolder.final_status(run, "failed", error=f"{type(exc).__name__}: {exc}",
                                   traceback=traceback.format_exc())
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
    writer: runfolder.Writer
    context: Context
    epochs: int  # what the splits train to (training.epochs, or a halving rung's)
    checkpoint: bool = False  # keep each split's last model, to train it on later
    test: bool = True  # score the kept model on the test split

    @property
    def kfold(self) -> bool:
        return isinstance(self.config.validation, KFold)

    def task(self, split: Split, epochs: int, keep_model: bool, **more) -> Task:
        config_dir = str(self.config_dir.resolve()) if self.config_dir else None
        return Task(split.id, self.config.to_dict(), config_dir, split, epochs,
                    keep_best=not self.kfold and split.id != layout.FINAL_SPLIT, keep_model=keep_model,
                    test=self.test, **more)

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
            record = runfolder.preprocessing_file(holdout.preprocessing, [layout.BEST])
            run.write_json(layout.BEST_PREPROCESSING, record)
        result = self.run_tasks([self.task(whole, epochs, keep_model=True)])[layout.FINAL_SPLIT]
        metrics["final_model"] = {"epochs": epochs, "n_train": n, "train": result.metrics["train"]["last"]}
        metrics["durations"]["final_s"] = round(time.perf_counter() - started, 3)
        return result

    def write_model(self, result: TaskResult) -> None:
        run = self.writer.run
        runs.atomic_write(run.file(layout.MODEL), result.model)
        has_best = result.key != layout.FINAL_SPLIT and (run.path / layout.BEST).exists()
        run.write_json(layout.PREPROCESSING, runfolder.preprocessing_file(result.preprocessing,
                                                                 [layout.MODEL] + ([layout.BEST] if has_best else [])))
        run.write_text(layout.SUMMARY, result.summary)
