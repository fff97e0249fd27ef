"""Build and compile Keras models from the `model` and `compile` sections.

Every name resolves through Keras' own namespaces and `get`/`deserialize` functions (layers,
optimizers, losses, metrics, callbacks, and whatever they take: regularizers, initializers,
constraints, activations), plus objects registered with `keras.saving.register_keras_serializable`.
Nothing is imported or evaluated from a dotted path. Problems are collected, not raised one by one,
so `check_model` can report every problem of a config at once.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from kexp.config import Config, show
from kexp.errors import close_matches

SPECIAL_METRICS = {"accuracy", "acc", "crossentropy", "ce"}


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


@dataclass
class Problems:
    """Collected config problems: `key: message` lines."""

    lines: list[str] = field(default_factory=list)

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{key}: {message}")


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


def instantiate(cls, params: dict, key: str, label: str, problems: Problems):
    """`cls(**params)`, or problems naming each unknown argument (or Keras' own complaint)."""
    try:
        return cls(**params)
    except Exception as exc:
        allowed = _arguments(cls)
        unknown = [k for k in params if k not in allowed]
        for k in unknown:
            problems.add(f"{key}.{k}", f"not an argument of {label}{close_matches(k, allowed)}; "
                         f"allowed: {', '.join(allowed)}")
        if not unknown:
            problems.add(key, f"{label}: {_first_line(exc)}")
    return None


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
    kwargs = {k: _keras_spec(v) for k, v in spec.items() if k not in ("layer", "inputs")}
    return instantiate(cls, kwargs, key, name, problems)


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
    previous = nodes[order[0]]
    last_name = order[0]
    for i, layer_spec in enumerate(spec.layers):
        key = f"model.layers.{i}"
        layer = make_layer(layer_spec, key, problems)
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
            problems.add(key, f"{layer_spec['layer']} cannot take its input: {_first_line(exc)}")
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
    params = {k: _keras_spec(v) for k, v in spec.items() if k != "name"}
    known = _public(keras.optimizers, keras.optimizers.Optimizer)
    lookup = {n.lower(): n for n in known} | {"sgd": "SGD", "rmsprop": "RMSprop"}
    cls = known.get(name) or known.get(lookup.get(name.lower(), ""))
    if cls is None or name in ("Optimizer", "LossScaleOptimizer", "MultiOptimizer"):
        problems.add("compile.optimizer.name", f"unknown Keras optimizer{close_matches(name, known)}; "
                     f"got {show(name)}; allowed: {', '.join(sorted(lookup))}")
        return None
    return instantiate(cls, params, "compile.optimizer", cls.__name__, problems)


def _make_object(kind: str, spec: dict, key: str, problems: Problems, module, special=()):
    """A loss or metric resolved through Keras' `get` (aliases and registered objects included).

    Without arguments the name itself is handed to `compile`, so logs use it (`mae`, `val_mae`);
    arguments need a class (`{name: AUC, num_thresholds: 100}`)."""
    name = spec["name"]
    params = {k: _keras_spec(v) for k, v in spec.items() if k != "name"}
    if name in special and not params:
        return name
    try:
        obj = module.get(name)
    except Exception:
        known = [*_public(module), *_custom_objects(), *special]
        problems.add(f"{key}.name" if params else key,
                     f"unknown Keras {kind}{close_matches(name, known)}; got {show(name)}; "
                     f"allowed: any name in keras.{module.__name__.split('.')[-1]}")
        return None
    if not params:
        return name
    cls = obj if isinstance(obj, type) else type(obj)
    if not isinstance(obj, type) and (inspect.isfunction(obj) or cls.__name__ == "LossFunctionWrapper"):
        problems.add(key, f"{name} is a function and takes no arguments; use its class (e.g. "
                     f"{''.join(p.title() for p in name.split('_'))}) to pass {', '.join(params)}")
        return None
    return instantiate(cls, params, key, cls.__name__, problems)


def make_loss(config: Config, outputs: list[str], problems: Problems):
    keras = _keras()
    loss = config.compile.loss
    if not config.compile.per_output_loss:
        return _make_object("loss", loss, "compile.loss", problems, keras.losses)
    result = {}
    for out, spec in loss.items():
        if out not in outputs:
            problems.add(f"compile.loss.{out}", f"the model has no output {show(out)}; outputs: {', '.join(outputs)}")
            continue
        result[out] = _make_object("loss", spec, f"compile.loss.{out}", problems, keras.losses)
    for out in outputs:
        if out not in loss:
            problems.add("compile.loss", f"no loss for output {show(out)}; give one per output: {', '.join(outputs)}")
    return result


def make_metrics(config: Config, outputs: list[str], problems: Problems):
    keras = _keras()
    metrics = config.compile.metrics

    def build(items, key):
        return [_make_object("metric", m, f"{key}.{i}", problems, keras.metrics, SPECIAL_METRICS)
                for i, m in enumerate(items)]

    if isinstance(metrics, dict):
        for out in metrics:
            if out not in outputs:
                problems.add(f"compile.metrics.{out}", f"the model has no output {show(out)}")
        return {out: build(items, f"compile.metrics.{out}") for out, items in metrics.items() if out in outputs}
    built = build(metrics, "compile.metrics")
    if len(outputs) > 1:
        return {out: build(metrics, "compile.metrics") for out in outputs}
    return built


def make_callbacks(config: Config, problems: Problems) -> list:
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
        params = {k: _keras_spec(v) for k, v in spec.items() if k != "name"}
        callback = instantiate(cls, params, key, name, problems)
        if callback is not None:
            callbacks.append(callback)
    return callbacks


def compile_model(model, config: Config, problems: Problems, steps_per_execution: int = 1) -> bool:
    """Compile in place; False (with problems recorded) when a name or argument is wrong."""
    outs = list(model.output_names) if hasattr(model, "output_names") else []
    optimizer = make_optimizer(config.compile.optimizer, problems)
    loss = make_loss(config, outs, problems)
    metrics = make_metrics(config, outs, problems)
    weights = config.compile.loss_weights
    if problems.lines:
        return False
    try:
        model.compile(optimizer=optimizer, loss=loss, loss_weights=weights, metrics=metrics,
                      jit_compile=config.compile.jit_compile, steps_per_execution=steps_per_execution)
    except Exception as exc:
        problems.add("compile", _first_line(exc))
        return False
    return True
