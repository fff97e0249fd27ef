"""Build and compile Keras models from the `model` and `compile` sections.

Every name resolves through Keras' own namespaces and `get`/`deserialize` functions (layers,
optimizers, losses, metrics, callbacks, and whatever they take: regularizers, initializers,
constraints, activations), plus objects registered with `keras.saving.register_keras_serializable`.
Nothing is imported or evaluated from a dotted path. Problems are collected, not raised one by one,
so `check_names` (no data needed) and `kexp.experiment.check` report every problem of a config at once.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import inspect
import re
from typing import Any

from kexp.config import Config, show
from kexp.errors import Problems, close_matches

# names `compile` takes besides keras.metrics (it picks the binary/categorical/sparse form); Keras 3 no
# longer takes "crossentropy"/"ce", which failed only once training started
SPECIAL_METRICS = {"accuracy", "acc"}
# Keras objects that work only with a package Keras does not depend on: class name -> package
NEEDS_PACKAGE = {"TensorBoard": "tensorboard"}
# the Keras namespace that resolves a nested object, by the argument's name
NESTED = (
    (re.compile(r"(.*_)?activation$"), "activations", "activation"),
    (re.compile(r".*initializer$"), "initializers", "initializer"),
    (re.compile(r".*regularizer$"), "regularizers", "regularizer"),
    (re.compile(r".*constraint$"), "constraints", "constraint"),
)


def _keras():
    import keras

    return keras


def _public(module, base: type | None = None) -> dict[str, Any]:
    """The public names of a Keras namespace (optionally only subclasses of `base`)."""
    names = {}
    for name in dir(module):
        if name.startswith("_") or name in {"get", "serialize", "deserialize"}:
            continue
        obj = getattr(module, name)
        if base is not None and not (isinstance(obj, type) and issubclass(obj, base)):
            continue
        if callable(obj):
            names[name] = obj
    return names


def _custom_objects() -> dict[str, Any]:
    keras = _keras()
    return {name.split(">")[-1]: obj for name, obj in keras.saving.get_custom_objects().items()}


def _initials(name: str) -> str:
    return "".join(part[0] for part in name.split("_") if part)


def suggest(word: Any, choices) -> str:
    """` (did you mean ...?)`: close spellings, else names whose initials the word is (lr ->
    learning_rate), the short forms Keras itself uses for losses and metrics."""
    choices = list(choices)
    hint = close_matches(word, choices)
    if hint or not isinstance(word, str) or len(word) < 2:
        return hint
    found = [c for c in choices if "_" in c and _initials(c) == word.lower()][:3]
    return f" (did you mean {', '.join(found)}?)" if found else ""


@functools.cache
def _short_names(module) -> tuple[str, ...]:
    """Keras' own short forms of a namespace's functions (`mse`, `mae`, `kld`): initials of the public
    function names that the namespace's `get` accepts."""
    found = []
    for name, obj in _public(module).items():
        short = _initials(name)
        if "_" in name and not isinstance(obj, type) and short not in found:
            try:
                module.get(short)
            except Exception:
                continue
            found.append(short)
    return tuple(found)


def _keras_spec(value: Any) -> Any:
    """Nested `{name: L2, l2: 0.01}` -> Keras' `{class_name: L2, config: {l2: 0.01}}`."""
    if isinstance(value, dict) and isinstance(value.get("name"), str) and "class_name" not in value:
        return {"class_name": value["name"], "config": {k: v for k, v in value.items() if k != "name"}}
    return value


def _arguments(cls) -> list[str]:
    """Named constructor arguments of a class and its bases (Keras forwards **kwargs upwards)."""
    names: list[str] = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    return list(dict.fromkeys(names))


def _unknown_arguments(cls, params: dict, key: str, label: str, problems: Problems) -> list[str]:
    allowed = _arguments(cls)
    unknown = [k for k in params if k not in allowed]
    for k in unknown:
        problems.add(f"{key}.{k}", f"not an argument of {label}{suggest(k, allowed)}; "
                     f"allowed: {', '.join(allowed)}")
    return unknown


