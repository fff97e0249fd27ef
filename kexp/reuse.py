"""Compiled models kept by a process for its next tasks.

Building a model is cheap; tracing and compiling its training and evaluation steps (tf.function with
XLA, jax.jit) is not: about a second for a small model, which is most of a short task. The folds of
one trial, and the trials of a sweep that differ only in the learning rate, compile the same steps.
So a process keeps its last few compiled models (`MAX_KEPT`, within `MAX_BYTES` of variables) by what
the compiled steps depend on: the model and compile sections (the learning rate aside, when it is a
number: a variable of the optimizer), `steps_per_execution` and the input shapes.

`compiled_model(config, input_shape, spe)` builds the model from the seeded random state as a new
task does (the initial weights, random-layer seeds and the model's names are those of a new model)
and, when a kept model has the same key, copies that state into it, puts its optimizer back to its
state before any step (slots, iterations) with this config's learning rate, and returns it; Keras
resets the metrics at each epoch. On TensorFlow and JAX; PyTorch compiles nothing, and nothing is
kept there. A task that trains a kept model gives the same numbers, to the bit,
as one that builds a new model (tests/test_reuse.py). A model whose training failed is dropped
(`forget`), since Keras may leave state of the failed `fit` behind.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

import numpy as np

from kexp.backend import current
from kexp.config import Config
from kexp.errors import ConfigError, Problems
from kexp.models import build_model, compile_model

MAX_KEPT = 8  # models kept per process
MAX_BYTES = 512 * 2**20  # ... whose variables (weights, optimizer slots) take at most this much memory
# PyTorch compiles nothing (Keras runs it eagerly), and a kept model there trains to other numbers than
# a new one: nothing is kept on it
KEEPS = {"tensorflow": True, "jax": True, "torch": False}

_kept: OrderedDict[str, tuple[Any, list[np.ndarray]]] = OrderedDict()  # key -> (model, optimizer state)


def key_of(config: Config, input_shape, steps_per_execution: int) -> tuple[str, float | None]:
    """What a model's compiled steps depend on, and the learning rate set apart from it (None when the
    rate is not a plain number: a schedule is part of the key)."""
    compiled = config.to_dict()["compile"]
    optimizer = compiled.get("optimizer")
    rate = None
    if isinstance(optimizer, dict) and isinstance(optimizer.get("learning_rate"), (int, float)):
        rate = float(optimizer["learning_rate"])
        compiled = {**compiled, "optimizer": {k: v for k, v in optimizer.items() if k != "learning_rate"}}
    key = json.dumps([config.to_dict()["model"], compiled, steps_per_execution, _shapes(input_shape)],
                     sort_keys=True, default=str)
    return key, rate


def compiled_model(config: Config, input_shape, steps_per_execution: int):
    """A compiled model in the state a new one starts from (see the module docstring). Raises
    ConfigError with the problems of a model that does not build or compile."""
    problems = Problems()
    model = build_model(config, input_shape, problems)
    if model is None:
        raise ConfigError(problems.lines)
    key, rate = key_of(config, input_shape, steps_per_execution)
    kept = _kept.get(key) if KEEPS[current()] else None
    if kept is not None and _same_variables(kept[0], model):
        _kept.move_to_end(key)
        old, optimizer_state = kept
        for target, source in zip(old.variables, model.variables):
            target.assign(source)
        for variable, value in zip(old.optimizer.variables, optimizer_state):
            variable.assign(value)
        if rate is not None:
            old.optimizer.learning_rate = rate
        return old
    if not compile_model(model, config, problems, steps_per_execution=steps_per_execution):
        raise ConfigError(problems.lines)
    if not KEEPS[current()]:
        return model
    model.optimizer.build(model.trainable_variables)  # as fit would; its state before any step is kept
    from keras import ops

    _kept[key] = (model, [ops.convert_to_numpy(variable) for variable in model.optimizer.variables])
    _evict()
    return model


def forget(model) -> None:
    """Drop a kept model (its training failed or was stopped)."""
    for key, (kept, _) in list(_kept.items()):
        if kept is model:
            del _kept[key]


def clear() -> None:
    _kept.clear()


def _same_variables(old, new) -> bool:
    ours, theirs = old.variables, new.variables
    return len(ours) == len(theirs) and all(tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype
                                            for a, b in zip(ours, theirs))


def _bytes(model) -> int:
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
               for v in [*model.variables, *model.optimizer.variables])


def _evict() -> None:
    while len(_kept) > MAX_KEPT or len(_kept) > 1 and sum(_bytes(m) for m, _ in _kept.values()) > MAX_BYTES:
        _kept.popitem(last=False)


def _shapes(shape) -> Any:
    if isinstance(shape, dict):
        return {k: _shapes(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)):
        return [_shapes(v) for v in shape]
    return shape
