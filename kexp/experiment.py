"""Run an experiment: data -> splits -> (fit preprocessing, build, train) per split -> aggregates ->
optional final retrain on all training data -> test -> baseline, diagnostics, plots -> run folder.

Hold-out is the one-split case of the same loop as K-fold. Every split gets a fresh model and
preprocessing fitted on its own training rows, seeded from (seed, repeat, fold) alone, so a split
gives the same result whether it runs here or in a worker process (`workers > 1`).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import platform
import re
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kexp import diagnostics, runs
from kexp.config import Config, KFold, validate_config
from kexp.datasets import Data, Ragged, load_dataset
from kexp.errors import (
    ConfigError,
    DataError,
    Interrupted,
    KexpError,
    Problems,
    RunError,
    TrainingFailed,
    close_matches,
)
from kexp.models import (
    build_model,
    check_loss_weights,
    check_names,
    check_output_activations,
    compile_model,
    make_callbacks,
    make_metrics,
    output_layers,
    with_keras_defaults,
)
from kexp.preprocessing import (
    MultiHot,
    Preprocessor,
    feature_shape,
    loss_encoding,
    n_rows,
    take,
    to_tf_dataset,
)
from kexp.validation import Split, make_splits, mean_curve

EVAL_BATCH = 1024
METRICS_FORMAT = 2  # metrics.json: 2 = `last` for the last epoch, the K-fold score at the mean curve's best epoch
# Set by the CLI's SIGINT/SIGTERM handler besides raising KeyboardInterrupt: should a library swallow
# that exception (it can land inside h5py while best.keras is saved), the next epoch end raises it again.
STOP = threading.Event()


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


# --------------------------------------------------------------------------- setup
def configure_threads(threads: int | None = None) -> None:
    """Import and start TensorFlow once, quietly (its C++ start-up chatter goes to /dev/null), with
    `threads` intra/inter-op threads when given (worker processes)."""
    if "tensorflow" in sys.modules and getattr(configure_threads, "done", False):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import logging
        import warnings

        import tensorflow as tf

        warnings.filterwarnings("ignore", module="keras")
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(threads)
            except RuntimeError:
                pass  # already started; keep what it has
        tf.constant(0)  # start the runtime now, while its chatter is silenced
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    configure_threads.done = True


def load_data(config: Config, config_dir: Path | None, source: str | None = None) -> Data:
    """The dataset; problems are DataErrors prefixed with the config file like config errors."""
    configure_threads()  # a download goes through Keras: start TensorFlow quietly first
    try:
        return load_dataset(config.dataset, config_dir=config_dir)
    except DataError as exc:
        if source is None:
            raise
        raise DataError([f"{source}: {line}" for line in exc.problems]) from None


def _monitor_mode(config: Config) -> str:
    scheme = config.validation
    return diagnostics.metric_mode(scheme.monitor) if scheme.mode == "auto" else scheme.mode


def _class_ids(y: Any) -> np.ndarray | None:
    y = next(iter(y.values())) if isinstance(y, dict) else y
    return np.asarray(y).reshape(len(y), -1)[:, 0] if y is not None else None


def _first_task(data: Data) -> str:
    return next(iter(data.task.values())) if isinstance(data.task, dict) else data.task


# --------------------------------------------------------------------------- checks
def check(config: Config, data: Data, source: str) -> None:
    """Everything that can be known before training: names, arguments, shapes, labels vs loss."""
    configure_threads()
    problems = Problems()
    task = _first_task(data)
    spec = config.preprocessing
    x_first = next(iter(data.x_train.values())) if isinstance(data.x_train, dict) else data.x_train
    if isinstance(x_first, Ragged) and spec.multi_hot is None and spec.pad_sequences is None:
        problems.add("preprocessing", f"{config.dataset.name} holds integer sequences; set "
                     "preprocessing.multi_hot: N (Dense models) or preprocessing.pad_sequences: {maxlen: N} "
                     "(Embedding models)")
    elif not isinstance(x_first, Ragged) and (spec.multi_hot or spec.pad_sequences):
        key = "multi_hot" if spec.multi_hot else "pad_sequences"
        problems.add(f"preprocessing.{key}", f"applies to integer sequences (imdb, reuters); "
                     f"{config.dataset.name} has numeric features; remove it")
    num_words = getattr(config.dataset, "num_words", None)
    if spec.multi_hot is not None and isinstance(x_first, Ragged):
        if num_words is None:
            problems.add("dataset.num_words",
                         f"must be set with preprocessing.multi_hot; e.g. num_words: {spec.multi_hot}")
        elif num_words > spec.multi_hot:
            problems.add("preprocessing.multi_hot", f"{spec.multi_hot} is narrower than dataset.num_words "
                         f"{num_words}; word ids would not fit; use multi_hot: {num_words}")
    if config.validation.stratify and task == "regression":
        problems.add("validation.stratify", "needs class labels; the data is a regression target; remove it")
    # every Keras name and argument, whatever else is wrong: all problems in one report
    check_names(config, problems)
    blocking = bool(problems.lines)  # the model can be built (shapes, labels) only without these
    n = n_rows(data.x_train)
    try:
        _splits(config, data, n)
    except ValueError as exc:
        problems.lines.append(str(exc))
    check_output_activations(config, problems)
    check_loss_weights(config, problems)
    _check_monitor(config, problems)
    if not blocking:
        sample = np.arange(min(n, 8))
        pre = Preprocessor(config, data).fit(take(data.x_train, sample))
        shape = feature_shape(_shape_source(pre.transform(take(data.x_train, sample))))
        model = build_model(config, shape, problems)
        if model is not None:
            _check_labels(config, data, model, pre, problems)
            compile_model(model, config, problems)
    if problems.lines:
        raise ConfigError([f"{source}: {line}" for line in problems.lines])


def check_without_data(config: Config, source: str) -> None:
    """What `kexp validate --no-data` checks beyond the schema: every Keras name and argument, the
    output layers against the loss, the monitored metric names."""
    configure_threads()
    problems = Problems()
    check_names(config, problems)
    check_output_activations(config, problems)
    check_loss_weights(config, problems)
    _check_monitor(config, problems)
    if problems.lines:
        raise ConfigError([f"{source}: {line}" for line in problems.lines])


def _shape_source(x):
    """Prepared features, with lazy multi-hot inputs replaced by one dense row (for shapes)."""
    if isinstance(x, dict):
        return {k: _shape_source(v) for k, v in x.items()}
    return np.zeros((1, *x.shape[1:]), dtype="float32") if isinstance(x, MultiHot) else x


def _check_labels(config: Config, data: Data, model, pre: Preprocessor, problems: Problems) -> None:
    outputs = list(model.output_names)
    shapes = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    encodings = pre.label_encodings if isinstance(pre.label_encodings, dict) else {outputs[0]: pre.label_encodings}
    tasks = data.task if isinstance(data.task, dict) else {outputs[0]: data.task}
    classes = data.num_classes if isinstance(data.num_classes, dict) else {outputs[0]: data.num_classes}
    if set(tasks) != set(outputs):
        problems.add("model.outputs", f"the model's outputs ({', '.join(outputs)}) must match the data's "
                     f"targets ({', '.join(tasks)})")
        return
    last_key = f"model.layers.{len(config.model.layers) - 1}"
    for out, tensor in zip(outputs, shapes):
        units = tensor.shape[-1]
        encoding, task, n_classes = encodings[out], tasks[out], classes[out]
        where = f" (output {out})" if len(outputs) > 1 else ""
        loss_spec = config.compile.loss.get(out, {}) if config.compile.per_output_loss else config.compile.loss
        loss_name = (loss_spec or {}).get("name", "")
        wanted = loss_encoding(loss_name)
        if wanted and wanted != encoding:
            fix = {"categorical": "categorical_crossentropy", "sparse": "sparse_categorical_crossentropy",
                   "binary": "binary_crossentropy"}.get(encoding, "a regression loss such as mse")
            problems.add("compile.loss", f"{loss_name} expects {wanted} labels but preprocessing.labels is "
                         f"{encoding}{where}; set preprocessing.labels: {wanted} or use {fix}")
            continue
        if task == "regression" and encoding != "raw":
            problems.add("preprocessing.labels", f"{encoding} labels need classes; {config.dataset.name} is a "
                         f"regression target{where}; use labels: raw and a regression loss (mse, mae)")
        elif task != "regression" and encoding == "binary" and n_classes and n_classes > 2:
            problems.add("preprocessing.labels", f"binary labels for {n_classes} classes{where}; use "
                         "sparse (sparse_categorical_crossentropy) or categorical")
        elif encoding == "binary" and units != 1:
            problems.add(f"{last_key}.units",
                         f"binary labels need 1 output unit (sigmoid); the model has {units}{where}")
        elif encoding in ("categorical", "sparse") and n_classes and units != n_classes:
            problems.add(f"{last_key}.units", f"the last layer has {units} units but the data has {n_classes} "
                         f"classes{where}; use units: {n_classes} with activation: softmax")


def _check_monitor(config: Config, problems: Problems) -> None:
    """validation.monitor and every callback's `monitor` against the names Keras will log. Skipped
    when a metric itself is wrong (that problem is reported; a monitor complaint would be noise)."""
    if any(line.startswith("compile.metrics") for line in problems.lines):
        return
    names = _monitorable(config)
    allowed = [f"val_{n}" for n in names] + names
    monitors = [("validation.monitor", config.validation.monitor)]
    monitors += [(f"training.callbacks.{i}.monitor", spec["monitor"])
                 for i, spec in enumerate(config.training.callbacks) if isinstance(spec.get("monitor"), str)]
    for key, monitor in monitors:
        if monitor not in allowed:
            problems.add(key, f"not a logged metric{close_matches(monitor, allowed)}; "
                         f"got {monitor!r}; allowed: {', '.join(allowed)}")


def _monitorable(config: Config) -> list[str]:
    """The training-log names of a config's loss and metrics (without `val_`): `loss`, `mae`, `auc`;
    with several outputs also `price_loss`, `price_mae`, ..."""
    outputs = list(output_layers(config))
    metrics = make_metrics(config, outputs, Problems())
    per_output = metrics if isinstance(metrics, dict) else {None: metrics or []}
    names = ["loss"]
    for out, items in per_output.items():
        prefix = f"{out}_" if out is not None and len(outputs) > 1 else ""
        names += [f"{prefix}{m if isinstance(m, str) else m.name}" for m in items if m is not None]
    if len(outputs) > 1:
        names += [f"{out}_loss" for out in outputs]
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- splits
def _splits(config: Config, data: Data, n: int) -> list[Split]:
    labels = _class_ids(data.y_train) if _first_task(data) != "regression" else None
    try:
        return make_splits(n, config.validation, config.split_seed, labels)
    except ValueError as exc:
        text = str(exc)
        if not text.startswith("validation."):
            text = f"validation: {text}"
        raise ValueError(text) from None


def split_seed(config: Config, split: Split) -> int:
    return (config.seed + 1000 * split.repeat + split.fold) % 2**32


# --------------------------------------------------------------------------- one split
class _EpochLog:
    """Keras callback factory: history.csv per epoch, observer events, best weights (atomic)."""

    @staticmethod
    def make(split_id: str, history: runs.HistoryWriter, observer: Observer, best_path: Path | None,
             monitor: str, mode: str):
        import keras

        class EpochLog(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.best = math.inf if mode == "min" else -math.inf
                self.logs: list[dict] = []

            def on_epoch_end(self, epoch, logs=None):
                if STOP.is_set():
                    raise KeyboardInterrupt
                logs = {k: float(v) for k, v in (logs or {}).items()}
                self.logs.append(logs)
                history.append(epoch + 1, logs)
                observer.epoch_end(split_id, epoch + 1, logs)
                value = logs.get(monitor)
                if best_path is not None and value is not None and math.isfinite(value):
                    better = value < self.best if mode == "min" else value > self.best
                    if better:
                        self.best = value
                        tmp = best_path.with_name(f".{best_path.stem}.tmp.keras")
                        try:
                            self.model.save(tmp)
                            os.replace(tmp, best_path)
                        except BaseException:  # Ctrl-C or a full disk mid-save: keep the last good copy only
                            tmp.unlink(missing_ok=True)
                            raise

        return EpochLog()


def _steps(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def fit_split(config: Config, data: Data, split: Split, run: runs.Run, observer: Observer,
              history_name: str, best_path: Path | None = None, epochs: int | None = None) -> dict:
    """Train a fresh model on one split; return its result (and keep the model on the dict)."""
    import keras

    seed = split_seed(config, split)
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    pre = Preprocessor(config, data).fit(take(data.x_train, split.train_idx))
    x_tr, y_tr = pre.transform(take(data.x_train, split.train_idx)), pre.labels(take(data.y_train, split.train_idx))
    epochs = epochs or config.training.epochs
    batch = config.training.batch_size
    n_train = len(split.train_idx)
    steps = _steps(n_train, batch)
    spe = steps if config.training.steps_per_execution == "epoch" else config.training.steps_per_execution
    problems = Problems()
    model = build_model(config, feature_shape(_shape_source(x_tr)), problems)
    if model is None or not compile_model(model, config, problems, steps_per_execution=spe):
        raise ConfigError(problems.lines)
    train_ds = to_tf_dataset(x_tr, y_tr, batch, shuffle=config.training.shuffle, seed=seed, repeat=True)
    val_ds = None
    if len(split.val_idx):
        x_va = pre.transform(take(data.x_train, split.val_idx))
        y_va = pre.labels(take(data.y_train, split.val_idx))
        val_ds = to_tf_dataset(x_va, y_va, max(batch, EVAL_BATCH))
    monitor, mode = config.validation.monitor, _monitor_mode(config)
    if val_ds is None:
        monitor = monitor.removeprefix("val_")
    history = run.history(history_name)
    log = _EpochLog.make(split.id, history, observer, best_path, monitor, mode)
    callbacks = [*make_callbacks(config, problems, folder=_split_folder(config, run, split)),
                 keras.callbacks.TerminateOnNaN(), log]
    observer.split_start(split.id, epochs)
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps,
                  callbacks=callbacks, verbose=0, shuffle=False)  # tf.data shuffles
    finally:
        history.close()
    result = summarize(log.logs, monitor, mode)
    result.update(id=split.id, repeat=split.repeat, fold=split.fold, n_train=n_train,
                  n_val=len(split.val_idx), seed=seed, duration_s=round(time.perf_counter() - started, 3),
                  preprocessing=_preprocessing_record(config, data, pre, split))
    nan_epoch = next((i + 1 for i, logs in enumerate(log.logs)
                      if not all(math.isfinite(v) for k, v in logs.items() if "loss" in k)), None)
    if nan_epoch is not None:
        result["stop_reason"] = f"loss became NaN or inf at epoch {nan_epoch}"
    elif len(log.logs) < epochs:
        result["stop_reason"] = "early stopping"
    result["_model"], result["_pre"] = model, pre
    return result


def _split_folder(config: Config, run: runs.Run, split: Split) -> Path:
    """Where a split's own files go, relative callback paths included: the run folder (hold-out),
    folds/<id>/ (K-fold) or final/ (the retrained final model)."""
    if split.id == "final":
        return run.path / "final"
    if isinstance(config.validation, KFold):
        return run.path / "folds" / split.id
    return run.path


# The order in which Preprocessor applies its steps to a numeric input; each applies when the record's
# `settings` (or `statistics` for the fitted ones) has it. Integer sequences get multi_hot or pad_sequences.
PREPROCESSING_ORDER = ["impute", "one_hot", "float32", "scale", "channels_last", "flatten", "standardize"]
PREPROCESSING_FORMAT = 1


def _preprocessing_record(config: Config, data: Data, pre: Preprocessor, split: Split) -> dict:
    """Everything needed to prepare new data for a model trained on `split` (preprocessing.json)."""
    encodings, names = pre.label_encodings, getattr(data, "class_names", None)

    def labels(task, encoding, num_classes, class_names):
        return {"task": task, "encoding": encoding, "num_classes": num_classes, "class_names": class_names}

    def per(value, out):
        return value.get(out) if isinstance(value, dict) else None

    if isinstance(data.task, dict):
        label_record = {out: labels(task, per(encodings, out), per(data.num_classes, out), per(names, out))
                        for out, task in data.task.items()}
    else:
        label_record = labels(data.task, encodings, data.num_classes, names)
    x = data.x_train
    return {
        "fitted_on": {"split": split.id, "n_samples": len(split.train_idx)},
        "inputs": list(x) if isinstance(x, dict) else ["x"],
        "feature_names": getattr(data, "feature_names", None),
        "order": PREPROCESSING_ORDER,
        "settings": config.to_dict().get("preprocessing", {}),
        "statistics": pre.fitted(),
        "labels": label_record,
    }


def _preprocessing_file(record: dict, models: list[str]) -> dict:
    return {"format": PREPROCESSING_FORMAT, "models": models, **record}


def summarize(logs: list[dict], monitor: str, mode: str) -> dict:
    """Last-epoch and best-epoch metrics of one history (validation names without `val_`; values
    that are not metrics, such as `learning_rate`, left out)."""
    if not logs:
        return {"epochs_run": 0, "best_epoch": None, "validation": {}, "train": {}}
    values = [logs_i.get(monitor, math.nan) for logs_i in logs]
    best = diagnostics.best_epoch(values, mode) if any(math.isfinite(v) for v in values) else len(logs)
    part = diagnostics.epoch_metrics
    return {
        "epochs_run": len(logs),
        "best_epoch": best,
        "validation": {"last": part(logs[-1], True), "best": part(logs[best - 1], True)},
        "train": {"last": part(logs[-1], False), "best": part(logs[best - 1], False)},
    }


# --------------------------------------------------------------------------- the run
def environment(config: Config, argv: list[str], config_path: Path | None) -> dict:
    import keras
    import tensorflow as tf

    import kexp

    env = {
        "kexp": kexp.__version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "seed": config.seed,
        "argv": argv,
        "cwd": os.getcwd(),
        "config_file": str(config_path.resolve()) if config_path else None,
        "git": _git_state(),
    }
    return env


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
              config_path: Path | None) -> runs.Run:
    run = runs.create_run(runs_dir, config.name, command)
    try:
        run.write_config(config.to_dict(), with_keras_defaults(config.to_dict()))
        run.write_json("environment.json", environment(config, argv, config_path))
    except OSError as exc:  # e.g. the disk filled up right after the folder was made
        _final_status(run, "failed", error=f"cannot write the run folder: {exc.strerror or exc}")
        raise RunError(f"{run.path}: cannot write the run folder: {exc.strerror or exc}") from None
    return run


def _recorded_splits(run: runs.Run, n: int) -> list[Split]:
    """The folds a K-fold run folder recorded, checked first: folds.json is a file anyone can edit, and
    a fold's id becomes a folder name (`../..` would write outside the run folder)."""
    where = run.path / "folds.json"
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


