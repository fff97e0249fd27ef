"""The model's graph: the entries of `model.layers` (and of each sub-model's `layers`) called in order.

An entry is one of
- `{layer: Dense, units: 8, ...}`: a new Keras layer; an argument that is itself a layer is written the
  same way (`{layer: Bidirectional, wrapped: {layer: LSTM, units: 8}}`: `wrapped` is Keras' `layer`
  argument, whose name the entry's `layer:` key already holds; `backward_layer`, `cell` keep theirs);
- `{share: NAME}`: the layer of the earlier entry NAME called again: one set of weights, several calls;
- `{model: NAME}`: the sub-model `model.submodels.NAME`, a graph of its own built on its first call for
  the shapes it is called on; every call shares its weights;
- `{from_run: PATH, layers: "0:2", trainable: false}`: the model of an earlier run (PATH is its run
  folder, whose `model.keras` is read, or a `.keras` file), loaded in Keras' safe mode, whole or a range
  of its layers, frozen unless `trainable: true`.
Each takes `name` (the entry's node name, default `layer_<i>`) and `inputs` (earlier entries or data
inputs; default: the entry before). An entry refers only to entries before it, so a graph has no cycle.

`check_graph` checks everything knowable without data (every key, Keras name and argument, what `share`,
`model` and `inputs` name, cycles of sub-models); `build_model` calls every entry on the data's shapes and
reports a shape that does not fit (a shared layer or sub-model called on other shapes than at first
included) and a model file that is missing, unreadable or of other shapes. All problems carry their key.
"""

from __future__ import annotations

import random
import re
import zipfile
from pathlib import Path
from typing import Any

from kexp import layout
from kexp.config import GRAPH_ENTRIES, Config, show
from kexp.errors import Problems, close_matches
from kexp.keras_objects import _arguments as argument_names
from kexp.keras_objects import arguments_of, first_line, instantiate, keras_module, layer_class

KINDS = ("layer", *GRAPH_ENTRIES)
# the keys an entry of each kind takes besides its own ("layer" entries: any argument of their class)
ENTRY_KEYS = {"share": ("name", "inputs"), "model": ("name", "inputs"),
              "from_run": ("name", "inputs", "layers", "trainable")}
WRAPPED = "wrapped"  # a wrapper's `layer` argument (Bidirectional, TimeDistributed)
LAYER_RANGE = re.compile(r"\s*(-?\d+)?\s*:\s*(-?\d+)?\s*")
LISTED = 12  # layers of a model file listed in a problem about a range of them


def kind_of(spec: dict) -> str:
    """layer, share, model or from_run: what an entry makes (the schema lets one of these keys through)."""
    return next(k for k in KINDS if k in spec)


def node_names(entries: list[dict]) -> list[str]:
    """Each entry's node name: its `name`, else `layer_<i>`."""
    return [spec["name"] if isinstance(spec.get("name"), str) and spec["name"] else f"layer_{i}"
            for i, spec in enumerate(entries)]


def layer_range(text: Any) -> slice | None:
    """`"0:2"`, `":-1"`, `"1:"` as a slice (Python's slice semantics); None for anything else."""
    found = LAYER_RANGE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        return None
    return slice(*(int(part) if part else None for part in found.groups()))


# --------------------------------------------------------------------------- layers
def _is_layer(value: Any) -> bool:
    """An argument written as a layer: `{layer: LSTM, ...}`, or a list of them (StackedRNNCells' cells)."""
    if isinstance(value, list):
        return bool(value) and all(_is_layer(item) for item in value)
    return isinstance(value, dict) and "layer" in value


def _nested(value: dict, key: str, problems: Problems):
    """A layer given as another layer's argument."""
    if "inputs" in value:
        problems.add(f"{key}.inputs", "a layer given as an argument is called by the layer it is given to; "
                     "remove inputs")
        return None
    if not isinstance(value["layer"], str):
        problems.add(f"{key}.layer", f"must be text naming the Keras class; got {show(value['layer'])}")
        return None
    return make_layer(value, key, problems)


