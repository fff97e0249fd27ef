"""The experiment config: every key, its default and what it allows, in one place.

A config is YAML read with `yaml.safe_load` semantics only (data, never code). `load_config` applies
`--set` overrides, validates the whole file and raises one `ConfigError` that lists every problem as
`FILE: dotted.key: what is wrong; got X; allowed: ...`. This module never imports TensorFlow: checks
that need Keras' registries or the data live in `kexp.models` / `kexp.checks`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kexp.data import dataset_names  # the one registry of dataset names (imports no loader)
from kexp.errors import ConfigError, close_matches

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
MAX_NODES = 100_000  # a config with more YAML nodes (after anchors expand) is refused
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # what NumPy and scikit-learn take

PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
Columns = list[str] | dict[str, list[str]]


class Section(BaseModel):
    """Strict base: unknown keys are errors, no type coercion, no NaN/inf."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


# --------------------------------------------------------------------------- dataset
class _KerasFile(Section):
    data_dir: str | None = None  # folder with Keras-format files; default $KEXP_DATA_DIR
    file_hash: str | None = None  # sha256 of a downloaded file; default: Keras' published hash


class ImdbData(_KerasFile):
    name: Literal[dataset_names("keras.load_imdb")]
    num_words: PosInt | None = None
    skip_top: NonNegInt = 0
    maxlen: PosInt | None = None
    seed: Seed = 113
    start_char: int | None = 1
    oov_char: int | None = 2
    index_from: NonNegInt = 3


class ReutersData(ImdbData):
    name: Literal[dataset_names("keras.load_reuters")]  # type: ignore[assignment]
    test_split: Fraction = 0.2


class BostonData(_KerasFile):
    name: Literal[dataset_names("keras.load_boston_housing")]
    test_split: Fraction = 0.2
    seed: Seed = 113


class ImageData(_KerasFile):
    name: Literal[dataset_names("keras.load_mnist", "keras.load_fashion_mnist", "keras.load_cifar10")]


class SklearnData(Section):
    name: Literal[dataset_names("sklearn.load_sklearn")]
    features: Columns | None = None  # a list of feature names, or input name -> feature names
    test_split: Fraction = 0.2
    seed: Seed = 0
    stratify: bool = True  # classification sets only
    positive_class: str | dict[str, str] | None = None  # binary: this class name -> id 1 (the other 0)


class CsvData(Section):
    name: Literal[dataset_names("csv.load_csv")]
    path: str
    target: str | dict[str, str]  # column, or output name -> column
    features: Columns | None = None  # default: every other column
    test_path: str | None = None
    test_split: Fraction | None = None  # used when test_path is absent (default 0.2)
    seed: Seed = 0
    delimiter: str = ","
    categorical: list[str] = []  # feature columns of category strings: one-hot encoded, fitted per fold
    missing: Literal["error", "drop", "mean", "most_frequent"] = "error"  # empty/NA feature cells
    positive_class: str | dict[str, str] | None = None  # binary string labels: this one -> id 1
    sample_weight: str | None = None  # a column of per-row training weights (>= 0); then not a feature


class NpzData(Section):
    name: Literal[dataset_names("npz.load_npz")]
    path: str
    x: str | dict[str, str] = "x_train"  # array name, or input name -> array name
    y: str | dict[str, str] = "y_train"
    x_test: str | dict[str, str] | None = "x_test"
    y_test: str | dict[str, str] | None = "y_test"
    test_split: Fraction | None = None  # used when the file has no test arrays
    seed: Seed = 0
    missing: Literal["error", "drop", "mean", "most_frequent"] = "error"  # NaN input values
    positive_class: str | dict[str, str] | None = None  # binary string labels: this one -> id 1
    sample_weight: str | None = None  # an array of per-row training weights (>= 0), as long as x


Dataset = Annotated[
    ImdbData | ReutersData | BostonData | ImageData | SklearnData | CsvData | NpzData,
    Field(discriminator="name"),
]


# --------------------------------------------------------------------------- preprocessing
class PadSequences(Section):
    maxlen: PosInt
    padding: Literal["pre", "post"] = "pre"
    truncating: Literal["pre", "post"] = "pre"
    value: int = 0


