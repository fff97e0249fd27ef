"""Keras objects by name: what a config name stands for, which arguments it takes, close spellings.

Every name resolves through Keras' own namespaces and `get` functions (layers, optimizers, losses,
metrics, callbacks, and whatever they take: regularizers, initializers, constraints, activations,
learning-rate schedules), plus objects registered with `keras.saving.register_keras_serializable`.
Nothing is imported or evaluated from a dotted path, and no list of Keras names is kept here: a new
Keras release needs no change. Problems are collected in a `Problems`, not raised one by one.
`with_keras_defaults` fills Keras' defaults into a config dict for the run folder.
"""

from __future__ import annotations

import copy
import functools
import inspect
import re
from typing import Any

from kexp.config import show
from kexp.errors import Problems, close_matches

# the Keras namespace that resolves a nested object, by the argument's name
NESTED = (
    (re.compile(r"(.*_)?activation$"), "activations", "activation"),
    (re.compile(r".*initializer$"), "initializers", "initializer"),
    (re.compile(r".*regularizer$"), "regularizers", "regularizer"),
    (re.compile(r".*constraint$"), "constraints", "constraint"),
)


def keras_module():
    import keras

    return keras


def public(module, base: type | None = None) -> dict[str, Any]:
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


def custom_objects() -> dict[str, Any]:
    """Objects registered with `keras.saving.register_keras_serializable`, by name without package."""
    keras = keras_module()
    return {name.split(">")[-1]: obj for name, obj in keras.saving.get_custom_objects().items()}


def registered(name: Any) -> Any:
    """The object registered with `keras.saving.register_keras_serializable` as `name`: "package>name"
    as Keras spells it, or the plain name (what configs write); None if there is none."""
    if not isinstance(name, str):
        return None
    keras = keras_module()
    return keras.saving.get_registered_object(name) if ">" in name else custom_objects().get(name)


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
def short_names(module) -> tuple[str, ...]:
    """Keras' own short forms of a namespace's functions (`mse`, `mae`, `kld`): initials of the public
    function names that the namespace's `get` accepts."""
    found = []
    for name, obj in public(module).items():
        short = _initials(name)
        if "_" in name and not isinstance(obj, type) and short not in found:
            try:
                module.get(short)
            except Exception:
                continue
            found.append(short)
    return tuple(found)


def keras_spec(value: Any) -> Any:
    """Nested `{name: L2, l2: 0.01}` -> Keras' `{class_name: L2, config: {l2: 0.01}}`."""
    if isinstance(value, dict) and isinstance(value.get("name"), str) and "class_name" not in value:
        return {"class_name": value["name"], "config": {k: v for k, v in value.items() if k != "name"}}
    return value


def first_line(exc: Exception) -> str:
    """Keras' complaint in one line; on a backend other than TensorFlow, a complaint about TensorFlow or
    the backend (Hashing or TFSMLayer need TensorFlow) says which backend the run is on."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    from kexp.backend import current

    name = current()
    if name in (None, "tensorflow") or not re.search(r"tensorflow|backend", line, re.IGNORECASE):
        return line
    return f"{line} (on the {name} backend)"


def snake(name: str) -> str:
    """Keras' snake-case form of a class name (AUC -> auc, MeanIoU -> mean_io_u)."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


# --------------------------------------------------------------------------- arguments
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


def unknown_arguments(cls, params: dict, key: str, label: str, problems: Problems) -> list[str]:
    """The names in `params` that `cls` does not take, each recorded as a problem with the allowed ones."""
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
    if check_arguments and unknown_arguments(cls, params, key, label, problems):
        return None
    try:
        return cls(**params)
    except Exception as exc:
        if not unknown_arguments(cls, params, key, label, problems):
            problems.add(key, f"{label}: {first_line(exc)}")
    return None


def default_name_is_none(cls) -> bool:
    """Whether the class names an instance only when told (Keras then numbers them: auc, auc_1)."""
    try:
        parameter = inspect.signature(cls).parameters.get("name")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is None


# --------------------------------------------------------------------------- nested objects
def _nested_namespace(arg: str, value: Any):
    """(Keras namespace, kind) that resolves argument `arg`'s value, or None."""
    keras = keras_module()
    if arg == "learning_rate" and isinstance(value, dict):
        return keras.optimizers.schedules, "learning-rate schedule"
    return next(((getattr(keras, module), kind) for pattern, module, kind in NESTED if pattern.fullmatch(arg)),
                None)


def _nested_class(module, name: Any, value: Any):
    """What `name` stands for in a Keras namespace: a class, or a function for a bare name."""
    known = {**public(module), **custom_objects()}
    cls = known.get(name) if isinstance(name, str) else None
    if cls is None and hasattr(module, "get"):
        try:
            obj = module.get(name if isinstance(value, str) else keras_spec({"name": name}))
            cls = obj if isinstance(obj, type) or not isinstance(value, dict) else type(obj)
        except Exception:
            cls = None
    return cls, known