def make_layer(spec: dict, key: str, problems: Problems):
    """A layer instance from `{layer: Dense, units: 16, ...}` (the `inputs` key is the graph's). Arguments
    written as layers are made the same way; `wrapped` is handed to Keras as `layer`."""
    name = spec["layer"]
    cls, known = layer_class(name)
    if cls is None:
        problems.add(f"{key}.layer", f"unknown Keras layer{close_matches(name, known)}; got {show(name)}; "
                     "allowed: any class in keras.layers or registered with keras.saving")
        return None
    spec = {**spec, WRAPPED: {"layer": spec[WRAPPED]}} if isinstance(spec.get(WRAPPED), str) else spec
    layers = {arg: value for arg, value in spec.items() if arg != "layer" and _is_layer(value)}
    kwargs, ok = arguments_of({k: v for k, v in spec.items() if k not in layers}, ("layer", "inputs"), key, problems)
    nested_ok = True
    for arg, value in layers.items():
        made = ([_nested(item, f"{key}.{arg}.{j}", problems) for j, item in enumerate(value)]
                if isinstance(value, list) else _nested(value, f"{key}.{arg}", problems))
        nested_ok = nested_ok and made is not None and not (isinstance(made, list) and None in made)
        kwargs["layer" if arg == WRAPPED else arg] = made
    takes = argument_names(cls)
    if "layer" in takes:  # a wrapper: its `layer` argument is spelled `wrapped`
        allowed = [WRAPPED if arg == "layer" else arg for arg in takes]
        unknown = [arg for arg in spec if arg not in ("layer", "inputs", *allowed)]
        misspelt = WRAPPED not in spec and any(_is_layer(spec[arg]) for arg in unknown)
        for arg in unknown:
            hint = close_matches(arg, allowed) or (f" (did you mean {WRAPPED}?)" if misspelt else "")
            problems.add(f"{key}.{arg}", f"not an argument of {name}{hint}; allowed: {', '.join(allowed)}")
        if WRAPPED not in spec and not misspelt:
            problems.add(key, f"{name} wraps a layer: give it as {WRAPPED}: {{layer: CLASS, ...its arguments}} "
                         "(Keras' `layer` argument)")
        if unknown or WRAPPED not in spec:
            return None
    if not nested_ok:  # no layer to give it
        return None
    layer = instantiate(cls, kwargs, key, name, problems)  # the other arguments checked all the same
    return layer if ok else None


# --------------------------------------------------------------------------- checks without data
def check_graph(config: Config, problems: Problems) -> None:
    """model.layers and model.submodels without data, every problem once: each entry's keys, Keras name
    and arguments, names used twice, what `share`, `model` and `inputs` refer to (only entries before,
    so no cycle; a sub-model that uses itself, directly or through others, is a cycle), unused sub-models."""
    model = config.model
    submodels = model.submodels or {}
    uses: dict[str | None, list[tuple[str, str]]] = {None: []}  # graph (None: the model) -> (sub-model, key)
    _check_entries(model.layers, "model.layers", model.inputs, submodels, uses[None], problems)
    for name, sub in submodels.items():
        uses[name] = []
        _check_entries(sub.layers, f"model.submodels.{name}.layers", sub.inputs, submodels, uses[name], problems)
    reported: set[str] = set()
    for name in submodels:
        _report_cycle(name, [name], uses, reported, problems)
    reached, todo = set(), [None]
    while todo:
        for used, _ in uses.get(todo.pop(), []):
            if used not in reached:
                reached.add(used)
                todo.append(used)
    for name in submodels:
        if name not in reached:
            problems.add(f"model.submodels.{name}", f"is not used; call it with an entry {{model: {name}}} in "
                         "model.layers, or remove it")


def _report_cycle(start: str, path: list[str], uses: dict, reported: set, problems: Problems) -> None:
    for used, key in uses.get(path[-1], []):
        if used == start and start not in reported:
            reported.update(path)
            problems.add(f"{key}.model", f"a cycle of sub-models: {' -> '.join([*path, start])}; a sub-model "
                         "cannot contain itself")
        elif used not in path and used in uses:
            _report_cycle(start, [*path, used], uses, reported, problems)