def _final_status(run: runs.Run, status: str, **extra) -> None:
    """Best effort: when not even status.json can be written (a full disk), the error that got us
    here is still the one reported, and the folder reads back as incomplete."""
    try:
        run.set_status(status, **extra)
    except OSError:
        pass


def execute(config: Config, *, command: str, runs_dir: Path, config_path: Path | None = None,
            argv: list[str] | None = None, observer: Observer | None = None, workers: int = 1,
            resume: Path | None = None) -> Result:
    """Check, then train and evaluate, writing the run folder. Raises KexpError subclasses."""
    observer = observer or Observer()
    config_dir = config_path.parent if config_path else None
    started = time.perf_counter()
    source = str(config_path) if config_path else "<config>"
    data = load_data(config, config_dir, source)
    check(config, data, source)
    data_s = time.perf_counter() - started
    splits = _splits(config, data, n_rows(data.x_train))
    if resume is not None:
        run = runs.open_run(resume)
        splits = _recorded_splits(run, n_rows(data.x_train))
        record = runs.read_run(run.path)
        if record.status == "completed":  # its model.keras and metrics.json are final: touch nothing
            return Result(run.path, record.metrics or {}, "completed", already_complete=True)
        if record.status == "running":
            raise RunError(f"{run.path}: is still running (pid {run.status.get('pid')} on "
                           f"{run.status.get('host')}); resume it once that process has stopped")
        run.status.pop("ended", None)
        run.status.pop("error", None)
        run.set_status("running", pid=os.getpid(), resumed=runs.utc_now())
    else:
        run = start_run(config, command=command, runs_dir=runs_dir, argv=argv or [], config_path=config_path)
        if isinstance(config.validation, KFold):
            run.write_json("folds.json", {"splits": [s.to_dict() for s in splits]})
    observer.start(run.path, [s.id for s in splits], config.training.epochs)
    try:
        metrics = _train_all(config, data, splits, run, observer, workers, config_dir)
        metrics["durations"]["data_s"] = round(data_s, 3)
        metrics["durations"]["total_s"] = round(time.perf_counter() - started, 3)
        run.write_json("metrics.json", metrics)
        _plots(run)
        if metrics.get("stop_reason", "") and "NaN" in metrics["stop_reason"]:
            run.set_status("failed", error=metrics["stop_reason"])
            raise TrainingFailed(f"{run.path}: {metrics['stop_reason']}; the metrics up to then are kept")
        run.set_status("completed")
        return Result(run.path, metrics, "completed")
    except KeyboardInterrupt:
        _final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
        raise Interrupted(f"interrupted; what was done is kept in {run.path}") from None
    except TrainingFailed:
        raise
    except KexpError as exc:
        _final_status(run, "failed", error=str(exc))
        raise
    except Exception as exc:
        if STOP.is_set():  # Ctrl-C landed in a library that turned it into its own error (zipfile, h5py)
            _final_status(run, "interrupted", error="interrupted (SIGINT/SIGTERM)")
            raise Interrupted(f"interrupted; what was done is kept in {run.path}") from None
        _final_status(run, "failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        raise RunError(f"training failed: {type(exc).__name__}: {exc}; see {run.path}/status.json") from exc


def _plots(run: runs.Run) -> None:
    try:
        from kexp import plots

        plots.learning_curves(run.path)
    except Exception:  # plotting never fails a run
        pass


def _train_all(config: Config, data: Data, splits: list[Split], run: runs.Run, observer: Observer,
               workers: int, config_dir: Path | None) -> dict:
    monitor, mode = config.validation.monitor, _monitor_mode(config)
    is_kfold = isinstance(config.validation, KFold)
    train_started = time.perf_counter()
    if is_kfold:
        results = _run_folds(config, data, splits, run, observer, workers, config_dir)
        model = pre = record = None  # record: the preprocessing of `model`, for preprocessing.json
    else:
        result = fit_split(config, data, splits[0], run, observer, "history.csv",
                           best_path=run.path / "best.keras")
        model, pre = result.pop("_model"), result.pop("_pre")
        results = [result]
        record = result.pop("preprocessing")
    train_s = time.perf_counter() - train_started

    outputs = _outputs(config, data, results)
    metrics: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "command": run.command,
        "dataset": config.dataset.name,
        "scheme": config.validation.scheme,
        "monitor": monitor,
        "mode": mode,
        "main_metric": next(iter(outputs.values()))["main_metric"],
        "outputs": outputs,
    }
    stop = next((r.get("stop_reason") for r in results if r.get("stop_reason")), None)
    metrics["stop_reason"] = stop
    if is_kfold:
        metrics.update(_aggregate(config, results, mode))
    else:
        r = results[0]
        metrics.update({k: r[k] for k in ("epochs_run", "best_epoch", "validation", "train")})
    metrics["durations"] = {"train_s": round(train_s, 3)}

    # the final model: retrain on all training data, or keep the hold-out model
    final_spec = config.validation.final
    if final_spec is not None and not (stop and "NaN" in stop):
        epochs = metrics["best_epoch"] if final_spec.epochs == "best" else final_spec.epochs
        epochs = int(epochs or config.training.epochs)
        observer.final_start(epochs)
        final_started = time.perf_counter()
        everything = np.arange(n_rows(data.x_train))
        whole = Split("final", 0, 0, everything, np.arange(0))
        if record is not None and (run.path / "best.keras").exists():  # the hold-out model's own
            run.write_json("best_preprocessing.json", _preprocessing_file(record, ["best.keras"]))
        result = fit_split(config, data, whole, run, observer, "final_history.csv", epochs=epochs)
        model, pre, record = result.pop("_model"), result.pop("_pre"), result.pop("preprocessing")
        metrics["final_model"] = {"epochs": epochs, "n_train": len(everything),
                                  "train": result["train"]["last"]}
        metrics["durations"]["final_s"] = round(time.perf_counter() - final_started, 3)
    else:
        metrics["final_model"] = None

    metrics["test"] = None
    if model is not None:
        if data.x_test is not None and n_rows(data.x_test):
            x_te, y_te = pre.transform(data.x_test), pre.labels(data.y_test)
            ds = to_tf_dataset(x_te, y_te, max(config.training.batch_size, EVAL_BATCH))
            metrics["test"] = {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}
        model.save(run.file("model.keras"))
        also = ["best.keras"] if record["fitted_on"]["split"] != "final" and (run.path / "best.keras").exists() else []
        run.write_json("preprocessing.json", _preprocessing_file(record, ["model.keras", *also]))
        run.write_text("summary.txt", _summary(model))
    baselines = _baselines(data, splits, metrics)
    metrics["baseline"] = next(iter(baselines.values()), None)
    metrics["baselines"] = baselines
    metrics["diagnostics"] = _diagnostics(run, results, metrics, is_kfold)
    return metrics


