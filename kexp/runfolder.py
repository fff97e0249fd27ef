"""The driver's side of a run folder: making it (config, environment), reopening it to resume, and
writing it from the tasks' events and results (`Writer`), so that a crash at any moment leaves a
folder that reads back. Paths from kexp.layout; file I/O through kexp.runs. Only the driver (the
process that owns the run folder) uses this module; tasks never write.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from kexp import layout, runs
from kexp.config import Config
from kexp.errors import RunError
from kexp.executor import Event, Task, TaskResult
from kexp.keras_objects import with_keras_defaults
from kexp.validation import Split

if TYPE_CHECKING:
    from kexp.experiment import Observer

PREPROCESSING_FORMAT = 1  # preprocessing.json


def environment(config: Config, argv: list[str], config_path: Path | None) -> dict:
    import kexp
    from kexp.backend import versions

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
        final_status(run, "failed", error=f"cannot write the run folder: {exc.strerror or exc}")
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


def reopen(path: Path, splits: list[Split], kfold: bool, extend: bool) -> tuple[runs.Run, list[Split], runs.RunRecord]:
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


def final_status(run: runs.Run, status: str, **extra) -> None:
    """Best effort: when not even status.json can be written (a full disk), the error that got us
    here is still the one reported, and the folder reads back as incomplete."""
    try:
        run.set_status(status, **extra)
    except OSError:
        pass


def preprocessing_file(record: dict, models: list[str]) -> dict:
    return {"format": PREPROCESSING_FORMAT, "models": models, **record}


class Writer:
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
            self.run.write_json(f"{folder}/{layout.PREPROCESSING}", preprocessing_file(result.preprocessing, []))
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
