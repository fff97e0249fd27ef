"""Train one split of one config: the unit of work.

`run_task(task, ...)` fits fresh preprocessing on the split's training rows, builds and trains a fresh
model seeded from (seed, repeat, fold) alone, and returns a `TaskResult`: plain data (metrics, the
per-epoch logs, the fitted preprocessing, the model as `.keras` bytes when asked). It writes nothing
shared: callbacks write into a private scratch folder whose files come back in the result, unless
the caller (the in-process executor, which runs in the driver) gives the split's own folder. Progress
goes out through `emit` as `Event`s. So a task gives the same result in this process, in a worker
process or on another machine.

The backend's start-up and input pipeline are kexp.backend's.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kexp import diagnostics, reuse
from kexp.backend import batches, steps_per_execution, use
from kexp.config import Config, validate_config
from kexp.data import take
from kexp.errors import ConfigError, Problems
from kexp.executor import Event, Task, TaskResult
from kexp.models import make_callbacks, metric_directions
from kexp.plugins import import_config_plugins
from kexp.preprocessing import MultiHot, Preprocessor, as_outputs, feature_shape, n_rows
from kexp.validation import Split

EVAL_BATCH = 1024
# The order in which Preprocessor applies its steps to a numeric input; each applies when the record's
# `settings` (or `statistics` for the fitted ones) has it. Integer sequences get multi_hot or pad_sequences.
PREPROCESSING_ORDER = ["impute", "one_hot", "float32", "scale", "channels_last", "flatten", "standardize"]

# --------------------------------------------------------------------------- the task
def training_seed(seed: int, split: Split) -> int:
    """The seed a split trains with (weights, shuffling): from the run's seed and the split alone."""
    return (seed + 1000 * split.repeat + split.fold) % 2**32


_data_cache: dict[tuple, Any] = {}


def task_data(task: Task):
    """The dataset of a task, loaded where the task runs (same data_dir/KEXP_DATA_DIR/cache rules as the
    driver); kept per process, so a worker loads it once for all its tasks."""
    from kexp.data import load_dataset

    key = (repr(sorted(task.config.get("dataset", {}).items())), task.config_dir)
    if key not in _data_cache:
        config = validate_config(task.config)
        use(config)
        _data_cache.clear()  # one dataset per process at a time
        _data_cache[key] = load_dataset(config.dataset, config_dir=Path(task.config_dir) if task.config_dir else None)
    return _data_cache[key]


def monitor_mode(config: Config) -> str:
    """validation.mode, or with `auto` the direction Keras' own metric object carries (losses: min)."""
    scheme = config.validation
    if scheme.mode != "auto":
        return scheme.mode
    return metric_directions(config).get(scheme.monitor.removeprefix("val_")) or diagnostics.metric_mode(scheme.monitor)