class Preprocessing(Section):
    multi_hot: PosInt | None = None  # integer sequences -> 0/1 vectors this wide
    pad_sequences: PadSequences | None = None  # integer sequences -> (n, maxlen) for Embedding
    scale: float | None = None  # multiply inputs, e.g. 0.00392156862745098 (1/255) for images
    flatten: bool = False  # (n, a, b, ...) -> (n, a*b*...)
    standardize: bool = False  # (x - mean) / std, fitted on the training part only
    labels: Literal["binary", "categorical", "sparse", "raw"] | None = None  # default: from the loss
    channels_last: bool = False  # (n, height, width) images -> (n, height, width, 1) for Conv2D

    @model_validator(mode="after")
    def _one_sequence_encoding(self):
        if self.multi_hot is not None and self.pad_sequences is not None:
            raise ValueError("multi_hot and pad_sequences exclude each other; keep one")
        if self.channels_last and self.flatten:
            raise ValueError("channels_last and flatten exclude each other (a channel axis for Conv2D, "
                             "or flat rows for Dense); keep one")
        return self


# --------------------------------------------------------------------------- model
def _spec(key: str, *others: str):
    """A Keras object written as `"rmsprop"` or `{KEY: rmsprop, **arguments}`, kept as a mapping; `others`:
    keys that may stand in KEY's place (exactly one of them, naming something by text)."""

    def shorthand(value: Any) -> Any:
        return {key: value} if isinstance(value, str) else value

    def needs_key(value: dict) -> dict:
        given = [k for k in (key, *others) if k in value]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} exclude each other; keep one")
        if not isinstance(value.get(given[0] if given else key), str):
            if given and given[0] != key:
                raise ValueError(f"{given[0]}: must be text; got {show(value[given[0]])}")
            raise ValueError(f"needs a '{key}' key naming the Keras class; got keys {sorted(value)}")
        return value

    # the JSON Schema (`kexp schema`) takes what the file may hold: the name alone, or a mapping
    return Annotated[dict[str, Any], BeforeValidator(shorthand, json_schema_input_type=str | dict[str, Any]),
                     AfterValidator(needs_key)]


# model.layers entries that make no new layer (kexp.graph): an earlier entry's layer called again, a
# sub-model of model.submodels, the model of an earlier run (a run folder or a .keras file)
GRAPH_ENTRIES = ("share", "model", "from_run")
LayerSpec = _spec("layer", *GRAPH_ENTRIES)
ObjectSpec = _spec("name")


class SubModel(Section):
    layers: Annotated[list[LayerSpec], Field(min_length=1)]  # its own graph, as model.layers
    inputs: Annotated[list[str], Field(min_length=1)] = ["input"]  # its inputs, in the order an entry passes them
    outputs: list[str] | None = None  # its output entries (default: the last)


class Model(Section):
    layers: Annotated[list[LayerSpec], Field(min_length=1)]
    inputs: list[str] | None = None  # functional graphs: data inputs in order (default: the data's)
    outputs: list[str] | None = None  # functional graphs: output layer names (default: the last)
    submodels: dict[Annotated[str, Field(pattern=NAME_PATTERN)], SubModel] | None = None  # name -> a graph that
    # entries `{model: name}` call like a layer, one set of weights however often

    @property
    def is_graph(self) -> bool:
        return self.inputs is not None or self.outputs is not None or any(
            "inputs" in layer for layer in self.layers
        )


class Compile(Section):
    optimizer: ObjectSpec = Field(default_factory=lambda: {"name": "rmsprop"})
    loss: ObjectSpec | dict[str, ObjectSpec]  # one loss, or output name -> loss
    loss_weights: dict[str, float] | list[float] | None = None
    metrics: list[ObjectSpec] | dict[str, list[ObjectSpec]] = Field(default_factory=list)
    jit_compile: bool | Literal["auto"] = "auto"

    @field_validator("loss", mode="before")
    @classmethod
    def _loss(cls, value):
        # a mapping without `name` lists one loss per output
        if isinstance(value, dict) and "name" not in value:
            return {out: {"name": item} if isinstance(item, str) else item for out, item in value.items()}
        return {"name": value} if isinstance(value, str) else value

    @property
    def per_output_loss(self) -> bool:
        return "name" not in self.loss


