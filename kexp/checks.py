"""Everything that can be known before training, reported all at once as one ConfigError: every Keras
name and argument, the preprocessing against the data, the model's shapes against the labels and
the loss, the monitored metric names, the validation splits."""

from __future__ import annotations

import numpy as np

from kexp.backend import limits, use
from kexp.config import Config
from kexp.data import Ragged, take
from kexp.errors import ConfigError, Problems, close_matches
from kexp.models import (
    build_model,
    check_loss_weights,
    check_names,
    check_output_activations,
    compile_model,
    make_metrics,
    metric_directions,
)
from kexp.preprocessing import MultiHot, Preprocessor, as_outputs, loss_encoding, n_rows
from kexp.training import class_weights, input_shape
from kexp.validation import splits_for


def check(config: Config, data, source: str) -> None:
    """Everything that can be known before training: names, arguments, shapes, labels vs loss."""
    use(config, source)
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
    _check_class_weight(config, data, problems)
    # every Keras name and argument, whatever else is wrong: all problems in one report
    check_names(config, problems)
    for key, problem in limits(config):
        problems.add(key, problem)
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
            before = len(problems.lines)
            _check_labels(config, data, model, pre, problems)
            if compile_model(model, config, problems) and len(problems.lines) == before:
                _check_metrics_on_labels(config, data, model, pre, sample, problems)
    if problems.lines:
        raise ConfigError([f"{source}: {line}" for line in problems.lines])


def check_without_data(config: Config, source: str) -> None:
    """What `kexp validate --no-data` checks beyond the schema: every Keras name and argument, the
    output layers against the loss, the monitored metric names."""
    use(config, source)
    problems = Problems()
    check_names(config, problems)
    for key, problem in limits(config):
        problems.add(key, problem)
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
    units_key = f"{last_key}.units" if "layer" in config.model.layers[-1] else last_key  # not a share/model/from_run
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
            problems.add(units_key,
                         f"binary labels need 1 output unit (sigmoid); the model has {units}{where}")
        elif encoding in ("categorical", "sparse") and n_classes and units != n_classes:
            problems.add(units_key, f"the last layer has {units} units but the data has {n_classes} "
                         f"classes{where}; use units: {n_classes} with activation: softmax")


def _check_metrics_on_labels(config: Config, data, model, pre: Preprocessor, sample, problems: Problems) -> None:
    """Every metric object updated once on a few encoded labels and the model's outputs for them, so that a
    metric that cannot read these labels (precision, recall or AUC on sparse class ids) is a config error
    naming it, not a shape error deep inside the first training step."""
    from kexp.keras_objects import first_line

    def dense(value):
        if isinstance(value, dict):
            return {k: dense(v) for k, v in value.items()}
        return value.dense() if isinstance(value, MultiHot) else value

    import keras

    outputs = list(model.output_names)
    try:
        y_pred = model(dense(pre.transform(take(data.x_train, sample))), training=False)
    except Exception:  # a model that cannot run is reported by training itself
        return
    predicted = y_pred
    if not isinstance(predicted, dict):
        predicted = dict(zip(outputs, predicted if isinstance(predicted, (list, tuple)) else [predicted]))
    y = as_outputs(pre.labels(take(data.y_train, sample)), model)
    labels = y if isinstance(y, dict) else {outputs[0]: y}
    encodings = pre.label_encodings if isinstance(pre.label_encodings, dict) else {outputs[0]: pre.label_encodings}
    built = make_metrics(config, outputs, Problems())
    per_output = built if isinstance(built, dict) else {outputs[0]: built or []}
    configured = config.compile.metrics
    for out, metrics in per_output.items():
        base = f"compile.metrics.{out}" if isinstance(configured, dict) else "compile.metrics"
        for i, metric in enumerate(metrics):
            if isinstance(metric, str) and metric.lower() not in ("accuracy", "acc"):  # Keras picks those by loss
                metric = keras.metrics.get(metric)  # as compile resolves it
                metric = metric if hasattr(metric, "update_state") else keras.metrics.MeanMetricWrapper(metric)
            if not hasattr(metric, "update_state") or out not in labels:
                continue
            try:
                metric.update_state(labels[out], predicted[out])
            except Exception as exc:
                if encodings.get(out) == "sparse":
                    other = ("use sparse_categorical_crossentropy" if "crossentropy" in metric.name
                             else "use it on a binary target (one sigmoid unit)")
                    problems.add(f"{base}.{i}", f"{metric.name} needs one 0/1 column per class; the labels are class "
                                 "ids (sparse); set preprocessing.labels: categorical with loss: "
                                 f"categorical_crossentropy, or {other}")
                else:
                    problems.add(f"{base}.{i}", f"{metric.name} cannot be computed on these {encodings.get(out)} "
                                 f"labels; Keras says: {first_line(exc)}")
        if base == "compile.metrics" and len(per_output) > 1:
            break  # one list for every output: each problem once
    if any(line.startswith("compile.metrics") for line in problems.lines):
        return
    try:  # and all of them as the compiled model computes them in training
        model.compute_metrics(None, y, y_pred, None)
    except Exception as exc:
        problems.add("compile.metrics", f"Keras cannot compute these metrics on the model's outputs and the "
                     f"labels; Keras says: {first_line(exc)}")


def _check_class_weight(config: Config, data, problems: Problems) -> None:
    """training.class_weight against the data: one output (as Keras' fit), class labels, known classes."""
    spec = config.training.class_weight
    if spec is None:
        return
    if isinstance(data.task, dict):
        problems.add("training.class_weight", f"Keras weights the classes of single-output models only; this data "
                     f"has outputs {', '.join(data.task)}; weight rows with dataset.sample_weight instead (one weight "
                     "per row, applied to every output's loss), or remove it")
    elif data.task == "regression":
        problems.add("training.class_weight", f"weights classes; {config.dataset.name} is a regression target; "
                     "remove it, or weight rows with dataset.sample_weight")
    elif isinstance(spec, dict):
        problems.lines.extend(class_weights(spec, np.asarray(data.y_train), data.num_classes, data.class_names)[1])


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