def _steps(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def input_shape(x) -> Any:
    """The model's input shape(s) for prepared features (lazy multi-hot inputs included)."""

    def dense(value):
        if isinstance(value, dict):
            return {k: dense(v) for k, v in value.items()}
        return np.zeros((1, *value.shape[1:]), dtype="float32") if isinstance(value, MultiHot) else value

    return feature_shape(dense(x))


def _model_bytes(model, scratch: Path) -> bytes:
    """The model as a `.keras` archive (written in the task's private scratch folder, then read)."""
    path = scratch / "model.keras"
    try:
        model.save(path)
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def _epoch_callback(task: Task, emit: Callable[[Event], None], should_stop: Callable[[], bool],
                    scratch: Path, monitor: str, mode: str):
    """Keras callback: every epoch's logs out as an event; with `keep_best`, the best epoch's model too."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.logs: list[dict] = [dict(logs) for logs in task.initial_logs]
            earlier = [v for logs in self.logs if (v := logs.get(monitor)) is not None and math.isfinite(v)]
            self.best = (min if mode == "min" else max)(earlier, default=math.inf if mode == "min" else -math.inf)

        def on_epoch_end(self, epoch, logs=None):
            if should_stop():
                raise KeyboardInterrupt
            logs = {k: float(v) for k, v in (logs or {}).items()}
            self.logs.append(logs)
            emit(Event("epoch", task.key, epoch=epoch + 1, logs=logs))
            value = logs.get(monitor)
            if task.keep_best and value is not None and math.isfinite(value):
                if value < self.best if mode == "min" else value > self.best:
                    self.best = value
                    emit(Event("best", task.key, epoch=epoch + 1, model=_model_bytes(self.model, scratch)))

    return EpochLog()


def run_task(task: Task, emit: Callable[[Event], None] = lambda event: None,
             should_stop: Callable[[], bool] = lambda: False, *, data=None, folder: Path | None = None) -> TaskResult:
    """Train one split (see the module docstring). `data`: the dataset when the caller has it loaded;
    `folder`: where callbacks' relative paths go when the caller owns the run folder (else a scratch
    folder, whose files come back in `TaskResult.files`)."""
    config = validate_config(task.config)
    use(config)  # the driver's backend (KERAS_BACKEND, which workers inherit), or the config's own
    import keras

    import_config_plugins(task.config, task.config_dir)  # the user's registered objects, in this process too
    data = data if data is not None else task_data(task)
    split = task.split
    seed = training_seed(config.seed, split)
    # each task starts from the same state (layer names too), whatever ran before; without Python's
    # garbage collection, which took 0.2 s a task (Python collects on its own)
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="kexp-task-"))
    try:
        pre = Preprocessor(config, data).fit(take(data.x_train, split.train_idx))
        x_tr = pre.transform(take(data.x_train, split.train_idx))
        y_tr = pre.labels(take(data.y_train, split.train_idx))
        if task.initial_model is None:
            model = _compiled_model(config, x_tr, len(split.train_idx))
        else:  # a checkpoint: its weights and its optimizer's state, trained on from where it stopped
            checkpoint = scratch / "checkpoint.keras"
            checkpoint.write_bytes(task.initial_model)
            model = keras.saving.load_model(checkpoint, safe_mode=True)
        y_tr = as_outputs(y_tr, model)
        batch = config.training.batch_size
        weights, class_weight = training_weights(config, data, split.train_idx)
        train_ds = batches(x_tr, y_tr, batch, shuffle=config.training.shuffle, seed=seed, repeat=True,
                                 weights=weights)
        val_ds = None
        if len(split.val_idx):
            x_va = pre.transform(take(data.x_train, split.val_idx))
            y_va = as_outputs(pre.labels(take(data.y_train, split.val_idx)), model)
            val_ds = batches(x_va, y_va, max(batch, EVAL_BATCH))
        monitor, mode = config.validation.monitor, monitor_mode(config)
        if val_ds is None:
            monitor = monitor.removeprefix("val_")
        files_dir = folder if folder is not None else scratch / "files"
        log = _epoch_callback(task, emit, should_stop, scratch, monitor, mode)
        problems = Problems()
        callbacks = [*make_callbacks(config, problems, folder=files_dir), keras.callbacks.TerminateOnNaN(), log]
        if problems.lines:  # checked in the driver; a worker without the driver's plugins lands here
            raise ConfigError(problems.lines)
        emit(Event("start", task.key, epochs=task.epochs))
        try:
            model.fit(train_ds, validation_data=val_ds, epochs=task.epochs, initial_epoch=len(task.initial_logs),
                      steps_per_epoch=_steps(len(split.train_idx), batch), callbacks=callbacks, verbose=0,
                      shuffle=False)  # the batches shuffle
        except BaseException:
            reuse.forget(model)  # a failed fit may leave state behind: the next task builds anew
            raise
        result = TaskResult(key=task.key, split=split, logs=log.logs,
                            metrics=_split_metrics(log.logs, monitor, mode, split, seed, task.epochs, started),
                            preprocessing=preprocessing_record(config, data, pre, split))
        if class_weight is not None:  # the weights this split trained with (balanced: from its own labels)
            result.preprocessing["class_weight"] = {str(k): v for k, v in class_weight.items()}
        if task.keep_model:
            result.model = _model_bytes(model, scratch)
            result.summary = model_summary(model)
            result.test = _test_scores(config, data, model, pre) if task.test else None
        if task.checkpoint:
            result.checkpoint = _model_bytes(model, scratch)
        if folder is None:
            result.files = _collect(files_dir)
        return result
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def class_weights(spec: str | dict, y: np.ndarray, num_classes: int | None,
                  class_names: list[str] | None) -> tuple[dict[int, float], list[str]]:
    """`training.class_weight` as {class id: weight} for training labels `y` (class ids), and the problems
    of a mapping (keys: class ids, or class names when the labels are named). `balanced` is scikit-learn's
    `compute_class_weight("balanced")` on `y`: n / (classes * count of the class)."""
    if spec == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        classes = np.unique(np.asarray(y, dtype=np.int64))
        return dict(zip(classes.tolist(), compute_class_weight("balanced", classes=classes, y=y).tolist())), []
    ids = list(range(num_classes or 0))
    allowed = ", ".join(map(str, ids)) + (f" (ids) or {', '.join(class_names)} (names)" if class_names else "")
    result: dict[int, float] = {}
    problems = []
    for key, weight in spec.items():
        if isinstance(key, str) and class_names and key in class_names:
            cid = class_names.index(key)
        elif isinstance(key, int) and key in ids or isinstance(key, str) and key.isdigit() and int(key) in ids:
            cid = int(key)  # an id; a config saved as JSON (a run's config, a task) has it as text
        else:
            from kexp.config import show
            from kexp.errors import close_matches

            names = [*map(str, ids), *(class_names or [])]
            problems.append(f"training.class_weight.{key}: unknown class{close_matches(str(key), names)}; "
                            f"got {show(key)}; allowed: {allowed}")
            continue
        if cid in result:
            problems.append(f"training.class_weight.{key}: class {cid} is given twice (by id and by name); keep one")
        result[cid] = float(weight)
    return result, problems


def training_weights(config: Config, data, rows: np.ndarray) -> tuple[np.ndarray | None, dict[int, float] | None]:
    """Each training row's weight in the loss, and the class weights used: the row's
    `dataset.sample_weight` times the `training.class_weight` of its class (Keras' definition of class
    weights: a row's sample weight is its class's weight; classes not named weigh 1). (None, None)
    without either. Keras' own `class_weight` refuses sample weights beside it, hence the product here."""
    weights = None if data.w_train is None else np.asarray(data.w_train, dtype=np.float32)[rows]
    spec = config.training.class_weight
    if spec is None:
        return weights, None
    y = np.asarray(data.y_train, dtype=np.int64)[rows]
    mapping, problems = class_weights(spec, y, data.num_classes, data.class_names)
    if problems:
        raise ConfigError(problems)
    table = np.ones(max([data.num_classes or 0, int(y.max(initial=0)) + 1, *(k + 1 for k in mapping)]),
                    dtype=np.float32)
    table[list(mapping)] = list(mapping.values())
    per_row = table[y]
    every = {c: mapping.get(c, 1.0) for c in range(len(table))}  # the classes not named too
    return (per_row if weights is None else weights * per_row), every