class Training(Section):
    epochs: PosInt = 10
    batch_size: PosInt = 32
    shuffle: bool = True
    callbacks: list[ObjectSpec] = Field(default_factory=list)
    steps_per_execution: PosInt | Literal["epoch"] = "epoch"  # "epoch": one host round trip per epoch
    class_weight: Literal["balanced"] | dict[int | str, float] | None = None  # each training row's loss
    # weighted by its class: balanced (scikit-learn's n / (classes * count) on each split's training labels)
    # or {class id or name: weight >= 0}, classes not named 1; single-output models only

    @field_validator("class_weight")
    @classmethod
    def _weights_not_negative(cls, value):
        negative = [f"{key} ({weight:g})" for key, weight in (value.items() if isinstance(value, dict) else ())
                    if weight < 0]
        if negative:
            raise ValueError(f"a class weight must be >= 0; got {', '.join(negative)}")
        return value


# --------------------------------------------------------------------------- validation
class Final(Section):
    epochs: PosInt | Literal["best"] = "best"  # "best": the best epoch found on validation


class Smoothing(Section):
    factor: Annotated[float, Field(ge=0, lt=1)] = 0.9  # exponential moving average factor
    skip: NonNegInt = 0  # leading points dropped before smoothing


class _Scheme(Section):
    shuffle: bool = False
    stratify: bool = False
    seed: Seed | None = None  # default: the config's seed (only used with shuffle)
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    final: Final | None = None  # retrain on all training data, then evaluate once on test

    @model_validator(mode="after")
    def _seed_needs_shuffle(self):
        if self.seed is not None and not self.shuffle:
            raise ValueError("seed has no effect when shuffle is false; remove it or set shuffle: true")
        return self


class Holdout(_Scheme):
    scheme: Literal["holdout"]
    size: PosInt | Fraction = 0.2  # a count (the first N samples unless shuffled) or a fraction

    @model_validator(mode="after")
    def _stratify_needs_shuffle(self):
        if self.stratify and not self.shuffle:
            raise ValueError("stratify has no effect when shuffle is false; set shuffle: true")
        return self


class KFold(_Scheme):
    scheme: Literal["kfold"]
    n_splits: Annotated[int, Field(ge=2)] = 5
    repeats: PosInt = 1  # iterated K-fold: P x K models, reshuffled each repeat
    smoothing: Smoothing | None = None

    @model_validator(mode="after")
    def _repeats_need_shuffle(self):
        if self.repeats > 1 and not self.shuffle:
            raise ValueError(
                "repeats > 1 gives the same folds every repeat without shuffling; set shuffle: true"
            )
        return self


def _default_scheme(value: Any) -> Any:
    """A `validation:` section without `scheme` is a hold-out, as documented."""
    if isinstance(value, dict) and "scheme" not in value:
        return {"scheme": "holdout", **value}
    return value


SCHEMES = {"holdout": Holdout, "kfold": KFold}
Validation = Annotated[Holdout | KFold, Field(discriminator="scheme"), BeforeValidator(_default_scheme)]


# --------------------------------------------------------------------------- search (kexp sweep)
class Search(Section):
    """`kexp sweep`'s search; kexp.search checks the space and expands it into trials."""

    method: Literal["grid", "random", "halving", "tpe"] = "grid"  # grid: every combination, in a seeded
    #   shuffled order; halving: successive halving of the grid (or of `trials` random points); tpe: Optuna
    space: dict[str, Any]  # dotted key (as --set) -> [choices] or {min, max, step?, log?}
    trials: PosInt | None = None  # random, tpe: how many distinct points (halving: sampled, else the grid)
    eta: Annotated[int, Field(ge=2)] = 3  # halving: 1 in eta trials goes on to the next rung
    min_epochs: PosInt | None = None  # halving: the first rung's epochs (default: max_epochs / eta^2)
    max_epochs: PosInt | None = None  # halving: the last rung's (default: training.epochs)
    batch: PosInt = 1  # tpe: points asked at a time (the same batch gives the same sweep on any workers)
    seed: Seed | None = None  # the sampling seed; default: the config's seed
    seeds: PosInt = 1  # each trial trained with seeds seed, seed+1, ... and scored on their mean
    objective: str | None = None  # a validation metric (val_...); default: validation.monitor
    limit: PosInt = 100  # a larger grid runs only with `kexp sweep --yes`
    final: bool = False  # retrain the best config on all training data and test it: the test set, once


