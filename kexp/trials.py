"""A sweep's trials trained together: every trial's (and seed's) split tasks through one executor
call (`Batch`), so that workers never wait for one trial's last fold; each task's events and result
routed to its own run folder (kexp.experiment's `prepare`/`Pending`); a trial scored in sweep.json as
soon as all its tasks are; a task that fails failing its trial only. kexp.sweep decides which trials
a batch holds (all of them; a halving rung's; the points Optuna asked for).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kexp import layout, runs
from kexp.config import Config, KFold, validate_config
from kexp.errors import Interrupted, KexpError
from kexp.executor import Context, Executor, Task
from kexp.experiment import Observer, Pending, Result, prepare


def objective_of(metrics: dict, metric: str) -> tuple[float | None, float | None]:
    """A run's score on `metric` (a `val_` name) and its std across folds (None for hold-out)."""
    key = metric.removeprefix("val_")
    validation = metrics.get("validation") or {}
    part = "best" if metrics.get("best_epoch") else "last"
    value = (validation.get(part) or {}).get(key)
    std = (validation.get(f"{part}_std") or {}).get(key)
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    return (float(value) if finite else None), (float(std) if finite and isinstance(std, (int, float)) else None)


def summary(metrics: dict, metric: str) -> dict:
    value, std = objective_of(metrics, metric)
    folds = metrics.get("folds") or []
    epochs = sum(f.get("epochs_run") or 0 for f in folds) if folds else metrics.get("epochs_run") or 0
    baseline = metrics.get("baseline") or {}
    return {"objective": value, "objective_std": std, "best_epoch": metrics.get("best_epoch"),
            "overfit_epoch": (metrics.get("diagnostics") or {}).get("overfit_epoch"),
            "margin": baseline.get("margin"), "epochs_trained": epochs, "mode": metrics.get("mode")}


class TrialObserver(Observer):
    """One run of a trial: its progress to the sweep's observer (split ids prefixed with the trial's
    id), and its run folder into sweep.json as soon as it exists (so that a killed sweep can resume the
    trial's finished folds)."""

    def __init__(self, batch: Batch, trial: dict, prefix: str):
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
class Member:
    """One run of a batch: a trial trained with one of its seeds."""

    trial: dict
    prefix: str  # its tasks' keys are prefix/split id
    pending: Pending | None  # None once finished
    outcome: dict | None = None


class Batch:
    """Many trials' split tasks through one executor call (so that workers never wait for a trial's
    last fold), each task's events and result routed to its own run folder; a trial is finished (and
    scored in sweep.json) as soon as all its tasks are. A task that fails fails its trial only."""

    def __init__(self, sweep, planned, observer, stop: threading.Event,
                 executor: Executor, datasets: dict, config_path: Path | None, env: dict, rung: int | None = None):
        self.sweep, self.planned, self.observer, self.stop, self.executor = sweep, planned, observer, stop, executor
        self.datasets, self.config_path, self.env, self.rung = datasets, config_path, env, rung
        self.members: dict[str, Member] = {}
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
            previous = resumable(self.sweep, trial, k)
            if previous is None:
                del trial["runs"][k:]  # an unfinished hold-out run is not resumed: it is trained again
            member = Member(trial, prefix, None)
            self.members[prefix] = member
            try:
                found = prepare(config, command="kfold" if isinstance(config.validation, KFold) else "train",
                                runs_dir=runs_dir, config_path=self.config_path, executor=self.executor,
                                stop=self.stop, observer=TrialObserver(self, trial, prefix), resume=previous,
                                data=self.datasets.get(dataset_key(config)), checked=True, env=self.env,
                                plots=False, test=False, **self._rung_args())
            except Interrupted:
                raise
            except KexpError as exc:
                self._fail(trial, str(exc))
                return
            if isinstance(found, Result):  # a run an earlier sweep finished
                member.outcome = summary(found.metrics, self.planned.objective)
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
    def _member(self, key: str) -> tuple[Member, str]:
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
    def _finish(self, member: Member) -> None:
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
        member.outcome = summary(result.metrics, self.planned.objective)
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

    def _recorded(self, member: Member, exc: BaseException) -> str:
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


def resumable(sweep, trial: dict, seed_index: int) -> Path | None:
    """The K-fold run folder of this trial and seed that an earlier, interrupted sweep left unfinished."""
    if seed_index >= len(trial["runs"]):
        return None
    folder = sweep.run.path / trial["runs"][seed_index]
    record = runs.read_run(folder) if folder.is_dir() else None
    if record is None or record.status == "completed" or not (folder / layout.FOLDS).exists():
        return folder if record is not None and record.status == "completed" else None
    return folder


def dataset_key(config: Config) -> str:
    return repr(config.dataset)