def nested(arg: str, value: Any, key: str, problems: Problems) -> Any:
    """A nested Keras object given as an argument: a name or `{name: L2, l2: 0.01}`, resolved through
    the namespace its argument name implies (activations, initializers, regularizers, constraints;
    a learning-rate schedule for `learning_rate`), with a close match for a typo. Returns the value to
    hand to Keras, or None after recording a problem."""
    if not isinstance(arg, str):
        return keras_spec(value)
    found = _nested_namespace(arg, value)
    if found is None or not (isinstance(value, str) or (isinstance(value, dict) and "name" in value)):
        return keras_spec(value)
    module, kind = found
    name = value if isinstance(value, str) else value["name"]
    cls, known = _nested_class(module, name, value)
    if cls is None:
        where = key if isinstance(value, str) else f"{key}.name"
        namespace = module.__name__.removeprefix("keras.")
        problems.add(where, f"unknown Keras {kind}{suggest(name, [*known, *short_names(module)])}; "
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


def arguments_of(spec: dict, skip: tuple[str, ...], key: str, problems: Problems) -> tuple[dict, bool]:
    """Keyword arguments of a spec with nested objects resolved; False when one did not resolve
    (the argument is left out, so that the remaining arguments can still be checked)."""
    params, ok = {}, True
    for k, v in spec.items():
        if k in skip:
            continue
        before = len(problems.lines)
        value = nested(k, v, f"{key}.{k}", problems)
        if len(problems.lines) > before:
            ok = False
            continue
        params[k] = value
    return params, ok


# --------------------------------------------------------------------------- classes by name
def layer_class(name: str):
    """(the layer class named `name` or None, every layer class name): keras.layers and registered."""
    keras = keras_module()
    classes = {**public(keras.layers, keras.layers.Layer), **custom_objects()}
    return classes.get(name), sorted(n for n, c in classes.items() if isinstance(c, type))


@functools.cache
def optimizers() -> dict[str, type]:
    """The optimizers a config can name, by lower-case name as Keras' own lookup takes them
    (`keras.optimizers.get` is case-insensitive: adam, Adam, ADAM): the subclasses of
    keras.optimizers.Optimizer that Keras can build from the name alone. Wrappers whose constructor
    needs another optimizer (LossScaleOptimizer, MultiOptimizer) are left out by their signature."""
    keras = keras_module()
    base = keras.optimizers.Optimizer
    found = {}
    for name, cls in public(keras.optimizers, base).items():
        try:
            params = inspect.signature(cls).parameters.values()
        except (TypeError, ValueError):
            continue
        if cls is not base and all(p.default is not p.empty or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
                                   for p in params):
            found[name.lower()] = cls
    return found


def callbacks() -> dict[str, type]:
    """The callbacks a config can name: the subclasses of keras.callbacks.Callback and registered
    objects, but for the base class and what `fit` makes itself (see FIT_MAKES)."""
    keras = keras_module()
    known = {**public(keras.callbacks, keras.callbacks.Callback), **custom_objects()}
    return {name: cls for name, cls in known.items()
            if cls is not keras.callbacks.Callback and name not in FIT_MAKES}


# Keras' `fit` makes these itself (a CallbackList holding a History and, when verbose, a ProgbarLogger);
# kexp reads the History and shows its own progress, so a configured one would run twice.
FIT_MAKES = frozenset({"CallbackList", "History", "ProgbarLogger"})


def loss_name(name: Any) -> str | None:
    """Keras' canonical name of a loss identifier, as `keras.losses.get` resolves it: `bce` ->
    binary_crossentropy, `BinaryCrossentropy` -> binary_crossentropy, `kld` -> kl_divergence;
    None for a name Keras does not know."""
    try:
        obj = keras_module().losses.get(name)
    except Exception:
        return None
    if inspect.isfunction(obj):
        return obj.__name__
    return snake((obj if isinstance(obj, type) else type(obj)).__name__)


# --------------------------------------------------------------------------- Keras' defaults
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


def _fill(spec: Any, cls: Any) -> None:
    if isinstance(spec, dict) and isinstance(cls, type):
        for arg, default in _scalar_defaults(cls).items():
            spec.setdefault(arg, default)


def _class_of(module, name: Any) -> Any:
    """The class `module.get(name)` resolves to; None for a function (`mse` takes no arguments)."""
    try:
        obj = module.get(name)
    except Exception:
        return None
    return obj if isinstance(obj, type) else None


def with_keras_defaults(config: dict) -> dict:
    """A copy of a resolved config dict in which every named Keras object (layers, the optimizer, losses,
    metrics, callbacks) also holds Keras' defaults of its scalar arguments: Adam's `learning_rate: 0.001`
    for a config that left it out. Written to the run's config.json, so that `compare` shows and filters
    the value a run really used without importing Keras. Names Keras does not know stay as they are."""
    keras = keras_module()
    out = copy.deepcopy(config)
    for spec in out.get("model", {}).get("layers", []):
        if isinstance(spec, dict):
            _fill(spec, layer_class(spec.get("layer"))[0])
    compile_ = out.get("compile", {})
    optimizer = compile_.get("optimizer")
    if isinstance(optimizer, dict) and isinstance(optimizer.get("name"), str):
        _fill(optimizer, optimizers().get(optimizer["name"].lower()))
    loss = compile_.get("loss")
    for spec in (loss.values() if isinstance(loss, dict) and "name" not in loss else [loss]):
        if isinstance(spec, dict) and len(spec) > 1:  # a bare name is handed to Keras as a name
            _fill(spec, _class_of(keras.losses, spec.get("name")))
    metrics = compile_.get("metrics")
    for items in (metrics.values() if isinstance(metrics, dict) else [metrics or []]):
        for spec in items:
            if isinstance(spec, dict) and len(spec) > 1:
                _fill(spec, _class_of(keras.metrics, spec.get("name")))
    known_callbacks = {**public(keras.callbacks, keras.callbacks.Callback), **custom_objects()}
    for spec in out.get("training", {}).get("callbacks", []):
        if isinstance(spec, dict):
            _fill(spec, known_callbacks.get(spec.get("name")))
    return out