def _output_names(config: Config, data: Data) -> list[str]:
    """The model's outputs in order: `model.outputs`, else the data's targets, else the last layer."""
    if isinstance(data.task, dict):
        order = [o for o in config.model.outputs or [] if o in data.task]
        return order + [o for o in data.task if o not in order]
    if config.model.outputs:
        return list(config.model.outputs[:1])
    last = config.model.layers[-1] if config.model.layers else {}
    return [last.get("name") or f"layer_{len(config.model.layers) - 1}"]


def _metric_log_names(spec: dict) -> list[str]:
    """The names Keras may log a configured metric under, before any output prefix: the name as
    written (`mae`, `acc`) or, for a class, its snake-case name (`AUC` -> `auc`)."""
    name = str(spec.get("name", ""))
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)).lower()
    return list(dict.fromkeys(n for n in (name, snake) if n))


def _main_metric(config: Config, output: str, prefix: str, logged: set[str]) -> str:
    """An output's main metric as Keras logs it (without `val_`): its first configured metric, else
    its loss (`loss` for a single output, `price_loss` for output price of several)."""
    spec = config.compile.metrics
    items = (spec.get(output) if isinstance(spec, dict) else spec) or []
    for item in items:
        for name in _metric_log_names(item):
            if not logged or prefix + name in logged:
                return prefix + name
    if items:  # a metric logged under a name of its own: the first such name of this output
        found = sorted(k for k in logged if k.startswith(prefix) and not k.endswith("loss"))
        if found:
            return found[0]
    return f"{prefix}loss"