def _check_entries(entries: list[dict], prefix: str, input_names: list[str] | None, submodels: dict,
                   uses: list, problems: Problems) -> None:
    names = node_names(entries)
    for i, spec in enumerate(entries):
        key, kind, node = f"{prefix}.{i}", kind_of(spec), names[i]
        if "name" in spec and not (isinstance(spec["name"], str) and spec["name"]):
            problems.add(f"{key}.name", f"must be text naming the entry; got {show(spec['name'])}")
        elif node in names[:i]:
            problems.add(f"{key}.name", f"{show(node)} is used twice (also {prefix}.{names.index(node)}); "
                         "names must be unique")
        elif input_names and node in input_names:
            problems.add(f"{key}.name", f"{show(node)} is also an input's name; names must be unique")
        elif kind in ("layer", "from_run") and node in submodels:
            problems.add(f"{key}.name", f"{show(node)} is also a sub-model's name (model.submodels); Keras "
                         "names each layer of a model once: rename one")
        _check_inputs(spec, key, i, names, input_names, prefix, problems)
        if kind == "layer":
            make_layer(spec, key, problems)
            continue
        allowed = (kind, *ENTRY_KEYS[kind])
        for extra in (k for k in spec if k not in allowed):
            why = "; the shared layer keeps the arguments of its entry" if kind == "share" else ""
            problems.add(f"{key}.{extra}", f"not a key of a `{kind}:` entry{close_matches(extra, allowed)}; "
                         f"allowed: {', '.join(allowed)}{why}")
        target = spec[kind]
        if kind == "share":
            _check_reference(target, f"{key}.share", i, names, prefix, input_names, problems, "share")
        elif kind == "model" and target not in submodels:
            defined = f"defined: {', '.join(submodels)}" if submodels else "model.submodels defines none"
            problems.add(f"{key}.model", f"unknown sub-model{close_matches(target, submodels)}; got {show(target)}; "
                         f"{defined}")
        elif kind == "model":
            uses.append((target, key))
        elif kind == "from_run":
            if "layers" in spec and layer_range(spec["layers"]) is None:
                problems.add(f"{key}.layers", "must be a range START:STOP of the model's layers (Python's slice, "
                             f"input layers not counted), e.g. \"0:2\" or \":-1\"; got {show(spec['layers'])}")
            if not isinstance(spec.get("trainable", False), bool):
                problems.add(f"{key}.trainable", f"must be true or false; got {show(spec['trainable'])}")


def _check_inputs(spec: dict, key: str, i: int, names: list[str], input_names: list[str] | None, prefix: str,
                  problems: Problems) -> None:
    refs = spec.get("inputs")
    if refs is None:
        return
    listed = [refs] if isinstance(refs, str) else refs
    if not isinstance(listed, list) or not listed or not all(isinstance(r, str) for r in listed):
        problems.add(f"{key}.inputs", f"must be a layer/input name or a list of them; got {show(refs)}")
        return
    for ref in listed:
        if _check_reference(ref, f"{key}.inputs", i, names, prefix, input_names, problems, "inputs"):
            return


def _check_reference(ref: str, key: str, i: int, names: list[str], prefix: str, input_names: list[str] | None,
                     problems: Problems, what: str) -> bool:
    """`ref` names an entry before entry `i` (or, for inputs, an input); True after recording a problem.
    Input names are known only when the graph lists them (`inputs:`); otherwise building checks them."""
    if ref in names[:i] or (what == "inputs" and ref in (input_names or ())):
        return False
    if ref == names[i]:
        problems.add(key, f"{show(ref)} is this entry itself: a cycle; an entry takes only entries before it")
    elif ref in names[i + 1:]:
        later = f"{prefix}.{names.index(ref, i + 1)}"
        problems.add(key, f"{show(ref)} is defined later ({later}); an entry takes only entries before it, so that "
                     f"the graph has no cycle: move it after {later}")
    elif what == "share" and ref in (input_names or ()):
        problems.add(key, f"{show(ref)} is an input, not a layer; share an entry before this one: "
                     f"{', '.join(names[:i]) or 'none'}")
    elif what == "share" or input_names is not None:
        before = [*(input_names or []), *names[:i]] if what == "inputs" else names[:i]
        problems.add(key, f"unknown {show(ref)}{close_matches(ref, before)}; defined before this entry: "
                     f"{', '.join(before) or 'none'}")
    else:
        return False
    return True