def instantiate(cls, params: dict, key: str, label: str, problems: Problems, check_arguments: bool = False):
    """`cls(**params)`, or problems naming each unknown argument (or Keras' own complaint).

    `check_arguments`: check the names against the signature first, for classes whose `**kwargs`
    swallow unknown arguments (Keras callbacks: `ReduceLROnPlateau(patiense=1)` is silently ignored)."""
    if check_arguments and _unknown_arguments(cls, params, key, label, problems):
        return None
    try:
        return cls(**params)
    except Exception as exc:
        if not _unknown_arguments(cls, params, key, label, problems):
            problems.add(key, f"{label}: {_first_line(exc)}")
    return None


def _nested(arg: str, value: Any, key: str, problems: Problems) -> Any:
    """A nested Keras object given as an argument: a name or `{name: L2, l2: 0.01}`, resolved through
    the namespace its argument name implies (activations, initializers, regularizers, constraints;
    a learning-rate schedule for `learning_rate`), with a close match for a typo. Returns the value to
    hand to Keras, or None after recording a problem."""
    if not isinstance(arg, str):
        return _keras_spec(value)
    keras = _keras()
    found = next(((getattr(keras, module), kind) for pattern, module, kind in NESTED if pattern.fullmatch(arg)),
                 None)
    if arg == "learning_rate" and isinstance(value, dict):
        found = (keras.optimizers.schedules, "learning-rate schedule")
    if found is None or not (isinstance(value, str) or (isinstance(value, dict) and "name" in value)):
        return _keras_spec(value)
    module, kind = found
    namespace = module.__name__.removeprefix("keras.")
    name = value if isinstance(value, str) else value["name"]
    known = {**_public(module), **_custom_objects()}
    cls = known.get(name) if isinstance(name, str) else None
    if cls is None and hasattr(module, "get"):
        try:
            obj = module.get(name if isinstance(value, str) else _keras_spec({"name": name}))
            cls = obj if isinstance(obj, type) or not isinstance(value, dict) else type(obj)
        except Exception:
            cls = None
    if cls is None:
        where = key if isinstance(value, str) else f"{key}.name"
        problems.add(where, f"unknown Keras {kind}{suggest(name, [*known, *_short_names(module)])}; "
                     f"got {show(name)}; allowed: any name in keras.{namespace}")
        return None
    if isinstance(value, str):
        return value
    params = {k: v for k, v in value.items() if k != "name"}
    if not isinstance(cls, type):  # a function (an activation): no arguments to pass
        if params:
            problems.add(key, f"{name} takes no arguments; got {', '.join(params)}")
            return None
        return name
    return instantiate(cls, params, key, name, problems)


def _arguments_of(spec: dict, skip: tuple[str, ...], key: str, problems: Problems) -> tuple[dict, bool]:
    """Keyword arguments of a spec with nested objects resolved; False when one did not resolve
    (the argument is left out, so that the remaining arguments can still be checked)."""
    params, ok = {}, True
    for k, v in spec.items():
        if k in skip:
            continue
        before = len(problems.lines)
        value = _nested(k, v, f"{key}.{k}", problems)
        if len(problems.lines) > before:
            ok = False
            continue
        params[k] = value
    return params, ok


def layer_class(name: str):
    keras = _keras()
    classes = {**_public(keras.layers, keras.layers.Layer), **_custom_objects()}
    return classes.get(name), sorted(n for n, c in classes.items() if isinstance(c, type))


def make_layer(spec: dict, key: str, problems: Problems):
    """A layer instance from `{layer: Dense, units: 16, ...}` (the `inputs` key is the graph's)."""
    name = spec["layer"]
    cls, known = layer_class(name)
    if cls is None:
        problems.add(f"{key}.layer", f"unknown Keras layer{close_matches(name, known)}; got {show(name)}; "
                     "allowed: any class in keras.layers or registered with keras.saving")
        return None
    kwargs, ok = _arguments_of(spec, ("layer", "inputs"), key, problems)
    layer = instantiate(cls, kwargs, key, name, problems)
    return layer if ok else None


def resolve_layers(config: Config, problems: Problems) -> list:
    """Every layer of the model, instantiated (not yet called); problems for all of them at once."""
    return [make_layer(spec, f"model.layers.{i}", problems) for i, spec in enumerate(config.model.layers)]