def _outputs(config: Config, data: Data, results: list[dict]) -> dict[str, dict]:
    """Every output's main metric and task, in the model's output order (format.md: outputs)."""
    names = _output_names(config, data)
    logged: set[str] = set()
    for r in results[:1]:
        for part in ("validation", "train"):
            logged.update(_upgrade_parts(r.get(part) or {}).get("last") or {})
    tasks = data.task if isinstance(data.task, dict) else {names[0]: data.task}
    return {out: {"main_metric": _main_metric(config, out, f"{out}_" if len(names) > 1 else "", logged),
                  "task": tasks.get(out)} for out in names}


def _upgrade_parts(part: dict) -> dict:
    """A fold's validation/train dict in format 2: format 1 called the last epoch `final`."""
    if "final" in part and "last" not in part:
        part = {("last" if k == "final" else k): v for k, v in part.items()}
    return part


def _summary(model, width: int = 100) -> str:
    """Keras' model summary at a fixed width: Keras sizes its table by the terminal, which cut
    columns off with --quiet, in a pipe or in a narrow window (COLUMNS)."""
    lines: list[str] = []
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width + 20)  # the width rich gives the console it prints the table on
    try:
        model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=width)
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(lines)) + "\n"


def _aggregate(config: Config, results: list[dict], mode: str) -> dict:
    """The K-fold aggregates (format.md). The score is the mean over folds at the best epoch of the
    averaged validation curve (smoothed when smoothing is on), with the std across folds at that same
    epoch: the epoch the final model uses, chosen once for all folds. Each fold's own best epoch is
    a selection on that fold's validation data, so the mean of those is optimistic; it stays in
    `folds` as per-fold detail only."""
    folds = []
    for r in sorted(results, key=lambda r: (r["repeat"], r["fold"])):
        fold = {k: r[k] for k in ("id", "repeat", "fold", "n_train", "n_val", "seed", "epochs_run",
                                  "best_epoch", "validation", "train", "duration_s") if k in r}
        for part in ("validation", "train"):  # folds finished before an upgrade (resume)
            if part in fold:
                fold[part] = _upgrade_parts(fold[part])
        folds.append(fold)
    out: dict[str, Any] = {
        "folds": folds,
        "preprocessing": "fitted on each fold's training part only: folds/<id>/preprocessing.json",
    }
    curves = [r["_curve"] for r in results]
    mean, std = mean_curve(curves)
    smoothing = config.validation.smoothing
    curve: dict[str, Any] = {"metric": config.validation.monitor, "mean": mean.tolist(), "std": std.tolist(),
                             "smoothed": None}
    finite = bool(np.isfinite(mean).any())
    best = diagnostics.best_epoch(mean.tolist(), mode) if finite else None
    if smoothing is not None and finite:
        skip = smoothing.skip if len(mean) > smoothing.skip else 0
        smoothed = diagnostics.ema(mean[skip:].tolist(), smoothing.factor)
        curve.update(smoothed=smoothed, skip=skip, factor=smoothing.factor)
        best = diagnostics.best_epoch(smoothed, mode) + skip
    curve["best_epoch"] = best
    histories = [r["_curves"] for r in results]
    validation: dict[str, Any] = {"best": {}, "best_std": {}}
    if best is not None:
        validation["best"], validation["best_std"] = diagnostics.at_epoch(histories, best)
    validation["last"], validation["last_std"] = diagnostics.aggregate(
        [f.get("validation", {}).get("last", {}) for f in folds])
    validation["best_epoch_source"] = "mean_curve"
    out["validation"] = validation
    train_last, _ = diagnostics.aggregate([f.get("train", {}).get("last", {}) for f in folds])
    out["train"] = {"last": train_last,
                    "best": diagnostics.at_epoch(histories, best, validation=False)[0] if best else {}}
    out["epochs_run"] = max(f["epochs_run"] for f in folds)
    out["curve"] = curve
    out["best_epoch"] = best
    out["curves"] = {key: mean_curve([r["_curves"][key] for r in results])[0].tolist()
                     for key in results[0]["_curves"]}
    return out