# --------------------------------------------------------------------------- building
def _compatible(given: tuple, wanted: tuple) -> bool:
    """Shapes that agree in rank and wherever both are known."""
    return len(given) == len(wanted) and all(g is None or w is None or g == w for g, w in zip(given, wanted))


def _shape_text(args: Any) -> str:
    """Per-sample shapes of what an entry is called on: `(4, 8)`, `[(3,), (5,)]`."""
    if isinstance(args, (list, tuple)):
        return "[" + ", ".join(_shape_text(a) for a in args) + "]"
    return str(tuple(args.shape[1:]))


def _channel_hint(layer, args, index: int, prefix: str) -> str:
    """The fix when a layer wants one more axis than it gets: images (n, 28, 28) into Conv2D."""
    spec = getattr(layer, "input_spec", None)
    spec = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    wanted = getattr(spec, "ndim", None) or getattr(spec, "min_ndim", None)
    shape = getattr(args, "shape", None)
    if wanted is None or shape is None or len(shape) + 1 != wanted:
        return ""
    per_sample = tuple(shape[1:])
    target = ", ".join(str(d) for d in (*per_sample, 1))
    where = "the data has" if index == 0 and prefix == "model.layers" else "its input has"
    return (f"{where} shape {per_sample} per sample, one axis short of the {wanted} dimensions (with the "
            f"batch) it needs: add a channel axis with preprocessing.channels_last: true, or insert "
            f"{{layer: Reshape, target_shape: [{target}]}} as {prefix}.{index}")


def _input_nodes(config: Config, shapes: dict, problems: Problems) -> dict[str, Any] | None:
    """`keras.Input` per model input, in the model's order; None (with a problem) when one is missing."""
    keras = keras_module()
    spec = config.model
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
    return nodes


def _layer_input(layer_spec: dict, key: str, nodes: dict, previous: Any, problems: Problems) -> Any:
    """What an entry is called on: the previous node, or the nodes its `inputs` name; None after a problem."""
    refs = layer_spec.get("inputs")
    if refs is None:
        return previous
    refs_list = [refs] if isinstance(refs, str) else refs
    missing = [r for r in refs_list if r not in nodes]
    if missing:
        problems.add(f"{key}.inputs", f"unknown {', '.join(map(show, missing))}"
                     f"{close_matches(missing[0], nodes)}; defined before this layer: {', '.join(nodes)}")
        return None
    return nodes[refs_list[0]] if isinstance(refs, str) else [nodes[r] for r in refs_list]