def _compiled_model(config: Config, x_train, n_train: int):
    spe = steps_per_execution(config.training.steps_per_execution, _steps(n_train, config.training.batch_size))
    return reuse.compiled_model(config, input_shape(x_train), spe)


def _split_metrics(logs: list[dict], monitor: str, mode: str, split: Split, seed: int, epochs: int,
                   started: float) -> dict:
    """A split's metrics (folds/<id>/metrics.json): last/best epoch scores, sizes, seed, time, why it stopped."""
    from kexp.scores import summarize

    result = summarize(logs, monitor, mode)
    result.update(id=split.id, repeat=split.repeat, fold=split.fold, n_train=len(split.train_idx),
                  n_val=len(split.val_idx), seed=seed, duration_s=round(time.perf_counter() - started, 3))
    nan_epoch = next((i + 1 for i, epoch_logs in enumerate(logs)
                      if not all(math.isfinite(v) for k, v in epoch_logs.items() if "loss" in k)), None)
    if nan_epoch is not None:
        result["stop_reason"] = f"loss became NaN or inf at epoch {nan_epoch}"
    elif len(logs) < epochs:
        result["stop_reason"] = "early stopping"
    return result


def _test_scores(config: Config, data, model, pre: Preprocessor) -> dict | None:
    if data.x_test is None or not n_rows(data.x_test):
        return None
    x_te, y_te = pre.transform(data.x_test), as_outputs(pre.labels(data.y_test), model)
    ds = batches(x_te, y_te, max(config.training.batch_size, EVAL_BATCH))
    return {k: float(v) for k, v in model.evaluate(ds, verbose=0, return_dict=True).items()}


def _collect(folder: Path) -> dict[str, bytes]:
    """Every file the callbacks wrote, by path relative to the split's folder."""
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def preprocessing_record(config: Config, data, pre: Preprocessor, split: Split) -> dict:
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


def model_summary(model, width: int = 100) -> str:
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
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(lines)) + "\n"