def _baselines(data: Data, splits: list[Split], metrics: dict) -> dict[str, dict]:
    """The common-sense baseline of every output (format.md: baselines), in output order."""
    outputs = metrics.get("outputs") or {}
    several = len(outputs) > 1
    result = {}
    for out, info in outputs.items():
        y, y_test = (ys.get(out) if isinstance(ys, dict) else ys for ys in (data.y_train, data.y_test))
        baseline = _baseline(info.get("task"), y, y_test, splits, metrics, info["main_metric"],
                             f"{out}_" if several else "")
        if several and "error" not in baseline:
            baseline = {"output": out, **baseline}
        result[out] = baseline
    return result


def _model_key(task: str, main: str, prefix: str, logged: dict) -> tuple[str | None, str]:
    """The logged metric the baseline is compared with, and the baseline metric it measures: the main
    metric when it is accuracy/mae/mse, else another such metric of the same output."""
    metric = diagnostics.comparable_metric(task, main.removeprefix(prefix))
    if metric is not None:
        return main, metric
    for key in logged:
        name = key.removeprefix(prefix) if prefix and key.startswith(prefix) else (None if prefix else key)
        metric = diagnostics.comparable_metric(task, name) if name else None
        if metric is not None:
            return key, metric
    return None, "accuracy" if task != "regression" else "mae"