class _Graph:
    """Calls the entries of one config: sub-models built once, on their first call."""

    def __init__(self, config: Config, problems: Problems):
        self.config, self.problems = config, problems
        self.submodels: dict[str, tuple[Any, str, str]] = {}  # name -> (model, key of its first call, shapes)

    def call(self, entries: list[dict], prefix: str, nodes: dict) -> str | None:
        """Call each entry on its input, adding its output to `nodes`; the last node's name, or None."""
        previous, last = next(iter(nodes.values())), next(iter(nodes))
        made: dict[str, tuple[Any, str, str]] = {}  # node -> (its layer, the key that made it, first shapes)
        for i, (spec, node) in enumerate(zip(entries, node_names(entries))):
            key = f"{prefix}.{i}"
            if node in nodes:
                self.problems.add(f"{key}.name", f"{show(node)} is used twice; layer names must be unique")
                return None
            args = _layer_input(spec, key, nodes, previous, self.problems)
            if args is None:
                return None
            kind = kind_of(spec)
            if kind == "share":
                layer, origin, first = made[spec["share"]]
            else:
                layer, origin, first = self._make(kind, spec, key, node, args), key, _shape_text(args)
            if layer is None:
                return None
            if kind != "layer" and not self._fits(kind, spec, key, layer, args, origin, first):
                return None
            try:
                previous = layer(args)
            except Exception as exc:  # a shape the layer (or sub-model, or model file) does not take
                self._misfit(kind, spec, key, layer, args, exc, origin, first, i)
                return None
            nodes[node], made[node], last = previous, (layer, origin, first), node
        return last

    def _make(self, kind: str, spec: dict, key: str, node: str, args: Any):
        if kind == "layer":
            return make_layer(spec, key, self.problems)
        if kind == "model":
            return self._submodel(spec["model"], key, args)
        return self._transferred(spec, key, node)

    def _fits(self, kind, spec, key, layer, args, origin, first) -> bool:
        """A model (sub-model, earlier run's) called on the shapes it was built for: Keras does not check a
        model's call on symbolic inputs (a Dense inside would fail only in the first training step)."""
        model = layer if isinstance(layer, keras_module().Model) else None
        if model is None:
            return True
        given = args if isinstance(args, (list, tuple)) else [args]
        wanted = model.inputs
        if len(given) == len(wanted) and all(_compatible(g.shape, w.shape) for g, w in zip(given, wanted)):
            return True
        self._misfit(kind, spec, key, layer, args, None, origin, first, 0)
        return False

    def _misfit(self, kind, spec, key, layer, args, exc, origin, first, i) -> None:
        shapes = _shape_text(args)
        said = f": {first_line(exc)}" if exc is not None else ""
        if kind == "layer":
            hint = _channel_hint(layer, args, i, key.rsplit(".", 1)[0])
            message = f"{spec['layer']} cannot take its input: {hint or first_line(exc)}"
            self.problems.add(key, message)
        elif kind == "share":
            self.problems.add(f"{key}.inputs", f"the shared layer of {origin} ({spec['share']}) was first called "
                              f"on {first}; this call gives {shapes}; a shared layer's inputs must fit its weights"
                              f"{said}")
        elif kind == "model":
            name = spec["model"]
            _, used, built = self.submodels.get(name, (None, key, first))
            self.problems.add(f"{key}.inputs", f"sub-model {name} was built for {built} (its first call, {used}); "
                              f"this call gives {shapes}; every call of a sub-model shares its weights, so takes "
                              f"those shapes{said}")
        else:
            wanted = _shape_text(layer.inputs if len(layer.inputs) > 1 else layer.inputs[0])
            self.problems.add(f"{key}.inputs", f"the model of {spec['from_run']} takes {wanted}; got {shapes}")

    def _submodel(self, name: str, key: str, args: Any):
        """The sub-model `name`, built on its first call for the shapes of `args`."""
        if name in self.submodels:
            return self.submodels[name][0]
        keras = keras_module()
        spec = self.config.model.submodels[name]
        tensors = args if isinstance(args, list) else [args]
        if len(tensors) != len(spec.inputs):
            self.problems.add(f"{key}.inputs", f"sub-model {name} takes {len(spec.inputs)} input(s) "
                              f"({', '.join(spec.inputs)}); got {len(tensors)}")
            return None
        nodes = {n: keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=f"{name}_{n}")
                 for n, t in zip(spec.inputs, tensors)}
        inputs = list(nodes.values())
        last = self.call(spec.layers, f"model.submodels.{name}.layers", nodes)
        if last is None:
            return None
        outputs = spec.outputs or [last]
        missing = [o for o in outputs if o not in nodes or o in spec.inputs]
        if missing:
            self.problems.add(f"model.submodels.{name}.outputs", f"unknown entry {', '.join(map(show, missing))}"
                              f"{close_matches(missing[0], node_names(spec.layers))}; entries: "
                              f"{', '.join(node_names(spec.layers))}")
            return None
        try:
            model = keras.Model(inputs=inputs[0] if len(inputs) == 1 else inputs,
                                outputs=nodes[outputs[0]] if len(outputs) == 1 else [nodes[o] for o in outputs],
                                name=name)
        except Exception as exc:
            self.problems.add(f"model.submodels.{name}", first_line(exc))
            return None
        self.submodels[name] = (model, key, _shape_text(args))
        return model

    def _transferred(self, spec: dict, key: str, node: str):
        """The model of an earlier run (or its layer range) as one layer named `node`, frozen unless told."""
        model = load_model_file(spec["from_run"], f"{key}.from_run", self.problems)
        if model is None:
            return None
        part = model_part(model, spec.get("layers"), node, f"{key}.layers", spec["from_run"], self.problems)
        if part is not None:
            part.trainable = spec.get("trainable", False)
        return part


