"""Compile Keras models from the `compile` section (the graph of the `model` section is built by
`kexp.graph`, whose `build_model` is imported from here too); the configured callbacks.

Names resolve through `kexp.keras_objects` (Keras' own namespaces and `get` functions; nothing is
imported from a dotted path). Problems are collected, not raised one by one, so `check_names` (no data
needed) and the checks before training report every problem of a config at once. `metric_directions`
says, through Keras, which way each logged metric improves.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
from pathlib import Path
from typing import Any

from kexp.config import Config, show
from kexp.diagnostics import metric_mode
from kexp.errors import Problems, close_matches
from kexp.graph import build_model as build_model  # the graph lives in kexp.graph; callers import it here
from kexp.graph import check_graph, kind_of, make_layer
from kexp.keras_objects import (
    arguments_of,
    callbacks,
    custom_objects,
    default_name_is_none,
    first_line,
    instantiate,
    keras_module,
    keras_spec,
    optimizers,
    public,
    registered,
    short_names,
    snake,
    suggest,
    unknown_arguments,
)

# names `compile` takes besides keras.metrics (it picks the binary/categorical/sparse accuracy); Keras 3
# no longer takes "crossentropy"/"ce", which failed only once training started
SPECIAL_METRICS = {"accuracy", "acc"}
# Keras objects that work only with a package Keras does not depend on (Keras fails only once training
# has started): class name -> package
NEEDS_PACKAGE = {"TensorBoard": "tensorboard"}
# callback arguments that name a file or folder: inside the run folder unless absolute
PATH_ARGUMENTS = ("filepath", "filename", "log_dir", "backup_dir")


# --------------------------------------------------------------------------- compile
def make_optimizer(spec: dict, problems: Problems):
    """The optimizer of `{name: adam, learning_rate: ...}`; the name in any case, as Keras takes it."""
    name = spec["name"]
    params, ok = arguments_of(spec, ("name",), "compile.optimizer", problems)
    known = optimizers()
    cls = known.get(name.lower())
    if cls is None:
        problems.add("compile.optimizer.name", f"unknown Keras optimizer{suggest(name.lower(), known)}; "
                     f"got {show(name)}; allowed: {', '.join(sorted(known))}")
        unknown_arguments(keras_module().optimizers.Optimizer, params, "compile.optimizer", "any optimizer",
                          problems)
        return None
    optimizer = instantiate(cls, params, "compile.optimizer", cls.__name__, problems)
    return optimizer if ok else None


def _keras_object(module, name: Any):
    """What a loss or metric name stands for: whatever `module.get` makes of it, else the public class
    of that name (`get` builds a class without arguments, which MeanIoU(num_classes) cannot be); None
    for a name Keras does not know."""
    try:
        return module.get(name)
    except Exception:
        found = public(module).get(name) if isinstance(name, str) else None
        return found if isinstance(found, type) else registered(name)  # a plugin's, by plain name too


def _make_object(kind: str, spec: dict, key: str, problems: Problems, module, special=()):
    """A loss or metric resolved through Keras' `get` (aliases and registered objects included).

    Without arguments the name itself is handed to `compile`, so logs use it (`mae`, `val_mae`);
    arguments need a class (`{name: AUC, num_thresholds: 100}`). A metric class gets a fixed name
    (`auc`) unless the config names it, so every model built from the config logs the same names."""
    name = spec["name"]
    params, ok = arguments_of(spec, ("name",), key, problems)
    if name in special and not params and ok:
        return name
    obj = _keras_object(module, name)
    if obj is None:
        known = [*public(module), *custom_objects(), *special, *short_names(module)]
        problems.add(f"{key}.name" if len(spec) > 1 else key,
                     f"unknown Keras {kind}{suggest(name, known)}; got {show(name)}; "
                     f"allowed: any name in keras.{module.__name__.split('.')[-1]}")
        return None
    cls = obj if isinstance(obj, type) else type(obj)
    if inspect.isfunction(obj) and registered(name) is obj and not params:  # Keras' compile cannot name it
        return obj if kind == "loss" else keras_module().metrics.MeanMetricWrapper(obj, name=name.split(">")[-1])
    if len(spec) == 1 and registered(name) is None and (kind != "metric" or inspect.isfunction(obj)
                                                        or not default_name_is_none(cls)):
        return name
    if not isinstance(obj, type) and (inspect.isfunction(obj) or cls.__name__ == "LossFunctionWrapper"):
        problems.add(key, f"{name} is a function and takes no arguments; use its class (e.g. "
                     f"{''.join(p.title() for p in name.split('_'))}) to pass {', '.join(spec.keys() - {'name'})}")
        return None
    if kind == "metric" and "name" not in params and default_name_is_none(cls):
        # otherwise Keras numbers every new instance (auc, auc_1, ...): check, each fold and the final
        # model would log the metric under different names
        params["name"] = snake(cls.__name__)
    made = instantiate(cls, params, key, cls.__name__, problems)
    return made if ok else None


def make_loss(config: Config, outputs: list[str] | None, problems: Problems):
    """The loss, or one per output; `outputs` None (no model yet) checks the names only."""
    keras = keras_module()
    loss = config.compile.loss
    if not config.compile.per_output_loss:
        return _make_object("loss", loss, "compile.loss", problems, keras.losses)
    result = {}
    for out, spec in loss.items():
        if outputs is None:
            _make_object("loss", spec, f"compile.loss.{out}", problems, keras.losses)
            continue
        if out not in outputs:
            problems.add(f"compile.loss.{out}", f"the model has no output {show(out)}; outputs: {', '.join(outputs)}")
            continue
        result[out] = _make_object("loss", spec, f"compile.loss.{out}", problems, keras.losses)
    for out in outputs or []:
        if out not in loss:
            problems.add("compile.loss", f"no loss for output {show(out)}; give one per output: {', '.join(outputs)}")
    return result


def make_metrics(config: Config, outputs: list[str] | None, problems: Problems):
    """The metrics, per output when several; `outputs` None (no model yet) checks the names only."""
    keras = keras_module()
    metrics = config.compile.metrics

    def build(items, key):
        return [_make_object("metric", m, f"{key}.{i}", problems, keras.metrics, SPECIAL_METRICS)
                for i, m in enumerate(items)]

    if outputs is None:
        for out, items in (metrics.items() if isinstance(metrics, dict) else [(None, metrics)]):
            build(items, "compile.metrics" if out is None else f"compile.metrics.{out}")
        return None
    if isinstance(metrics, dict):
        for out in metrics:
            if out not in outputs:
                problems.add(f"compile.metrics.{out}", f"the model has no output {show(out)}")
        return {out: build(items, f"compile.metrics.{out}") for out, items in metrics.items() if out in outputs}
    built = build(metrics, "compile.metrics")
    if len(outputs) > 1:
        return {out: build(metrics, "compile.metrics") for out in outputs}
    return built


def compile_model(model, config: Config, problems: Problems, steps_per_execution: int = 1) -> bool:
    """Compile in place; False (with problems recorded) when a name or argument is wrong."""
    outs = list(model.output_names) if hasattr(model, "output_names") else []
    before = len(problems.lines)
    optimizer = make_optimizer(config.compile.optimizer, problems)
    loss = make_loss(config, outs, problems)
    metrics = make_metrics(config, outs, problems)
    weights = config.compile.loss_weights
    if len(problems.lines) > before:
        return False
    try:
        model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, metrics=metrics,
                      jit_compile=config.compile.jit_compile, steps_per_execution=steps_per_execution)
    except Exception as exc:
        problems.add("compile", first_line(exc))
        return False
    return True


# --------------------------------------------------------------------------- what the model logs
def _direction(metric: Any) -> str | None:
    """"max" or "min" as Keras' metric object itself says (its `_direction`, "up" or "down": what
    Keras' callbacks read for mode="auto"); a name is resolved as `compile` resolves it, a function
    wrapped as `compile` wraps it. None when Keras does not say (TruePositives, Mean)."""
    keras = keras_module()
    if isinstance(metric, str):
        try:
            metric = keras.metrics.get("accuracy" if metric in SPECIAL_METRICS else metric)
        except Exception:
            return None
    if inspect.isfunction(metric):
        metric = keras.metrics.MeanMetricWrapper(metric)
    return {"up": "max", "down": "min"}.get(getattr(metric, "_direction", None))


def metric_directions(config: Config) -> dict[str, str]:
    """Every name Keras logs for this config's loss and metrics (without `val_`), in log order, mapped
    to "min" or "max": `{"loss": "min", "accuracy": "max"}`; with several outputs also
    `price_mae`, ..., `price_loss`. Losses are "min"; a metric's direction is the one its Keras object
    carries; only a metric that carries none (TruePositives, Mean) falls back to
    `diagnostics.metric_mode`, which guesses from the name."""
    outputs = list(output_layers(config))
    metrics = make_metrics(config, outputs, Problems())
    per_output = metrics if isinstance(metrics, dict) else {None: metrics or []}
    directions = {"loss": "min"}
    for out, items in per_output.items():
        prefix = f"{out}_" if out is not None and len(outputs) > 1 else ""
        for metric in items:
            if metric is not None:
                name = prefix + (metric if isinstance(metric, str) else metric.name)
                directions.setdefault(name, _direction(metric) or metric_mode(name))
    if len(outputs) > 1:
        directions.update({f"{out}_loss": "min" for out in outputs})
    return directions


# --------------------------------------------------------------------------- callbacks
def _inside(folder: Any, params: dict) -> dict:
    """Relative file/folder arguments resolved inside `folder` (their parent made)."""
    for arg in PATH_ARGUMENTS:
        value = params.get(arg)
        if folder is None or not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
            continue
        target = Path(folder) / value
        if "{" not in str(target.parent):  # not a Keras `{epoch}` template; CSVLogger makes no folder
            target.parent.mkdir(parents=True, exist_ok=True)
        params[arg] = str(target)
    return params


def make_callbacks(config: Config, problems: Problems, folder=None) -> list:
    """The configured callbacks. `folder` (a split's part of the run folder): where relative paths of
    callback arguments that name a file or folder (filepath, filename, log_dir, backup_dir) resolve,
    so TensorBoard logs and checkpoints land in the run folder, not the working directory; absolute
    paths (and `~/...`) stay as given. Without `folder` (checks), paths are left alone."""
    known = callbacks()
    made = []
    for i, spec in enumerate(config.training.callbacks):
        key = f"training.callbacks.{i}"
        name = spec["name"]
        cls = known.get(name)
        if cls is None:
            problems.add(f"{key}.name", f"unknown Keras callback{close_matches(name, known)}; got {show(name)}; "
                         f"allowed: {', '.join(sorted(known))}")
            continue
        package = NEEDS_PACKAGE.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            problems.add(f"{key}.name", f"{name} needs the {package} package, which is not installed; "
                         f"pip install {package}, or remove the callback")
            continue
        params = _inside(folder, {k: keras_spec(v) for k, v in spec.items() if k != "name"})
        callback = instantiate(cls, params, key, name, problems, check_arguments=True)
        if callback is not None:
            made.append(callback)
    return made


# --------------------------------------------------------------------------- checks without data
def output_layers(config: Config) -> dict[str, int]:
    """Output name -> index of the config layer that produces it."""
    names = [spec["name"] if isinstance(spec.get("name"), str) and spec["name"] else f"layer_{i}"
             for i, spec in enumerate(config.model.layers)]
    outputs = config.model.outputs or [names[-1]]
    return {out: names.index(out) for out in outputs if out in names}


def check_loss_weights(config: Config, problems: Problems) -> None:
    """Keras ignores a loss weight for an output the model does not have: an error here."""
    weights = config.compile.loss_weights
    layers = output_layers(config)
    named = [out for out, i in layers.items() if config.model.layers[i].get("name") == out]
    shown = ", ".join(out if out in named else f"model.layers.{i} (unnamed)" for out, i in layers.items())
    if isinstance(weights, dict):
        for out in weights:
            if out not in named:
                problems.add(f"compile.loss_weights.{out}", f"the model has no output {show(out)}"
                             f"{close_matches(out, named)}; outputs: {shown}")
    elif isinstance(weights, list) and len(weights) != len(layers):
        problems.add("compile.loss_weights", f"{len(weights)} weights for {len(layers)} outputs ({shown}); "
                     "give one per output")


def _probability_loss(spec: dict | None) -> bool:
    """A loss that takes probabilities unless told `from_logits: true` (the crossentropies)."""
    if not spec or spec.get("from_logits") is True:
        return False
    try:
        obj = keras_module().losses.get(spec["name"])
    except Exception:
        return False
    target = obj if isinstance(obj, type) or inspect.isfunction(obj) else type(obj)
    try:
        return "from_logits" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def _origin(entries: list[dict], index: int) -> dict | None:
    """The `layer:` entry that made entry `index`'s layer (following `share:`), or None."""
    seen = set()
    spec = entries[index]
    while kind_of(spec) == "share" and spec["share"] not in seen:
        seen.add(spec["share"])
        spec = next((e for e in entries if e.get("name") == spec["share"]), {"model": None})
    return spec if kind_of(spec) == "layer" else None


def check_output_activations(config: Config, problems: Problems) -> None:
    """A probability loss (crossentropy, from_logits false) on an output layer that does not end in
    softmax or sigmoid trains on meaningless numbers without an error: report it with both fixes."""
    keras = keras_module()
    loss = config.compile.loss
    for out, index in output_layers(config).items():
        spec = loss.get(out) if config.compile.per_output_loss else loss
        if not _probability_loss(spec):
            continue
        origin = _origin(config.model.layers, index)
        if origin is None:  # a sub-model or an earlier run's model: its own last layer decides
            continue
        layer = make_layer(origin, f"model.layers.{index}", Problems())
        activation = getattr(layer, "activation", None)
        if layer is None or isinstance(layer, keras.layers.Softmax) or not callable(activation):
            continue
        used = getattr(activation, "__name__", type(activation).__name__)
        if used in ("softmax", "sigmoid"):
            continue
        name = spec["name"]
        wanted = "sigmoid" if "binary" in name.lower() else "softmax"
        cls = name if name[:1].isupper() else "".join(p.title() for p in name.split("_"))
        where = f" (output {out})" if config.compile.per_output_loss else ""
        loss_key = f"compile.loss.{out}" if config.compile.per_output_loss else "compile.loss"
        problems.add(f"model.layers.{index}.activation",
                     f"{name} expects probabilities but the output layer's activation is {used}{where}; set "
                     f"activation: {wanted}, or compute the loss from logits: {loss_key}: "
                     f"{{name: {cls}, from_logits: true}}")


def check_names(config: Config, problems: Problems) -> None:
    """Every Keras name and argument of a config, without data or a model: layers, optimizer, losses,
    metrics, callbacks (each problem of each section, in one pass)."""
    check_graph(config, problems)
    make_optimizer(config.compile.optimizer, problems)
    make_loss(config, None, problems)
    make_metrics(config, None, problems)
    make_callbacks(config, problems)