def _baseline(task: str, y: Any, y_test: Any, splits: list[Split], metrics: dict, main: str,
              prefix: str) -> dict:
    validation = metrics.get("validation", {})
    scores = validation.get("best") if metrics.get("best_epoch") else validation.get("last")
    scores = scores or {}
    model_key, metric = _model_key(task, main, prefix, scores)
    model_value = scores.get(model_key) if model_key else None
    try:
        y = np.asarray(y)
        per_split = [diagnostics.baseline(task, y[s.train_idx], y[s.val_idx], model_value=model_value,
                                          metric=metric) for s in splits]
        if y_test is not None and len(y_test):  # fitted on the rows the tested model was trained on
            fitted_on = np.arange(len(y)) if metrics.get("final_model") else splits[0].train_idx
            per_split[0]["test"] = diagnostics.baseline(task, y[fitted_on], y_test, metric=metric)["validation"]
    except Exception as exc:  # a baseline never fails a run
        return {"error": f"{type(exc).__name__}: {exc}"}
    result = dict(per_split[0])
    if len(per_split) > 1:
        values = [b["value"] for b in per_split if b.get("value") is not None]
        result["value"] = float(np.mean(values)) if values else None
        result["validation"] = diagnostics.aggregate([b["validation"] for b in per_split])[0]
        if model_value is not None and result["value"] is not None:
            sign = 1 if metric == "accuracy" else -1
            result["margin"] = sign * (model_value - result["value"])
            result["beats"] = result["margin"] > 0
    if metrics.get("test") and result.get("test") and model_key:
        result["test_model"] = metrics["test"].get(model_key)
    return result