def load_model_file(where: str, key: str, problems: Problems):
    """The Keras model of a run folder (its model.keras) or of a .keras file, loaded in Keras' safe mode
    (no code is deserialized) without its training state; None with a problem naming `key` and the path."""
    path = Path(where)
    file = path / layout.MODEL if path.is_dir() else path
    if not file.is_file():
        problems.add(key, f"no {layout.MODEL} in the run folder {path} (did its training finish?)" if path.is_dir()
                     else f"no such run folder or .keras file: {path}")
        return None
    if not zipfile.is_zipfile(file):
        problems.add(key, f"{file}: not a Keras model file (a .keras file is a zip archive)")
        return None
    try:
        return keras_module().saving.load_model(file, compile=False, safe_mode=True)
    except Exception as exc:
        problems.add(key, f"{file}: cannot be loaded in Keras' safe mode: {first_line(exc)}")
        return None


def model_part(model, text: str | None, name: str, key: str, where: str, problems: Problems):
    """A new model named `name` over `model`'s layers (its weights): all of them, or the range `text`
    (START:STOP over the layers without the input layers), from the input of the first to the output of
    the last; None with a problem when the range selects nothing or is not one connected piece."""
    keras = keras_module()
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    listing = ", ".join(f"{i} {layer.name} ({type(layer).__name__})" for i, layer in enumerate(layers[:LISTED]))
    listing += f", ... ({len(layers)} layers)" if len(layers) > LISTED else ""
    chosen = layers if text is None else layers[layer_range(text)]
    if not chosen:
        problems.add(key, f"{show(text)} selects no layer of {where}; its layers: {listing}")
        return None
    try:
        if text is None:
            return keras.Model(model.input, model.output, name=name)
        return keras.Model(chosen[0].input, chosen[-1].output, name=name)
    except Exception as exc:
        problems.add(key, f"layers {text} of {where} are not one piece from the input of {chosen[0].name} to the "
                     f"output of {chosen[-1].name} ({first_line(exc)}); its layers: {listing}")
        return None


def build_model(config: Config, input_shape: Any, problems: Problems, name: str | None = None):
    """A functional Keras model for these input shapes; sequential stacks are graphs of one chain.

    `input_shape` is a tuple, or a mapping input name -> tuple for several inputs."""
    keras = keras_module()
    shapes = input_shape if isinstance(input_shape, dict) else {"input": input_shape}
    nodes = _input_nodes(config, shapes, problems)
    if nodes is None:
        return None
    order = list(nodes)
    before = len(problems.lines)
    # checking makes throwaway layers, whose unseeded initializers draw from Python's random state (Keras'
    # make_default_seed): put it back, so the layers built next get the weights the seed gives them
    state = random.getstate()
    check_graph(config, problems)
    random.setstate(state)
    if len(problems.lines) > before:
        return None
    last_name = _Graph(config, problems).call(config.model.layers, "model.layers", nodes)
    if last_name is None:
        return None
    outputs = config.model.outputs or [last_name]
    missing = [o for o in outputs if o not in nodes]
    if missing:
        problems.add("model.outputs", f"unknown layer {', '.join(map(show, missing))}; "
                     f"defined: {', '.join(nodes)}")
        return None
    single_input = len(order) == 1 and not isinstance(input_shape, dict)
    try:
        return keras.Model(
            inputs=nodes[order[0]] if single_input else {i: nodes[i] for i in order},
            outputs=nodes[outputs[0]] if len(outputs) == 1 else {o: nodes[o] for o in outputs},
            name=name or config.name.replace(".", "_"),
        )
    except Exception as exc:  # e.g. two layers with one name: a sub-model's and an entry's
        problems.add("model", first_line(exc))
        return None