# --------------------------------------------------------------------------- executor (where tasks run)
class Executor(Section):
    """Where the split tasks run (`kexp kfold`/`kexp sweep`); never changes the metrics or the run.
    `--executor`/`--address` override it; see README: Running on a Ray cluster."""

    kind: Literal["local", "ray"] | None = None  # default: $KEXP_EXECUTOR, else local
    address: str | None = None  # ray: a cluster to join (host:port, auto, ray://...); default $RAY_ADDRESS, else
    # an embedded single-machine cluster started and stopped by kexp
    cpus_per_task: Annotated[float, Field(gt=0)] = 1.0  # ray: CPUs per task = TensorFlow's threads
    gpus_per_task: Annotated[float, Field(ge=0)] | None = None  # ray: fractions share a GPU; default 1 if the
    # cluster has GPUs, else 0
    max_retries: NonNegInt = 2  # ray: a task whose worker process died is run again this many times
    reuse_workers: bool = True  # ray: keep worker processes between tasks (TensorFlow starts once per worker,
    # not once per task: ~0.2 s a task instead of ~9 s; Keras' session is cleared between tasks); false: a
    # fresh process per task

    @model_validator(mode="after")
    def _ray_keys_need_ray(self):
        given = [key for key in ("address", "cpus_per_task", "gpus_per_task", "max_retries", "reuse_workers")
                 if getattr(self, key) != type(self).model_fields[key].default]
        if self.kind == "local" and given:
            them = "them" if len(given) > 1 else "it"
            raise ValueError(f"{', '.join(given)}: only the ray executor uses {them}; remove {them} or set "
                             "executor.kind: ray")
        return self


# --------------------------------------------------------------------------- the whole file
class Config(Section):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]  # default: the config file's name; letters, digits, . _ -
    seed: Seed = 0  # weights, shuffling, fold seeds: same seed, same metrics on CPU
    dataset: Dataset  # the data, chosen by `name`: a Keras or scikit-learn dataset, csv or npz
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)  # inputs and labels; fitted per split
    model: Model  # the layers, by Keras class name with their arguments
    compile: Compile  # optimizer, loss(es) and metrics, by Keras name
    training: Training = Field(default_factory=Training)  # the arguments of fit
    validation: Validation = Field(default_factory=lambda: Holdout(scheme="holdout"))  # holdout or kfold
    search: Search | None = None  # `kexp sweep` only: `train`/`kfold` refuse a config that has one
    executor: Executor | None = None  # where tasks run; changes nothing in the results
    backend: Literal["tensorflow", "jax", "torch"] | None = None  # Keras' backend; default: KERAS_BACKEND, then
    # keras.json, then tensorflow (as Keras picks it); the run's environment.json records the one used
    plugins: list[str] | None = None  # your Python files, imported first (objects registered with
    # keras.saving.register_keras_serializable work by name); relative to this file's folder

    @property
    def split_seed(self) -> int:
        return self.seed if self.validation.seed is None else self.validation.seed

    def to_dict(self) -> dict:
        # absent stays absent
        unset = {key for key in ("search", "executor", "plugins", "backend") if getattr(self, key) is None}
        return self.model_dump(mode="json", exclude=unset or None)


# --------------------------------------------------------------------------- loading
class _Loader(yaml.SafeLoader):
    """safe_load's loader; a duplicate key is an error rather than a silent overwrite."""


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (list, dict)):
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
# YAML 1.2 floats that YAML 1.1 reads as text: 1e-3, 1e30, 1.0e30 (1.1 wants a dot and a signed exponent)
YAML12_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    """safe_dump's dumper that quotes the text this module's loader would read as a number (`'1e3'`)."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", YAML12_FLOAT, list("-+0123456789."))


def dump_yaml(data: Any) -> str:
    """YAML text that `parse_yaml` reads back as the same data (what yaml.safe_dump writes, except
    that strings such as '1e3' are quoted)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _count_nodes(value: Any, budget: int = MAX_NODES) -> int:
    """Nodes after anchors expand; stops early past the budget (billion-laughs files)."""
    count, stack = 0, [value]
    while stack and count <= budget:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return count


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML data (never objects); errors name the place and the line."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        if mark is None and isinstance(getattr(exc, "position", None), int):  # ReaderError: an offset
            at = f":{text.count(chr(10), 0, exc.position) + 1}"
        problem = getattr(exc, "problem", None) or str(exc).partition("\n")[0]
        context = getattr(exc, "context", None)
        detail = f"{context}, {problem}" if context else problem
        raise ConfigError(f"{where}{at}: invalid YAML: {detail}") from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid YAML: nested too deeply") from None
    except Exception as exc:  # a value PyYAML's own constructors choke on: 2001-13-45, !!int abc, 10**5000
        raise ConfigError(f"{where}: invalid YAML: a value cannot be read ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'malformed'})") from None
    if _count_nodes(data) > MAX_NODES:
        raise ConfigError(
            f"{where}: the YAML expands to more than {MAX_NODES} values (anchors/aliases?); "
            "write it out plainly"
        )
    foreign = _foreign_value(data)
    if foreign is not None:
        raise ConfigError(f"{where}: {foreign[0] or '(top level)'}: not plain data (YAML binary, sets, dates "
                          f"and times are not config values; quote text that looks like a date); "
                          f"got {show(foreign[1])}")
    return data


