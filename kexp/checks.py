"""Everything that can be known before training, reported all at once as one ConfigError: every Keras
name and argument, the preprocessing against the data, the model's shapes against the labels and
the loss, the monitored metric names, the validation splits."""

from __future__ import annotations

import numpy as np

from kexp.config import Config
from kexp.data import Ragged, take
from kexp.errors import ConfigError, Problems, close_matches
from kexp.models import (
    build_model,
    check_loss_weights,
    check_names,
    check_output_activations,
    compile_model,
    metric_directions,
)
from kexp.preprocessing import Preprocessor, loss_encoding, n_rows
from kexp.training import input_shape, start_backend
from kexp.validation import splits_for


def check(config: Config, data, source: str) -> None:
    """Everything that can be known before training: names, arguments, shapes, labels vs loss."""
    start_backend()
    problems = Problems()
    task = next(iter(data.task.values())) if isinstance(data.task, dict) else data.task
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
        splits_for(config, data)
    except ValueError as exc:
        problems.lines.append(str(exc))
    check_output_activations(config, problems)
    check_loss_weights(config, problems)
    _check_monitor(config, problems)
    if not blocking:
        sample = np.arange(min(n, 8))
        pre = Preprocessor(config, data).fit(take(data.x_train, sample))
        shape = input_shape(pre.transform(take(data.x_train, sample)))
        model = build_model(config, shape, problems)
        if model is not None:
            _check_labels(config, data, model, pre, problems)
            compile_model(model, config, problems)
    if problems.lines:
        raise ConfigError([f"{source}: {line}" for line in problems.lines])


def check_without_data(config: Config, source: str) -> None:
    """What `kexp validate --no-data` checks beyond the schema: every Keras name and argument, the
    output layers against the loss, the monitored metric names."""
    start_backend()
    problems = Problems()
    check_names(config, problems)
    check_output_activations(config, problems)
    check_loss_weights(config, problems)
    _check_monitor(config, problems)
    if problems.lines:
        raise ConfigError([f"{source}: {line}" for line in problems.lines])


def _check_labels(config: Config, data, model, pre: Preprocessor, problems: Problems) -> None:
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
    names = list(metric_directions(config))  # what Keras will log, without `val_`
    allowed = [f"val_{n}" for n in names] + names
    monitors = [("validation.monitor", config.validation.monitor)]
    monitors += [(f"training.callbacks.{i}.monitor", spec["monitor"])
                 for i, spec in enumerate(config.training.callbacks) if isinstance(spec.get("monitor"), str)]
    for key, monitor in monitors:
        if monitor not in allowed:
            problems.add(key, f"not a logged metric{close_matches(monitor, allowed)}; "
                         f"got {monitor!r}; allowed: {', '.join(allowed)}")