def _diagnostics(run: runs.Run, results: list[dict], metrics: dict, is_kfold: bool) -> dict:
    if is_kfold:
        curves = metrics.get("curves", {})
        train_loss, val_loss = curves.get("loss", []), curves.get("val_loss", [])
    else:
        history = runs.read_history(run.path / "history.csv")
        train_loss, val_loss = history.get("loss", []), history.get("val_loss", [])
    onset = diagnostics.overfit_onset(train_loss, val_loss) if val_loss else None
    return {
        "best_epoch": metrics.get("best_epoch"),
        "overfit_epoch": onset,
        "sentence": diagnostics.summary_sentence(train_loss, val_loss, onset, metrics.get("best_epoch")),
    }


# --------------------------------------------------------------------------- K-fold
def _fold_done(run: runs.Run, split: Split) -> dict | None:
    path = run.path / "folds" / split.id / "metrics.json"
    try:
        return runs.read_json(path)
    except (OSError, ValueError):
        return None


def _fold_result(config: Config, data: Data, split: Split, run: runs.Run, observer: Observer) -> dict:
    result = fit_split(config, data, split, run, observer, f"folds/{split.id}/history.csv")
    result.pop("_model"), result.pop("_pre")
    run.write_json(f"folds/{split.id}/preprocessing.json", _preprocessing_file(result.pop("preprocessing"), []))
    run.write_json(f"folds/{split.id}/metrics.json", result)
    observer.split_end(split.id, result)
    return result