def _foreign_value(value: Any) -> tuple[str, Any] | None:
    """(dotted key, value) of the first value or key that is not str/int/float/bool/null/list/mapping."""
    plain = (str, int, float, bool, type(None))
    stack = [(value, "")]
    while stack:
        item, at = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                where = f"{at}.{key}" if at else str(key)
                if not isinstance(key, plain):
                    return where, key
                stack.append((child, where))
        elif isinstance(item, list):
            stack.extend((child, f"{at}.{i}" if at else str(i)) for i, child in enumerate(item))
        elif not isinstance(item, plain):
            return at, item
    return None


def read_config_file(path: str | Path) -> dict:
    """The raw mapping of a config file, or a ConfigError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        raise ConfigError(f"{path}: the file is empty; a config needs dataset, model and compile")
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping of sections (dataset, model, compile, ...); "
            f"got {_kind(data)}"
        )
    return data


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """Apply `--set dotted.key=value` overrides (values are YAML) to a raw config mapping."""
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--set {item}: expected KEY=VALUE, e.g. training.epochs=4")
            continue
        try:
            value = parse_yaml(text, f"--set {key}")
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        error = _set_path(data, key.split("."), value)
        if error:
            problems.append(f"--set {item}: {key}: {error}")
        elif key == "validation.scheme":
            _drop_other_scheme(data["validation"], value)
    if problems:
        raise ConfigError(problems)
    return data


def _drop_other_scheme(section: Any, scheme: Any) -> None:
    """`--set validation.scheme=holdout` on a K-fold section: drop the keys only K-fold has (n_splits,
    repeats, smoothing), and the reverse, so that switching schemes needs one --set."""
    new = SCHEMES.get(scheme) if isinstance(scheme, str) else None
    if new is None or not isinstance(section, dict):
        return
    for cls in SCHEMES.values():
        if cls is not new:
            for key in set(cls.model_fields) - set(new.model_fields):
                section.pop(key, None)


def _set_path(node: Any, parts: list[str], value: Any) -> str | None:
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            here = ".".join(parts[:depth])
            if re.fullmatch(r"\+[0-9]+", part):  # +N: insert before item N (N = the length appends)
                if not last:
                    return f"+{part[1:]} inserts a whole item; e.g. {here}.{part}={{...}}"
                if int(part[1:]) > len(node):
                    return f"cannot insert before item {part[1:]}: the list has {len(node)} items"
                node.insert(int(part[1:]), value)
                return None
            if not re.fullmatch(r"-?[0-9]+", part) or not -len(node) <= int(part) <= len(node):
                return f"no list item {part!r} (the list has {len(node)} items)"
            index = int(part) % len(node) if node and int(part) < 0 else int(part)
            if index == len(node):  # one past the end appends
                if not last:
                    return (f"no list item {part!r} (the list has {len(node)} items); append a whole "
                            f"item with {here}.{part}={{...}}")
                node.append(value)
                return None
            if last:
                node[index] = value
                return None
            if isinstance(node[index], str):  # `- Flatten` / `- rmsprop` shorthand
                node[index] = {"layer" if parts[depth - 1] == "layers" else "name": node[index]}
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return None
            child = node.get(part)
            if child is None:
                child = node[part] = _schema_default(parts[: depth + 1])
            elif isinstance(child, str):  # `optimizer: rmsprop` -> {name: rmsprop}
                child = node[part] = {"name": child}
            node = child
        else:
            return f"{'.'.join(parts[:depth])} is a {_kind(node)}, not a section"
    return None


def _schema_default(parts: list[str]) -> dict:
    """The default of a section missing from the file, as raw data (e.g. compile.optimizer)."""
    model: Any = Config
    value: Any = {}
    for part in parts:
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return {}
        value = field.get_default(call_default_factory=True)
        model = _resolve(field.annotation, None)
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_unset=True)
    return dict(value) if isinstance(value, dict) else {}


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError listing every problem."""
    path = Path(path)
    data = _absolute_runs(apply_overrides(read_config_file(path), overrides), path.parent)
    return validate_config(data, source=str(path), default_name=path.stem)