def _channel_hint(layer, args, index: int) -> str:
    """The fix when a layer wants one more axis than it gets: images (n, 28, 28) into Conv2D."""
    spec = getattr(layer, "input_spec", None)
    spec = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    wanted = getattr(spec, "ndim", None) or getattr(spec, "min_ndim", None)
    shape = getattr(args, "shape", None)
    if wanted is None or shape is None or len(shape) + 1 != wanted:
        return ""
    per_sample = tuple(shape[1:])
    target = ", ".join(str(d) for d in (*per_sample, 1))
    where = "the data has" if index == 0 else "its input has"
    return (f"{where} shape {per_sample} per sample, one axis short of the {wanted} dimensions (with the "
            f"batch) it needs: add a channel axis with preprocessing.channels_last: true, or insert "
            f"{{layer: Reshape, target_shape: [{target}]}} as model.layers.{index}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def build_model(config: Config, input_shape: Any, problems: Problems, name: str | None = None):
    """A functional Keras model for these input shapes; sequential stacks are graphs of one chain.

    `input_shape` is a tuple, or a mapping input name -> tuple for several inputs."""
    keras = _keras()
    spec = config.model
    shapes = input_shape if isinstance(input_shape, dict) else {"input": input_shape}
    order = spec.inputs or list(shapes)
    nodes: dict[str, Any] = {}
    for input_name in order:
        if input_name not in shapes:
            problems.add("model.inputs", f"no data input named {show(input_name)}; "
                         f"the data has: {', '.join(shapes)}")
            return None
        nodes[input_name] = keras.Input(shape=shapes[input_name], name=input_name)
    if spec.inputs is None and len(order) > 1 and not spec.is_graph:
        problems.add("model", f"the data has several inputs ({', '.join(order)}); a sequential stack "
                     "takes one: give layers `inputs:` and the model `inputs:`/`outputs:`")
        return None
    before = len(problems.lines)
    layers = resolve_layers(config, problems)
    if len(problems.lines) > before:
        return None
    previous = nodes[order[0]]
    last_name = order[0]
    for i, layer_spec in enumerate(spec.layers):
        key = f"model.layers.{i}"
        layer = layers[i]
        node_name = layer_spec.get("name") or f"layer_{i}"
        if not isinstance(node_name, str):
            problems.add(f"{key}.name", f"must be text naming the layer; got {show(node_name)}")
            return None
        if node_name in nodes:
            problems.add(f"{key}.name", f"{show(node_name)} is used twice; layer names must be unique")
            return None
        if layer is None:
            return None
        refs = layer_spec.get("inputs")
        if refs is None:
            args = previous
        else:
            refs_list = [refs] if isinstance(refs, str) else refs
            if not isinstance(refs_list, list) or not all(isinstance(r, str) for r in refs_list):
                problems.add(f"{key}.inputs", f"must be a layer/input name or a list of them; got {show(refs)}")
                return None
            missing = [r for r in refs_list if r not in nodes]
            if missing:
                problems.add(f"{key}.inputs", f"unknown {', '.join(map(show, missing))}"
                             f"{close_matches(missing[0], nodes)}; defined before this layer: {', '.join(nodes)}")
                return None
            args = nodes[refs_list[0]] if isinstance(refs, str) else [nodes[r] for r in refs_list]
        try:
            previous = layer(args)
        except Exception as exc:  # shape/rank mismatch between data and layers
            problems.add(key, f"{layer_spec['layer']} cannot take its input: "
                         f"{_channel_hint(layer, args, i) or _first_line(exc)}")
            return None
        nodes[node_name] = previous
        last_name = node_name
    outputs = spec.outputs or [last_name]
    missing = [o for o in outputs if o not in nodes]
    if missing:
        problems.add("model.outputs", f"unknown layer {', '.join(map(show, missing))}; "
                     f"defined: {', '.join(nodes)}")
        return None
    out = [nodes[o] for o in outputs]
    inputs = [nodes[i] for i in order]
    return keras.Model(
        inputs=inputs[0] if len(inputs) == 1 and not isinstance(input_shape, dict) else
        {i: nodes[i] for i in order},
        outputs=out[0] if len(out) == 1 else {o: nodes[o] for o in outputs},
        name=name or config.name.replace(".", "_"),
    )


# --------------------------------------------------------------------------- compile
def make_optimizer(spec: dict, problems: Problems):
    keras = _keras()
    name = spec["name"]
    params, ok = _arguments_of(spec, ("name",), "compile.optimizer", problems)
    known = _public(keras.optimizers, keras.optimizers.Optimizer)
    wrappers = ("optimizer", "lossscaleoptimizer", "multioptimizer")
    lookup = {n.lower(): n for n in known if n.lower() not in wrappers}
    cls = known.get(lookup.get(name.lower(), ""))
    if cls is None:
        problems.add("compile.optimizer.name", f"unknown Keras optimizer{suggest(name.lower(), lookup)}; "
                     f"got {show(name)}; allowed: {', '.join(sorted(lookup))}")
        _unknown_arguments(known["Optimizer"], params, "compile.optimizer", "any optimizer", problems)
        return None
    optimizer = instantiate(cls, params, "compile.optimizer", cls.__name__, problems)
    return optimizer if ok else None


def _make_object(kind: str, spec: dict, key: str, problems: Problems, module, special=()):
    """A loss or metric resolved through Keras' `get` (aliases and registered objects included).

    Without arguments the name itself is handed to `compile`, so logs use it (`mae`, `val_mae`);
    arguments need a class (`{name: AUC, num_thresholds: 100}`). A metric class gets a fixed name
    (`auc`) unless the config names it, so every model built from the config logs the same names."""
    name = spec["name"]
    params, ok = _arguments_of(spec, ("name",), key, problems)
    if name in special and not params and ok:
        return name
    try:
        obj = module.get(name)
    except Exception:
        known = [*_public(module), *_custom_objects(), *special, *_short_names(module)]
        problems.add(f"{key}.name" if len(spec) > 1 else key,
                     f"unknown Keras {kind}{suggest(name, known)}; got {show(name)}; "
                     f"allowed: any name in keras.{module.__name__.split('.')[-1]}")
        return None
    cls = obj if isinstance(obj, type) else type(obj)
    if len(spec) == 1 and (kind != "metric" or inspect.isfunction(obj) or not _default_name_is_none(cls)):
        return name
    if not isinstance(obj, type) and (inspect.isfunction(obj) or cls.__name__ == "LossFunctionWrapper"):
        problems.add(key, f"{name} is a function and takes no arguments; use its class (e.g. "
                     f"{''.join(p.title() for p in name.split('_'))}) to pass {', '.join(spec.keys() - {'name'})}")
        return None
    if kind == "metric" and "name" not in params and _default_name_is_none(cls):
        # otherwise Keras numbers every new instance (auc, auc_1, ...): check, each fold and the final
        # model would log the metric under different names
        params["name"] = _snake(cls.__name__)
    made = instantiate(cls, params, key, cls.__name__, problems)
    return made if ok else None


def _default_name_is_none(cls) -> bool:
    try:
        parameter = inspect.signature(cls).parameters.get("name")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is None


def _snake(name: str) -> str:
    """Keras' snake-case form of a class name (AUC -> auc, MeanIoU -> mean_io_u)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def make_loss(config: Config, outputs: list[str] | None, problems: Problems):
    """The loss, or one per output; `outputs` None (no model yet) checks the names only."""
    keras = _keras()
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
    keras = _keras()
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


def make_callbacks(config: Config, problems: Problems, folder=None) -> list:
    """The configured callbacks. `folder` (a split's part of the run folder): where relative paths of
    callback arguments that name a file or folder (filepath, filename, log_dir, backup_dir) resolve,
    so TensorBoard logs and checkpoints land in the run folder, not the working directory; absolute
    paths (and `~/...`) stay as given. Without `folder` (checks), paths are left alone."""
    import os
    from pathlib import Path

    def inside(params: dict) -> dict:
        for arg in ("filepath", "filename", "log_dir", "backup_dir"):
            value = params.get(arg)
            if folder is None or not isinstance(value, str) or not value or os.path.isabs(os.path.expanduser(value)):
                continue
            target = Path(folder) / value
            if "{" not in str(target.parent):  # not a Keras `{epoch}` template; CSVLogger makes no folder
                target.parent.mkdir(parents=True, exist_ok=True)
            params[arg] = str(target)
        return params

    keras = _keras()
    known = {**_public(keras.callbacks, keras.callbacks.Callback), **_custom_objects()}
    callbacks = []
    for i, spec in enumerate(config.training.callbacks):
        key = f"training.callbacks.{i}"
        name = spec["name"]
        cls = known.get(name)
        if cls is None or name in ("Callback", "CallbackList", "History", "ProgbarLogger"):
            problems.add(f"{key}.name", f"unknown Keras callback{close_matches(name, known)}; got {show(name)}; "
                         f"allowed: {', '.join(sorted(n for n in known if n not in ('Callback', 'CallbackList')))}")
            continue
        package = NEEDS_PACKAGE.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            problems.add(f"{key}.name", f"{name} needs the {package} package, which is not installed; "
                         f"pip install {package}, or remove the callback")
            continue
        params = inside({k: _keras_spec(v) for k, v in spec.items() if k != "name"})
        callback = instantiate(cls, params, key, name, problems, check_arguments=True)
        if callback is not None:
            callbacks.append(callback)
    return callbacks


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
        obj = _keras().losses.get(spec["name"])
    except Exception:
        return False
    target = obj if isinstance(obj, type) or inspect.isfunction(obj) else type(obj)
    try:
        return "from_logits" in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def output_layers(config: Config) -> dict[str, int]:
    """Output name -> index of the config layer that produces it."""
    names = [spec["name"] if isinstance(spec.get("name"), str) and spec["name"] else f"layer_{i}"
             for i, spec in enumerate(config.model.layers)]
    outputs = config.model.outputs or [names[-1]]
    return {out: names.index(out) for out in outputs if out in names}


def check_output_activations(config: Config, problems: Problems) -> None:
    """A probability loss (crossentropy, from_logits false) on an output layer that does not end in
    softmax or sigmoid trains on meaningless numbers without an error: report it with both fixes."""
    keras = _keras()
    loss = config.compile.loss
    for out, index in output_layers(config).items():
        spec = loss.get(out) if config.compile.per_output_loss else loss
        if not _probability_loss(spec):
            continue
        layer = make_layer(config.model.layers[index], f"model.layers.{index}", Problems())
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
    resolve_layers(config, problems)
    make_optimizer(config.compile.optimizer, problems)
    make_loss(config, None, problems)
    make_metrics(config, None, problems)
    make_callbacks(config, problems)


def _scalar_defaults(cls) -> dict[str, Any]:
    """Constructor arguments of a class (and the bases it forwards **kwargs to) whose default is a plain
    number, text or flag: what a config that leaves the argument out gets from Keras."""
    found: dict[str, Any] = {}
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        try:
            params = inspect.signature(init).parameters.values() if init else ()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.name not in found and p.name not in ("self", "name", "dtype") and \
                    isinstance(p.default, (bool, int, float, str)):
                found[p.name] = p.default
    return found


def with_keras_defaults(config: dict) -> dict:
    """A copy of a resolved config dict in which every named Keras object (layers, the optimizer, losses,
    metrics, callbacks) also holds Keras' defaults of its scalar arguments: Adam's `learning_rate: 0.001`
    for a config that left it out. Written to the run's config.json, so that `compare` shows and filters
    the value a run really used without importing Keras. Names Keras does not know stay as they are."""
    keras = _keras()
    out = copy.deepcopy(config)
    optimizers = {n.lower(): c for n, c in _public(keras.optimizers, keras.optimizers.Optimizer).items()}
    callbacks = {**_public(keras.callbacks, keras.callbacks.Callback), **_custom_objects()}

    def fill(spec: Any, cls: Any) -> None:
        if isinstance(spec, dict) and isinstance(cls, type):
            for arg, default in _scalar_defaults(cls).items():
                spec.setdefault(arg, default)

    def resolved(module, name: Any) -> Any:
        try:
            obj = module.get(name)
        except Exception:
            return None
        return obj if isinstance(obj, type) else None  # functions (`mse`) take no arguments

    for spec in out.get("model", {}).get("layers", []):
        if isinstance(spec, dict):
            fill(spec, layer_class(spec.get("layer"))[0])
    compile_ = out.get("compile", {})
    optimizer = compile_.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("name"), str):
        fill(optimizer, optimizers.get(optimizer["name"].lower()))
    loss = compile_.get("loss")
    for spec in (loss.values() if isinstance(loss, dict) and "name" not in loss else [loss]):
        if isinstance(spec, dict) and len(spec) > 1:  # a bare name is handed to Keras as a name
            fill(spec, resolved(keras.losses, spec.get("name")))
    metrics = compile_.get("metrics")
    for items in (metrics.values() if isinstance(metrics, dict) else [metrics or []]):
        for spec in items:
            if isinstance(spec, dict) and len(spec) > 1:
                fill(spec, resolved(keras.metrics, spec.get("name")))
    for spec in out.get("training", {}).get("callbacks", []):
        if isinstance(spec, dict):
            fill(spec, callbacks.get(spec.get("name")))
    return out


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
        problems.add("compile", _first_line(exc))
        return False
    return True