def _with_curves(config: Config, run: runs.Run, result: dict) -> dict:
    history = runs.read_history(run.path / "folds" / result["id"] / "history.csv")
    history.pop("epoch", None)
    result["_curves"] = history
    result["_curve"] = history.get(config.validation.monitor, [])
    return result


def _run_folds(config: Config, data: Data, splits: list[Split], run: runs.Run, observer: Observer,
               workers: int, config_dir: Path | None) -> list[dict]:
    done = {s.id: r for s in splits if (r := _fold_done(run, s)) is not None}
    for split_id in done:
        observer.note(f"fold {split_id} already finished; kept")
    todo = [s for s in splits if s.id not in done]
    if workers <= 1 or len(todo) <= 1:
        for split in todo:
            done[split.id] = _fold_result(config, data, split, run, observer)
    else:
        _run_parallel(config, todo, run, observer, min(workers, len(todo)), config_dir)
        for split in todo:
            result = _fold_done(run, split)
            if result is None:
                raise RunError(f"fold {split.id} did not finish; see {run.path}/status.json")
            done[split.id] = result
    return [_with_curves(config, run, done[s.id]) for s in splits]


class _QueueObserver(Observer):
    def __init__(self, queue):
        self.queue = queue

    def split_start(self, split_id, epochs):
        self.queue.put(("split_start", split_id, epochs))

    def epoch_end(self, split_id, epoch, logs):
        self.queue.put(("epoch_end", split_id, epoch, logs))

    def split_end(self, split_id, result):
        self.queue.put(("split_end", split_id, {k: v for k, v in result.items() if not k.startswith("_")}))


def _worker(config_dict: dict, config_dir: str | None, run_path: str, command: str, split_dicts: list[dict],
            threads: int, queue) -> None:
    """A worker process: trains the folds it is given, writing each fold's files."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops workers
    configure_threads(threads)
    try:
        config = validate_config(config_dict)
        data = load_data(config, Path(config_dir) if config_dir else None)
        run = runs.Run(path=Path(run_path), command=command)
        observer = _QueueObserver(queue)
        for split_dict in split_dicts:
            _fold_result(config, data, Split.from_dict(split_dict), run, observer)
        queue.put(("done", None))
    except BaseException as exc:  # report, never hang the parent
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def _run_parallel(config: Config, todo: list[Split], run: runs.Run, observer: Observer, workers: int,
                  config_dir: Path | None) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // workers)
    shares = [todo[i::workers] for i in range(workers)]
    procs = [ctx.Process(target=_worker, daemon=True,
                         args=(config.to_dict(), str(config_dir) if config_dir else None, str(run.path),
                               run.command, [s.to_dict() for s in share], threads, queue))
             for share in shares if share]
    for proc in procs:
        proc.start()
    running, errors = len(procs), []
    try:
        while running:
            try:
                event = queue.get(timeout=1.0)
            except Exception:
                if not any(p.is_alive() for p in procs):
                    break
                continue
            kind = event[0]
            if kind == "epoch_end":
                observer.epoch_end(*event[1:])
            elif kind == "split_start":
                observer.split_start(*event[1:])
            elif kind == "split_end":
                observer.split_end(*event[1:])
            elif kind in ("done", "error"):
                running -= 1
                if kind == "error":
                    errors.append(event[1])
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join(timeout=10)
    if errors:
        raise RunError(f"a worker failed: {errors[0]}")