def _absolute_runs(data: dict, folder: Path) -> dict:
    """`from_run` paths of model.layers and of sub-models' layers made absolute, relative to the config's
    folder: tasks read the file where they run (the resolved config carries the absolute path)."""
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        return data
    submodels = model.get("submodels")
    graphs = [model, *(submodels.values() if isinstance(submodels, dict) else ())]
    for graph in graphs:
        for entry in (graph.get("layers") if isinstance(graph, dict) and isinstance(graph.get("layers"), list) else ()):
            if isinstance(entry, dict) and isinstance(entry.get("from_run"), str) and entry["from_run"]:
                entry["from_run"] = os.path.abspath(folder / Path(entry["from_run"]).expanduser())
    return data


def validate_config(data: dict, source: str = "<config>", default_name: str = "experiment") -> Config:
    data = dict(data)
    if "name" not in data or data["name"] is None:
        data["name"] = re.sub(r"[^A-Za-z0-9._-]", "_", default_name).lstrip("._-")[:100] or "experiment"
    lines = [f"{source}: {line}" for line in _value_checks(data)]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, data, source) + lines) from None
    if lines:
        raise ConfigError(lines)
    return config


def _value_checks(data: dict) -> list[str]:
    """Checks of values inside free-form Keras argument mappings, which the schema passes through."""
    lines = []
    optimizer = data.get("compile", {}).get("optimizer") if isinstance(data.get("compile"), dict) else None
    if isinstance(optimizer, dict) and "learning_rate" in optimizer:
        rate = optimizer["learning_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float, dict)):
            lines.append(f"compile.optimizer.learning_rate: must be a positive number or a schedule such as "
                         f"{{name: ExponentialDecay, initial_learning_rate: 0.01, decay_steps: 1000, "
                         f"decay_rate: 0.9}}; got {show(rate)}")
        elif not isinstance(rate, dict) and not (math.isfinite(rate) and rate > 0):
            lines.append(f"compile.optimizer.learning_rate: must be a positive, finite number; got {show(rate)}")
    return lines


# --------------------------------------------------------------------------- error messages
def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _section_at(loc: tuple, data: Any) -> tuple[type[BaseModel] | None, tuple, Any]:
    """Walk the schema along `loc`, returning (model class, dotted loc without union tags, input)."""
    model: Any = Config
    node = data
    path: list = []
    items = list(loc)
    while items:
        part = items.pop(0)
        is_key = (isinstance(node, dict) and part in node) or (
            isinstance(model, type) and issubclass(model, BaseModel) and part in model.model_fields)
        if isinstance(part, str) and not is_key:
            continue  # a union's tag (a discriminator value, or a member type like constrained-int)
        path.append(part)
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        model = _field_model(model, part, node)
    return model, tuple(path), node


def _has(node, part) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def _field_model(model: Any, part: Any, node: Any):
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    field = model.model_fields.get(part)
    if field is None:
        return None
    return _resolve(field.annotation, node)


def _resolve(annotation: Any, node: Any):
    """The pydantic model an annotation points at for this input (unions picked by tag)."""
    candidates = []
    stack = [annotation]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            candidates.append(item)
        stack.extend(getattr(item, "__args__", ()) or ())
        origin = getattr(item, "__origin__", None)
        if origin is not None and origin is not Union:
            stack.append(origin)
        stack.extend(getattr(item, "__metadata__", ()) and [])
    if len(candidates) <= 1 or not isinstance(node, dict):
        return candidates[0] if candidates else None
    if set(candidates) == set(SCHEMES.values()):
        node = _default_scheme(node)
    for cls in candidates:
        for tag_key in ("name", "scheme"):
            field = cls.model_fields.get(tag_key)
            if field is not None and node.get(tag_key) in getattr(field.annotation, "__args__", ()):
                return cls
    return candidates[0]


def _tag_values(model_classes, key):
    values = []
    for cls in model_classes:
        values.extend(getattr(cls.model_fields[key].annotation, "__args__", ()))
    return sorted(values)


def format_errors(exc: ValidationError, data: dict, source: str) -> list[str]:
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        kind = error["type"]
        value = error.get("input")
        if kind == "extra_forbidden":
            parent, path, _ = _section_at(loc[:-1], data)
            key = loc[-1]
            allowed = sorted(parent.model_fields) if parent else []
            where = ".".join(str(p) for p in (*path, key))
            other = next((name for name, cls in SCHEMES.items() if parent in SCHEMES.values()
                          and cls is not parent and key in cls.model_fields), None)
            if other is not None:  # a K-fold key in a hold-out section, or the reverse
                this = next(name for name, cls in SCHEMES.items() if cls is parent)
                lines.append(f"{source}: {where}: belongs to scheme {other}, not {this}; "
                             f"set validation.scheme: {other} or remove it")
                continue
            lines.append(
                f"{source}: {where}: unknown key{close_matches(key, allowed)}; "
                f"allowed: {', '.join(allowed)}"
            )
            continue
        _, path, _ = _section_at(loc, data)
        where = ".".join(str(p) for p in path) or "(top level)"
        if kind == "missing":
            lines.append(f"{source}: {where}: required key is missing")
        elif kind == "union_tag_invalid":
            tag = error["ctx"]["discriminator"].strip("'")
            allowed = [t.strip().strip("'") for t in error["ctx"]["expected_tags"].split(",")]
            got = error["ctx"]["tag"]
            lines.append(
                f"{source}: {where}.{tag}: unknown {where.split('.')[-1]} {tag}"
                f"{close_matches(got, allowed)}; got {show(got)}; allowed: {', '.join(sorted(allowed))}"
            )
        elif kind == "union_tag_not_found":
            tag = error["ctx"]["discriminator"].strip("'")
            lines.append(f"{source}: {where}.{tag}: required key is missing")
        elif kind == "literal_error":
            allowed = error["ctx"]["expected"].replace("'", "")
            lines.append(
                f"{source}: {where}: not an allowed value"
                f"{close_matches(value, allowed.replace(' or ', ', ').split(', '))}; "
                f"got {show(value)}; allowed: {allowed}"
            )
        elif kind == "string_pattern_mismatch" and path == ("name",):
            lines.append(
                f"{source}: name: must be letters, digits, '.', '_' or '-' (no paths), at most "
                f"100 characters; got {show(value)}"
            )
        elif kind in ("value_error", "assertion_error"):
            message = error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            lines.append(f"{source}: {where}: {message}")
        else:
            message = error["msg"][0].lower() + error["msg"][1:]
            lines.append(f"{source}: {where}: {message}; got {show(value)}")
    # a union reports one error per member it tried: one line per key, the members' complaints joined
    merged: dict[str, list[str]] = {}
    for line in dict.fromkeys(lines):
        where, _, message = line[len(source) + 2:].partition(": ")
        merged.setdefault(where, []).append(message)
    return [f"{source}: {where}: {_merge(messages)}" for where, messages in merged.items()]


def _merge(messages: list[str]) -> str:
    """One message from a union's complaints about one value: `what or what; got X; allowed: ...`,
    keeping every hint and every allowed value."""
    if len(messages) == 1:
        return messages[0]
    parts = []
    for message in messages:
        what, _, tail = message.partition("; got ")
        got, _, allowed = tail.partition("; allowed: ")
        parts.append((what, got, allowed))
    if any(not got for _, got, _ in parts) or len({got for _, got, _ in parts}) > 1:
        return "; or ".join(messages)
    whats = list(dict.fromkeys(what for what, _, _ in parts))
    prefix = "input should be "
    if all(w.startswith(prefix) for w in whats):
        what = prefix + " or ".join(w.removeprefix(prefix) for w in whats)
    else:
        what = " or ".join(whats)
    allowed = list(dict.fromkeys(a for _, _, a in parts if a))
    return f"{what}; got {parts[0][1]}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
