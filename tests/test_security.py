"""Untrusted input: hostile configs and `--set` overrides, code smuggled into names or YAML tags,
paths that try to leave the runs folder, data paths, and damaged run folders read back.

Every config either validates or fails with kexp's ConfigError: one line per problem, each starting
with the config file (or `--set` for an override that cannot be applied), exit code 2 and no
traceback through the CLI. The hypothesis tests use the `kexp-ci` profile (a few hundred examples
in all, ~20 s); `KEXP_HYPOTHESIS_PROFILE=kexp-thorough` runs 20,000 examples per test by hand.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import yaml
from cli_runner import invoke, stderr_of
from hypothesis import event, given, settings
from hypothesis import strategies as st

from kexp.config import NAME_PATTERN, Config, load_config, validate_config
from kexp.errors import ConfigError, RunError
from kexp.runs import create_run, find_runs, read_run

# the profile conftest.py loaded (KEXP_HYPOTHESIS_PROFILE: kexp-ci by default, or kexp-thorough)
PROFILE = settings.default
# the CLI-level tests run whole commands in-process: a fifth of the examples (or KEXP_HYPOTHESIS_CLI_EXAMPLES)
CLI_PROFILE = settings(PROFILE, max_examples=int(os.environ.get("KEXP_HYPOTHESIS_CLI_EXAMPLES",
                                                                max(20, PROFILE.max_examples // 5))))

BASE = {
    "name": "tiny",
    "seed": 0,
    "dataset": {"name": "iris", "test_split": 0.2, "seed": 0, "stratify": True},
    "preprocessing": {"standardize": True, "scale": 1.0, "labels": "sparse"},
    "model": {"layers": [
        {"layer": "Dense", "units": 4, "activation": "relu", "kernel_regularizer": {"name": "L2", "l2": 0.01}},
        "BatchNormalization",
        {"layer": "Dense", "units": 3, "activation": "softmax"},
    ]},
    "compile": {"optimizer": {"name": "adam", "learning_rate": 0.01}, "loss": "sparse_categorical_crossentropy",
                "metrics": ["accuracy"]},
    "training": {"epochs": 2, "batch_size": 32, "shuffle": True, "callbacks": [{"name": "TerminateOnNaN"}],
                 "steps_per_execution": "epoch"},
    "validation": {"scheme": "holdout", "size": 0.2, "shuffle": True, "monitor": "val_loss",
                   "final": {"epochs": "best"}},
}
KNOWN_KEYS = sorted({k for section in BASE.values() if isinstance(section, dict) for k in section} | set(BASE)
                    | {"layer", "layers", "units", "activation", "inputs", "outputs", "n_splits", "repeats",
                       "path", "target", "features", "x", "y", "multi_hot", "pad_sequences", "maxlen"})

HOSTILE_STRINGS = ["", " ", "os.system", "builtins.eval", "__import__", "subprocess.Popen", "eval", "exec",
                   "../../etc", "/etc/passwd", "~root", "..", ".", "-rf", "Dense", "Conv2D", "Lambda", "adam",
                   "mse", "kfold", "holdout", "csv", "npz", "iris", "mnist", "nan", ".inf", "auto", "epoch",
                   "best", "\x00", "\u202e", "a" * 300, "x=1", "{layer: Dense}", "!!python/name:os.system"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(), st.sampled_from([0, -1, 2**63, 10**30, 1e308, -1e308, 1e-320, 0.5, 1.0]),
    st.sampled_from(HOSTILE_STRINGS), st.text(max_size=16), st.binary(max_size=8), st.dates(),
)
KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=12), st.integers(-3, 3), st.booleans(), st.none())
GARBAGE = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                       max_leaves=16)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


def _at(node, path):
    for part in path:
        node = node[part]
    return node


def _plausible_mistake(value):
    """The slips people make: numbers as strings, ints as floats, a value where a list goes, ..."""
    return st.sampled_from([str(value), [value], {"value": value}, None, -1, 0, 1e999, -1e999,
                            float("nan"), 10**20, True, "1e3", 3.5])


@st.composite
def hostile_documents(draw):
    """BASE with 1-4 mutations: values replaced by garbage, keys deleted or added, sections broken."""
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(list(_paths(doc))))
        op = draw(st.sampled_from(["garbage", "mistake", "delete", "unknown_key"]))
        if op in ("garbage", "mistake"):
            value = draw(GARBAGE if op == "garbage" else _plausible_mistake(_at(doc, path) if path else 0))
            if not path:
                doc = value
                if not isinstance(doc, (dict, list)):
                    break
                continue
            _at(doc, path[:-1])[path[-1]] = value
        elif op == "delete" and path:
            parent = _at(doc, path[:-1])
            del parent[path[-1]]
        elif op == "unknown_key":
            node = _at(doc, path)
            if isinstance(node, dict):
                key = draw(st.one_of(KEYS, st.sampled_from(["epoch", "lr", "layer_", "Units", "optimiser"])))
                node[key] = draw(GARBAGE)
    return doc


def dump(doc) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")


BILLION_LAUGHS = "\n".join(
    [f"{chr(97)}: &a [{', '.join(['lol'] * 9)}]"]
    + [f"{chr(97 + i)}: &{chr(97 + i)} [{', '.join([f'*{chr(96 + i)}'] * 9)}]" for i in range(1, 10)]
) + "\nname: *j\n"
FIXED_HOSTILE = [
    "", "   \n", "# only a comment\n", "~", "null", "[]", "{}", "- a\n- b\n", "42", "'text'", "--- \n...\n",
    "name: a\n---\nname: b\n", "dataset:\n\tname: iris\n", "name: a\nname: b\n", "\ufeffname: x\n",
    "? [a, b]\n: 1\n", "? {a: 1}\n: 1\n", "&a [*a]", "a: &x {b: *x}", "[" * 5000 + "]" * 5000,
    "{a: " * 3000 + "1" + "}" * 3000, "a:\n" + "".join(" " * i + "a:\n" for i in range(1, 600)), BILLION_LAUGHS,
    "!!python/object/apply:os.system ['true']", "name: !!python/object/apply:os.system ['true']",
    "name: !!python/name:os.system", "!!python/module:os", "!!python/object/new:subprocess.Popen [['true']]",
    "seed: !!python/object/apply:builtins.eval ['1+1']", "!custom 1", "seed: !!binary aGVsbG8=",
    "seed: !!set {a, b}", "seed: !!omap [a: 1]", "seed: !!timestamp 2001-12-14", "seed: 2001-13-45",
    "seed: 1" + "0" * 5000, "seed: !!int abc", "seed: !!float abc", "seed: !!bool abc", "seed: !!map [1]",
    "seed: !!int", "seed: !!timestamp abc", "name: " + "a" * 200_000, "dataset: {<<: {name: iris}}",
    "dataset: {<<: [1, 2]}", "dataset: {<<: *nope}", "%YAML 1.1\n%TAG ! tag:evil.com,2000:\n--- !x 1\n",
]


@st.composite
def invalid_utf8(draw):
    data = dump(draw(hostile_documents()))
    cut = draw(st.integers(0, len(data)))
    bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
    return data[:cut] + bad + data[cut:]


@st.composite
def truncated(draw):
    data = dump(draw(hostile_documents()))
    return data[: draw(st.integers(0, len(data)))]


# --------------------------------------------------------------------------- valid but unusual
# The other half of every property: configs that are valid, written in unusual ways and with unusual
# (but allowed) values, so that "accepted, round-trips, builds, trains" is exercised, not only refusal.
HIDDEN_LAYERS = st.one_of(
    st.builds(lambda units, activation: {"layer": "Dense", "units": units, "activation": activation},
              st.integers(1, 16), st.sampled_from(["relu", "tanh", "sigmoid", "linear", "elu", "gelu", "swish"])),
    st.builds(lambda units, init, reg, bias: {"layer": "Dense", "units": units, "kernel_initializer": init,
                                              "kernel_regularizer": reg, "use_bias": bias},
              st.integers(1, 8), st.sampled_from(["glorot_uniform", "he_normal", "zeros",
                                                  {"name": "GlorotUniform", "seed": 3}]),
              st.one_of(st.none(), st.just("l2"), st.builds(lambda l2: {"name": "L2", "l2": l2},
                                                            st.floats(0, 0.1))), st.booleans()),
    st.builds(lambda rate: {"layer": "Dropout", "rate": rate}, st.floats(0, 0.9)),
    st.builds(lambda stddev: {"layer": "GaussianNoise", "stddev": stddev}, st.floats(0, 1)),
    st.sampled_from(["BatchNormalization", {"layer": "LayerNormalization"},
                     {"layer": "Activation", "activation": "relu"}, {"layer": "UnitNormalization"}, "Identity"]),
)
LAST_LAYER = st.sampled_from([
    {"layer": "Dense", "units": 3, "activation": "softmax"},
    {"layer": "Dense", "units": 3, "activation": "softmax", "name": "out", "dtype": "float32"}])
VALID_OPTIMIZERS = st.one_of(
    st.sampled_from(["adam", "sgd", "rmsprop", "adamw", "nadam", "adagrad", "Adam", "RMSprop"]),
    st.builds(lambda name, lr: {"name": name, "learning_rate": lr},
              st.sampled_from(["adam", "sgd", "rmsprop", "Adam", "SGD"]), st.floats(1e-5, 0.5)),
    st.builds(lambda m: {"name": "sgd", "learning_rate": 0.01, "momentum": m, "nesterov": True}, st.floats(0, 0.99)),
)
VALID_LOSSES = st.sampled_from(["sparse_categorical_crossentropy", {"name": "sparse_categorical_crossentropy"},
                                {"name": "SparseCategoricalCrossentropy", "from_logits": False}])
VALID_METRICS = st.lists(st.sampled_from(["accuracy", "sparse_categorical_accuracy",
                                          {"name": "SparseTopKCategoricalAccuracy", "k": 2}]),
                         max_size=2, unique_by=repr)
VALID_CALLBACKS = st.lists(st.one_of(
    st.just("TerminateOnNaN"),
    st.builds(lambda p: {"name": "EarlyStopping", "patience": p, "monitor": "val_loss"}, st.integers(0, 5)),
    st.builds(lambda f: {"name": "ReduceLROnPlateau", "factor": f, "patience": 2}, st.floats(0.1, 0.9)),
), max_size=2, unique_by=lambda c: c if isinstance(c, str) else c["name"])


@st.composite
def _scheme(draw) -> dict:
    shuffle = draw(st.booleans())
    common = {"shuffle": shuffle, "monitor": "val_loss", "mode": draw(st.sampled_from(["auto", "min"]))}
    if shuffle:
        common.update(draw(st.fixed_dictionaries({}, optional={"seed": st.integers(0, 2**31),
                                                              "stratify": st.booleans()})))
    if draw(st.booleans()):
        final = draw(st.sampled_from([None, {"epochs": "best"}, {"epochs": 1}, {"epochs": 2}]))
        return {"scheme": "holdout", **common, "final": final,
                "size": draw(st.one_of(st.floats(0.1, 0.5), st.integers(10, 60)))}
    common.pop("stratify", None)  # K-fold on iris: keep the folds valid whatever the order
    return {"scheme": "kfold", **common, "n_splits": draw(st.integers(2, 4)), "repeats": 1,
            "smoothing": draw(st.one_of(st.none(), st.builds(lambda f, k: {"factor": f, "skip": k},
                                                              st.floats(0, 0.95), st.integers(0, 1))))}


@st.composite
def unusual_documents(draw) -> dict:
    """Valid iris configs with unusual but allowed values; optional keys left out at random."""
    doc = {
        "name": draw(st.sampled_from(["a", "exp-1", "X.y_z", "007", "true", "null", "1e3", "2024-01-01", "a" * 100])),
        "seed": draw(st.integers(0, 2**32 - 1)),  # what NumPy and Keras take as a seed
        "dataset": {"name": "iris", "test_split": draw(st.floats(0.1, 0.4)), "seed": draw(st.integers(0, 99)),
                    "stratify": draw(st.booleans())},
        "preprocessing": {"standardize": draw(st.booleans()), "scale": draw(st.one_of(st.none(), st.floats(1e-3, 10))),
                          "labels": "sparse"},
        "model": {"layers": [*draw(st.lists(HIDDEN_LAYERS, max_size=3)), draw(LAST_LAYER)]},
        "compile": {"optimizer": draw(VALID_OPTIMIZERS), "loss": draw(VALID_LOSSES), "metrics": draw(VALID_METRICS)},
        "training": {"epochs": draw(st.integers(1, 2)), "batch_size": draw(st.integers(1, 256)),
                     "shuffle": draw(st.booleans()), "callbacks": draw(VALID_CALLBACKS),
                     "steps_per_execution": draw(st.one_of(st.just("epoch"), st.integers(1, 8)))},
        "validation": draw(_scheme()),
    }
    for section, key in draw(st.lists(st.sampled_from([
            (None, "name"), (None, "seed"), ("dataset", "test_split"), ("dataset", "seed"), ("preprocessing", "scale"),
            ("compile", "metrics"), ("training", "callbacks"), ("training", "steps_per_execution"),
            ("validation", "mode")]), max_size=4, unique=True)):
        (doc if section is None else doc[section]).pop(key, None)
    return doc


class _Dumper(yaml.SafeDumper):
    """PyYAML's dumper, quoting text that kexp reads as a YAML 1.2 float (`1e3`: PyYAML leaves it bare)."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))


@st.composite
def unusual_yaml(draw) -> bytes:
    """A valid document written as block, flow, canonical (every tag explicit) or JSON text, with
    comments, document markers, odd indentation and line widths, Windows line ends."""
    doc = draw(unusual_documents())
    style = draw(st.sampled_from(["block", "flow", "canonical", "json"]))
    if style == "json":
        text = json.dumps(doc, indent=draw(st.sampled_from([None, 1, 4])), ensure_ascii=draw(st.booleans()))
    else:
        text = yaml.dump(doc, Dumper=_Dumper, default_flow_style={"block": False, "flow": True}.get(style),
                              canonical=style == "canonical", sort_keys=draw(st.booleans()),
                              indent=draw(st.integers(2, 6)), width=draw(st.sampled_from([20, 80, 10_000])),
                              explicit_start=draw(st.booleans()), allow_unicode=True)
    if style != "canonical" and draw(st.booleans()):
        text = "# an experiment\n" + text + "# the end\n"
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return text.encode("utf-8")


CONFIG_BYTES = st.one_of(
    hostile_documents().map(dump), GARBAGE.map(dump), st.sampled_from(FIXED_HOSTILE).map(str.encode),
    invalid_utf8(), truncated(), st.binary(max_size=300), st.text(max_size=300).map(str.encode),
    unusual_yaml(),
)


def same(a, b) -> bool:
    """Equal, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b and type(a) is type(b)


def _event(name: str) -> None:
    """A Hypothesis event (`--hypothesis-show-statistics`), when called from a property."""
    from hypothesis.control import currently_in_test_context

    if currently_in_test_context():
        event(name)


def expect_config_outcome(path: Path, overrides=(), *, must_accept: bool = False):
    """The Config, or None after checking that the ConfigError is well formed; anything else fails.
    Each outcome is a Hypothesis event: `pytest --hypothesis-show-statistics` shows how often each half
    of a property is reached."""
    try:
        config = load_config(path, list(overrides))
    except ConfigError as exc:
        _event("config refused")
        if must_accept:
            pytest.fail(f"a valid config was refused:\n{exc}\n--- {path}:\n{path.read_text(errors='replace')}")
        assert exc.problems, "a ConfigError with no problem"
        for line in exc.problems:
            assert isinstance(line, str) and line.strip(), exc.problems
            assert "\n" not in line and "\r" not in line, line
            assert line.startswith((f"{path}:", "--set ")), line
            assert "Traceback" not in line
        assert str(exc) == "\n".join(exc.problems)
        return None
    _event("config accepted")
    assert isinstance(config, Config)
    # what a run folder keeps (config.yaml) reads back as the same config: --resume and compare work
    saved = config.to_dict()
    again = validate_config(yaml.safe_load(yaml.safe_dump(saved, allow_unicode=True)))
    assert same(again.to_dict(), saved)
    return config


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


# --------------------------------------------------------------------------- hostile configs
@settings(PROFILE)
@given(data=CONFIG_BYTES)
def test_hostile_config_files_validate_or_fail_with_one_line_per_problem(data, scratch):
    path = scratch / "hostile.yaml"
    path.write_bytes(data)
    expect_config_outcome(path)


@settings(PROFILE)
@given(data=unusual_yaml())
def test_valid_but_unusual_config_files_are_accepted_and_round_trip(data, scratch):
    path = scratch / "unusual.yaml"
    path.write_bytes(data)
    expect_config_outcome(path, must_accept=True)


def test_the_base_document_is_valid(scratch):
    path = scratch / "base.yaml"
    path.write_bytes(dump(BASE))
    assert expect_config_outcome(path) is not None


OVERRIDE_KEYS = st.one_of(
    st.sampled_from(sorted(".".join(map(str, p)) for p in _paths(BASE) if p)),
    st.sampled_from(["", ".", "..", "a..b", "name.x", "training.epochs.x", "model.layers.99.units",
                     "model.layers.-1", "model.layers.x", "compile.optimizer.learning_rate", "validation",
                     "compile.loss.out", "dataset.name", "__class__", "model.__dict__", " training.epochs "]),
    st.text(max_size=20),
)
OVERRIDE_VALUES = st.one_of(GARBAGE.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                            st.sampled_from(FIXED_HOSTILE[:40]), st.text(max_size=30))


VALID_OVERRIDES = st.one_of(
    st.builds("training.epochs={}".format, st.integers(1, 5)),
    st.builds("training.batch_size={}".format, st.integers(1, 512)),
    st.builds("seed={}".format, st.integers(0, 2**32 - 1)),
    st.builds("compile.optimizer.learning_rate={}".format, st.sampled_from(["1e-3", "0.5", "2e-5", "1"])),
    st.builds("model.layers.0.units={}".format, st.integers(1, 64)),
    st.sampled_from(["name=exp-2", "name='007'", "compile.optimizer={name: sgd, momentum: 0.9}",
                     "validation={scheme: kfold, n_splits: 3}", "validation.final=null", "validation.size=30",
                     "training.callbacks=[]", "training.steps_per_execution=4", "dataset.stratify=false",
                     "model.layers.+0={layer: Dropout, rate: 0.1}", "compile.metrics=[accuracy, mae]",
                     "preprocessing.scale=null", "training.shuffle=false", "compile.loss={name: mse}"]),
)


@settings(PROFILE)
@given(items=st.one_of(
    st.lists(st.one_of(st.tuples(OVERRIDE_KEYS, OVERRIDE_VALUES).map("=".join), st.text(max_size=20)),
             min_size=1, max_size=4),
    st.lists(VALID_OVERRIDES, min_size=1, max_size=4)))  # valid but unusual: the accepted half
def test_hostile_overrides_validate_or_fail_with_one_line_per_problem(items, scratch):
    path = scratch / "base.yaml"
    path.write_bytes(dump(BASE))
    expect_config_outcome(path, items)


def test_python_tags_in_a_config_or_override_never_construct_objects(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"!!python/object/apply:os.system ['touch {marker}']",
        f"!!python/object/apply:subprocess.call [['touch', '{marker}']]",
        f"!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
        f"!!python/object/apply:builtins.exec [\"open('{marker}', 'w')\"]",
    ]
    clean = tmp_path / "clean.yaml"
    clean.write_bytes(dump(BASE))
    for payload in payloads:
        path = tmp_path / "evil.yaml"
        path.write_text(f"name: {payload}\n" + yaml.safe_dump({k: v for k, v in BASE.items() if k != "name"}))
        with pytest.raises(ConfigError, match=r"evil\.yaml:1:\d+: invalid YAML: could not determine a constructor"):
            load_config(path)
        with pytest.raises(ConfigError, match=r"^--set seed:1:1: invalid YAML"):
            load_config(clean, [f"seed={payload}"])
        path.write_text(payload + "\n")
        with pytest.raises(ConfigError, match="python/"):
            load_config(path)
    assert not marker.exists()


def test_billion_laughs_config_is_refused_quickly(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(BILLION_LAUGHS + yaml.safe_dump({k: v for k, v in BASE.items() if k != "name"}))
    with pytest.raises(ConfigError, match=r"laughs\.yaml: the YAML expands to more than 100000 values"):
        load_config(path)


def test_values_yaml_cannot_construct_are_config_errors_with_the_file(tmp_path):
    for text in ("seed: 2001-13-45", "seed: !!int abc", "seed: 1" + "0" * 5000, "seed: !!map [1]"):
        path = tmp_path / "bad.yaml"
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=r"^.*bad\.yaml(:\d+:\d+)?: invalid YAML"):
            load_config(path)


# --------------------------------------------------------------------------- the CLI
@settings(CLI_PROFILE)
@given(data=CONFIG_BYTES, items=st.lists(st.tuples(OVERRIDE_KEYS, OVERRIDE_VALUES).map("=".join), max_size=2))
def test_cli_validate_of_hostile_input_exits_2_with_one_line_per_problem(data, items, scratch):
    path = scratch / "cli.yaml"
    path.write_bytes(data)
    args = ["validate", str(path), "--no-data"] + [a for item in items for a in ("--set", item)]
    result = invoke(*args)
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = stderr_of(result).splitlines()
        assert lines and all(line.startswith((f"{path}:", "--set ")) for line in lines), lines


@settings(CLI_PROFILE)
@given(data=CONFIG_BYTES)
def test_a_config_the_schema_refuses_never_reaches_the_data_or_a_model(data, scratch):
    """`kexp validate` (with data) checks the schema first: a refused config loads no data and
    builds no model; one the schema accepts goes on to the data (stubbed here: no downloads)."""
    import kexp.checks
    import kexp.experiment
    from kexp.errors import DataError

    reached = []

    def stub(*args, **kwargs):
        reached.append(args)
        raise DataError("stub: the data is not loaded in this test")

    path = scratch / "data.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
        schema_ok = True
    except ConfigError:
        schema_ok = False
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kexp.experiment, "load_data", stub)
        patch.setattr(kexp.checks, "build_model", stub)
        result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    assert bool(reached) == schema_ok, (reached, result.output)


LAYER_NAMES = ["Dense", "Dropout", "Conv1D", "Conv2D", "Flatten", "Reshape", "Embedding", "LSTM", "Activation",
               "BatchNormalization", "LayerNormalization", "Lambda", "InputLayer", "Layer", "Concatenate",
               "MaxPooling2D", "Normalization", "StringLookup", "TimeDistributed", "Bidirectional", "Masking",
               "GaussianNoise", "Identity", "UnitNormalization", "Rescaling", "RepeatVector", "Permute"]
ARG_NAMES = ["units", "rate", "filters", "kernel_size", "activation", "kernel_initializer", "kernel_regularizer",
             "name", "dtype", "target_shape", "input_dim", "output_dim", "function", "trainable", "axis", "seed",
             "use_bias", "layer", "inputs", "return_sequences", "n", "dims", "scale", "stddev", "bogus"]
ARG_VALUES = st.recursive(
    st.one_of(st.integers(-3, 64), st.sampled_from([2**63, 10**30, 0.5, -1.0, float("nan"), float("inf")]),
              st.sampled_from(HOSTILE_STRINGS + ["relu", "softmax", "glorot_uniform", "l2", "float16",
                                                 "mixed_float16", "int32", "string", "layer_0"]),
              st.booleans(), st.none()),
    lambda inner: st.lists(inner, max_size=3) | st.fixed_dictionaries(
        {"name": st.sampled_from(["L2", "L1", "GlorotUniform", "Constant", "os.system", "relu"])},
        optional={"l2": inner, "value": inner, "seed": inner}),
    max_leaves=6)
OBJECT_NAMES = {
    "optimizer": ["adam", "sgd", "rmsprop", "Adam", "Optimizer", "LossScaleOptimizer", "os.system", "lion", ""],
    "loss": ["mse", "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
             "Huber", "CTC", "Loss", "os.system", "ctc", "kl_divergence"],
    "callback": ["TerminateOnNaN", "EarlyStopping", "ModelCheckpoint", "BackupAndRestore", "TensorBoard",
                 "CSVLogger", "LambdaCallback", "History", "os.system", "ReduceLROnPlateau"],
}


def _object(kind):
    return st.one_of(st.sampled_from(OBJECT_NAMES[kind]), st.builds(
        lambda name, args: {"name": name, **args}, st.sampled_from(OBJECT_NAMES[kind]),
        st.dictionaries(st.sampled_from(["learning_rate", "monitor", "patience", "filepath", "from_logits",
                                         "reduction", "delta", "log_dir", "on_epoch_end", "bogus"]),
                        ARG_VALUES, max_size=2)))


@settings(CLI_PROFILE)
@given(layers=st.one_of(st.lists(st.builds(lambda name, args: {"layer": name, **args}, st.sampled_from(LAYER_NAMES),
                                          st.dictionaries(st.sampled_from(ARG_NAMES), ARG_VALUES, max_size=3)),
                                min_size=1, max_size=3),
                       st.lists(HIDDEN_LAYERS, max_size=3)),  # valid hidden layers: the model may build
       optimizer=st.one_of(_object("optimizer"), VALID_OPTIMIZERS), loss=st.one_of(_object("loss"), VALID_LOSSES),
       callbacks=st.one_of(st.lists(_object("callback"), max_size=2), VALID_CALLBACKS),
       last=st.booleans())
def test_cli_validate_builds_hostile_models_or_exits_2(layers, optimizer, loss, callbacks, last, scratch):
    """Random layers, arguments, optimizers, losses and callbacks on real (offline) data, each of them
    hostile or valid: `kexp validate` accepts them or exits 2 with one line per problem; Keras' own
    exceptions never escape. Callbacks that would write files are only constructed, in a scratch folder."""
    import keras

    if last or not layers:
        layers = [*layers, {"layer": "Dense", "units": 3, "activation": "softmax"}]
    doc = {**BASE, "model": {"layers": layers}, "compile": {"optimizer": optimizer, "loss": loss},
           "training": {"epochs": 1, "callbacks": callbacks}}
    path = scratch / "models.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        result = invoke("validate", path)
    finally:
        keras.backend.clear_session()
    event("model built" if result.exit_code == 0 else "model refused")
    assert result.exit_code in (0, 2), result.output
    if result.exit_code == 2:
        lines = stderr_of(result).splitlines()
        assert lines and all(line.startswith(f"{path}: ") for line in lines), lines


@settings(CLI_PROFILE)
@given(doc=unusual_documents())
def test_cli_validate_builds_valid_but_unusual_models(doc, scratch):
    """The acceptance half: valid layers, optimizers, losses, metrics and callbacks, with unusual
    arguments, build on real (offline) data: `kexp validate` exits 0 and says the config is valid."""
    import keras

    path = scratch / "valid_models.yaml"
    path.write_text(yaml.dump(doc, Dumper=_Dumper, sort_keys=False))
    try:
        result = invoke("validate", path)
    finally:
        keras.backend.clear_session()
    assert result.exit_code == 0, (doc, result.output)
    assert "".join(result.stdout.split()) == f"{path}:OK", result.output


@settings(PROFILE, max_examples=max(3, PROFILE.max_examples // 50))
@given(data=unusual_yaml())
def test_valid_but_unusual_configs_train_and_their_run_folder_reads_back(data, tmp_path_factory):
    """A few valid-but-unusual configs (one epoch, hold-out or K-fold) train end to end: exit 0, a
    completed run folder whose saved config validates again to the same settings (the model and
    compile sections gain Keras' defaults there)."""
    import signal

    import keras

    root = tmp_path_factory.mktemp("unusual_train")
    path = root / "unusual.yaml"
    path.write_bytes(data)
    config = load_config(path, ["training.epochs=1"])
    command = "kfold" if config.validation.scheme == "kfold" else "train"
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # `train` installs its own
    try:
        result = invoke(command, path, "--runs-dir", root / "runs", "--quiet", "--set", "training.epochs=1")
    finally:
        keras.backend.clear_session()
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert result.exit_code == 0, (data, result.output)
    (folder,) = find_runs([root / "runs"])
    record = read_run(folder)
    assert record.status == "completed", record
    assert record.metrics.epochs_run == 1
    saved, loaded = validate_config(record.config).to_dict(), config.to_dict()
    for key in ("name", "seed", "dataset", "preprocessing", "validation"):
        assert same(saved[key], loaded[key]), key
    assert [saved["training"][k] for k in ("epochs", "batch_size", "shuffle", "steps_per_execution")] == [
        loaded["training"][k] for k in ("epochs", "batch_size", "shuffle", "steps_per_execution")]
    assert len(saved["model"]["layers"]) == len(loaded["model"]["layers"])


HOSTILE_FILES = {
    "python_tag.yaml": b"!!python/object/apply:os.system ['true']\n",
    "latin1.yaml": "name: caf\xe9\n".encode("latin-1"),
    "laughs.yaml": BILLION_LAUGHS.encode(),
    "list.yaml": b"- dataset\n- model\n",
    "empty.yaml": b"",
}


def test_kexp_validate_subprocess_exits_2_without_traceback_or_tensorflow(tmp_path):
    """The real console entry point, a few files at once: exit 2, one line naming the file, and the
    schema is checked before TensorFlow is ever imported (it would take seconds)."""
    script = textwrap.dedent("""
        import sys
        from kexp.cli import app
        try:
            app(sys.argv[1:])
        finally:
            sys.stderr.write("\\nTENSORFLOW IMPORTED\\n" if "tensorflow" in sys.modules else "")
    """)
    for name, data in HOSTILE_FILES.items():
        path = tmp_path / name
        path.write_bytes(data)
        proc = subprocess.run([sys.executable, "-c", script, "validate", str(path)], capture_output=True,
                              text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        assert "TENSORFLOW IMPORTED" not in proc.stderr, name
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"{path}:"), lines


def test_undecodable_command_line_bytes_are_reported_not_crashed_on(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_bytes(dump(BASE))
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    args = [os.fsencode(sys.executable), b"-m", b"kexp", b"validate", os.fsencode(path), b"--no-data",
            b"--set", b"name=caf\xff", b"--set", b"\xfe\xff=1", b"--set", "seed=é".encode()]
    proc = subprocess.run(args, capture_output=True, timeout=60, env=env)
    stderr = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.startswith("--set name:1: invalid YAML: unacceptable character #xdcff"), stderr


# --------------------------------------------------------------------------- names resolve through Keras only
EVIL_MODULE = """
from pathlib import Path
Path({marker!r}).write_text("imported")
def payload(*args, **kwargs):
    Path({marker!r}).write_text("called")
class Payload:
    def __init__(self, *args, **kwargs):
        payload()
"""


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """An importable module `kexp_evil_payload` that writes a marker file when imported or called."""
    marker = tmp_path / "marker"
    (tmp_path / "kexp_evil_payload.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kexp_evil_payload", raising=False)
    return marker


def lambda_spec(marker: Path) -> dict:
    """A serialized Python lambda that writes `marker` when deserialized and called."""
    from keras.src.utils import python_utils

    code = python_utils.func_dump(lambda *a, **k: Path(str(marker)).write_text("lambda"))[0]
    return {"class_name": "__lambda__", "config": {"value": code}}


def names_config(tmp_path, marker) -> list[tuple[str, dict]]:
    """(expected key in the error, config) pairs, each smuggling a dotted path or code somewhere."""
    dotted = ["kexp_evil_payload.Payload", "kexp_evil_payload.payload", "os.system", "builtins.eval",
              "__import__('kexp_evil_payload')", "subprocess.Popen"]
    cases = []
    for name in dotted:
        for key, patch in [
            ("model.layers.0.layer", {"model": {"layers": [{"layer": name}, {"layer": "Dense", "units": 3}]}}),
            ("compile.optimizer.name", {"compile": {**BASE["compile"], "optimizer": name}}),
            ("compile.loss", {"compile": {**BASE["compile"], "loss": name}}),
            ("compile.metrics.0", {"compile": {**BASE["compile"], "metrics": [name]}}),
            ("training.callbacks.0.name", {"training": {"callbacks": [name]}}),
            ("model.layers.0", {"model": {"layers": [{"layer": "Dense", "units": 3, "activation": name}]}}),
        ]:
            cases.append((key, {**BASE, **patch}))
    for arg in ({"class_name": "Payload", "module": "kexp_evil_payload", "config": {}},
                {"class_name": "payload", "module": "kexp_evil_payload", "config": {}, "registered_name": None},
                {"class_name": "system", "module": "os", "config": {}},
                lambda_spec(marker)):
        for arg_name in ("kernel_initializer", "kernel_regularizer", "activation"):
            layer = {"layer": "Dense", "units": 3, arg_name: arg}
            cases.append(("model.layers.0", {**BASE, "model": {"layers": [layer]}}))
    cases.append(("model.layers.0", {**BASE, "model": {"layers": [
        {"layer": "Lambda", "function": lambda_spec(marker)}, {"layer": "Dense", "units": 3}]}}))
    cases.append(("compile.optimizer", {**BASE, "compile": {**BASE["compile"], "optimizer": {
        "name": "adam", "learning_rate": lambda_spec(marker)}}}))
    return cases


def test_names_and_arguments_never_import_or_run_code(tmp_path, evil_module, monkeypatch):
    """Layer, optimizer, loss, metric, callback and activation names that are dotted paths or code,
    and Keras-style argument configs naming a foreign module or a serialized lambda, are config
    errors at `kexp validate`; nothing is imported (import_module is watched) and nothing runs."""
    import importlib

    imported = []
    real_import_module = importlib.import_module

    def watch(name, package=None):
        imported.append(name)
        return real_import_module(name, package)

    monkeypatch.setattr(importlib, "import_module", watch)
    for i, (key, doc) in enumerate(names_config(tmp_path, evil_module)):
        path = tmp_path / f"names{i}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        result = invoke("validate", path)
        assert result.exit_code == 2, (doc, result.output)
        lines = stderr_of(result).splitlines()
        assert lines and all(line.startswith(f"{path}: ") for line in lines), lines
        assert any(line.startswith(f"{path}: {key}") for line in lines), (key, lines)
        assert not evil_module.exists(), (doc, evil_module.read_text())
    assert "kexp_evil_payload" not in sys.modules
    foreign = [n for n in imported if n.split(".")[0] in ("kexp_evil_payload", "os", "subprocess", "builtins")]
    assert foreign == []


def test_an_unknown_layer_name_lists_what_keras_offers(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump({**BASE, "model": {"layers": [{"layer": "Dense", "units": 3},
                                                                 {"layer": "os.system"}]}}))
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert f"{path}: model.layers.1.layer: unknown Keras layer; got 'os.system'" in stderr_of(result)


def test_keras_load_model_refuses_a_lambda_by_default_and_kexp_never_loads_unsafely(tmp_path):
    """A .keras file from others (a run folder to predict with, a model to transfer) is loaded with
    Keras' safe mode, which refuses the Python lambda inside: every load_model call in kexp says so."""
    import keras

    marker = tmp_path / "ran"
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(lambda x, m=str(marker): (Path(m).write_text("ran"), x * 2)[1])(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    marker.unlink(missing_ok=True)  # the lambda ran once while the model was built
    with pytest.raises(ValueError, match="safe_mode"):
        keras.saving.load_model(path)
    assert not marker.exists()
    source = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "kexp").rglob("*.py"))
    calls = re.findall(r"load_model\(([^)]*)\)", source)
    assert calls and all("safe_mode=True" in arguments for arguments in calls), calls
    for unsafe in ("safe_mode=False", "enable_unsafe_deserialization", "allow_pickle=True",
                   "yaml.load(", "yaml.unsafe_load", "yaml.full_load", "eval(", "exec(", "__import__("):
        if unsafe == "yaml.load(":
            assert source.count(unsafe) == source.count("yaml.load(text, Loader=_Loader)"), unsafe
            continue
        assert unsafe not in source, f"kexp uses {unsafe}"


# --------------------------------------------------------------------------- paths
@settings(PROFILE)
@given(name=st.one_of(st.text(max_size=80), st.sampled_from(
    ["../../etc", "/etc", "/", "..", ".", "a/../../b", "~", "~/x", "\x00", "con", "a\\..\\b", "....", "-"])))
def test_a_run_folder_never_leaves_the_runs_directory(name, scratch):
    runs_dir = scratch / "runs"
    try:
        run = create_run(runs_dir, name, "train")
    except RunError as exc:  # e.g. a name too long for the file system once encoded
        assert str(runs_dir) in str(exc)
        return
    assert run.path.parent == runs_dir.resolve()
    assert run.path.is_dir() and (run.path / "status.json").is_file()
    shutil.rmtree(run.path)


@pytest.mark.parametrize("how", ["--name", "--set", "config"])
@pytest.mark.parametrize("name", ["../../etc", "/tmp/elsewhere", "a/b", "..", "x" * 101, "~", "a\nb"])
def test_a_run_name_that_is_a_path_is_refused_before_anything_is_written(how, name, tmp_path):
    runs_dir = tmp_path / "runs"
    path = tmp_path / "exp.yaml"
    doc = {**BASE, "name": name} if how == "config" else BASE
    path.write_text(yaml.safe_dump(doc))
    extra = {"--name": ["--name", name], "--set": ["--set", f"name={json.dumps(name)}"], "config": []}[how]
    result = invoke("train", path, "--runs-dir", runs_dir, "--quiet", *extra)
    assert result.exit_code == 2, result.output
    assert "name: must be letters, digits" in stderr_of(result)
    assert not runs_dir.exists()


@pytest.mark.parametrize("name", ["007", "true", "null", "1e3", "2024-01-01", "a.b-c_d"])
def test_a_run_name_given_with_name_is_taken_literally(name, tmp_path):
    """`--name 007` names the run `007`; it is not read as YAML (an integer, a date, a boolean)."""
    from kexp.cli import _load

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert _load(path, [], name).name == name


@pytest.mark.parametrize("filename", ["....yaml", "-rf.yaml", "a b;rm -rf ~.yaml", "ü.yaml", ".hidden.yaml",
                                      "x" * 200 + ".yaml"])
def test_a_config_file_name_becomes_a_safe_run_name(filename, tmp_path):
    path = tmp_path / filename
    path.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "name"}))
    config = load_config(path)
    assert re.match(NAME_PATTERN, config.name), config.name
    run = create_run(tmp_path / "runs", config.name, "train")
    assert run.path.parent == (tmp_path / "runs").resolve()


CSV = "a,b,label\n" + "".join(f"{i % 7},{i % 5},{i % 3}\n" for i in range(60))


def csv_config(path_value: str) -> dict:
    return {**{k: v for k, v in BASE.items() if k not in ("dataset", "preprocessing")},
            "dataset": {"name": "csv", "path": path_value, "target": "label"}}


def test_data_paths_resolve_relative_to_the_config_file_not_the_working_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "data.csv").write_text(CSV)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(csv_config("data.csv")))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke("validate", path)
    assert result.exit_code == 0, result.output
    assert "".join(result.stdout.split()) == f"{path}:OK", result.output


@pytest.mark.parametrize("value, problem", [
    ("missing.csv", "no such file"),
    ("../missing/data.csv", "no such file"),
    ("folder", "is a folder, not a file"),
    ("latin1.csv", "not UTF-8 text"),
    ("plain.txt/data.csv", "no such file"),
    ("unreadable.csv", "cannot read: Permission denied"),
])
def test_a_missing_or_unreadable_data_path_names_the_key_and_the_resolved_path(value, problem, tmp_path):
    if value == "unreadable.csv" and os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "folder").mkdir()
    (folder / "latin1.csv").write_bytes("a,label\ncaf\xe9,1\n".encode("latin-1"))
    (folder / "plain.txt").write_text("x")
    (folder / "unreadable.csv").write_text(CSV)
    (folder / "unreadable.csv").chmod(0)
    path = folder / "exp.yaml"
    path.write_text(yaml.safe_dump(csv_config(value)))
    result = invoke("validate", path)
    assert result.exit_code == 2, result.output
    resolved = (folder / value).absolute()
    assert f"{path}: dataset.path: {resolved}: {problem}" in stderr_of(result), stderr_of(result)


# --------------------------------------------------------------------------- run folders read back
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A real, completed hold-out run folder (2 epochs of the tiny config), trained once in-process."""
    from helpers import TINY_CONFIG

    from kexp.experiment import execute

    root = tmp_path_factory.mktemp("finished")
    path = root / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    folder = execute(load_config(path), command="train", runs_dir=root / "runs", config_path=path).path
    assert find_runs([root / "runs"]) == [folder]
    return folder


JSON_GARBAGE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["status", "pid", "host", "started", "validation", "test", "folds", "best_epoch", "epochs_run", "final",
         "best", "train", "baseline", "metric", "value", "main_metric", "durations", "stop_reason", "curve",
         "diagnostics", "accuracy", "loss", "id", "name", "dataset", "command", "scheme", "x"]), inner, max_size=5),
    max_leaves=12)


@st.composite
def damage(draw, files):
    """What a crash, a full disk, a bad copy or a hostile hand can do to a run folder's files."""
    changes = {}
    for name in draw(st.lists(st.sampled_from(files), min_size=1, max_size=4, unique=True)):
        how = draw(st.sampled_from(["truncate", "delete", "bytes", "json", "deep", "yaml", "partial_json"]))
        changes[name] = (how, draw(st.integers(0, 10**6)), draw(JSON_GARBAGE), draw(st.binary(max_size=64)))
    return changes


RUN_FILES = ["status.json", "metrics.json", "config.json", "config.yaml", "environment.json", "history.csv",
             "preprocessing.json", "summary.txt", "final_history.csv"]


def apply_damage(folder: Path, changes: dict) -> None:
    for name, (how, offset, value, raw) in changes.items():
        target = folder / name
        data = target.read_bytes() if target.exists() else b""
        if how == "truncate":
            target.write_bytes(data[: offset % (len(data) + 1)])
        elif how == "delete":
            target.unlink(missing_ok=True)
        elif how == "bytes":
            target.write_bytes(raw)
        elif how == "json":
            target.write_text(json.dumps(value))
        elif how == "deep":
            target.write_text("[" * 100_000 + "]" * 100_000 if name.endswith(".json") else "a:\n" + "".join(
                " " * i + "- \n" for i in range(1, 2000)))
        elif how == "yaml":
            target.write_text(BILLION_LAUGHS if offset % 2 else "!!python/object/apply:os.system ['true']\n")
        elif how == "partial_json":
            target.write_bytes(data[: max(0, len(data) - 1 - offset % 10)])


@settings(CLI_PROFILE)
@given(changes=damage(RUN_FILES))
def test_damaged_run_folders_are_read_back_by_read_run_compare_and_show(changes, finished_run, scratch):
    folder = scratch / "runs" / finished_run.name
    shutil.rmtree(folder.parent, ignore_errors=True)
    shutil.copytree(finished_run, folder)
    apply_damage(folder, changes)
    record = read_run(folder)
    assert record.status in ("running", "completed", "failed", "interrupted", "incomplete")
    compare = invoke("compare", folder.parent)
    assert compare.exit_code in (0, 1, 2), compare.output
    show = invoke("show", folder)
    assert show.exit_code in (0, 1, 2), show.output


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    """A real, completed 2-fold run folder of the tiny config (trained in-process, one epoch)."""
    from helpers import TINY_CONFIG

    from kexp.experiment import execute

    root = tmp_path_factory.mktemp("kfold")
    path = root / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    config = load_config(path, ["validation={scheme: kfold, n_splits: 2}", "training.epochs=1"])
    return execute(config, command="kfold", runs_dir=root / "runs", config_path=path).path


ESCAPE = "../../../kexp-escaped"
RESUME_DAMAGE = {
    "no_folds_file": ("folds.json", None, "folds.json: cannot read the folds"),
    "folds_not_json": ("folds.json", "{not json", "folds.json: cannot read the folds"),
    "folds_without_splits": ("folds.json", {}, "folds.json: cannot read the folds"),
    "fold_id_is_a_path": ("folds.json", {"splits": [{"id": ESCAPE, "repeat": 0, "fold": 0, "train_idx": [0],
                                                      "val_idx": [1]}]}, "is not a plain name"),
    "indices_out_of_range": ("folds.json", {"splits": [{"id": "r0-f0", "repeat": 0, "fold": 0,
                                                        "train_idx": [10**9], "val_idx": [1]}]}, "outside 0.."),
    "indices_not_numbers": ("folds.json", {"splits": [{"id": "r0-f0", "repeat": 0, "fold": 0,
                                                       "train_idx": ["x"], "val_idx": [1]}]}, "cannot read"),
    "no_status": ("status.json", None, "not a kexp run folder"),
    "config_garbage": ("config.json", {"model": 1}, "config.yaml: model: input should be a valid dictionary"),
    "environment_odd": ("environment.json", {"config_file": [1]}, None),  # resuming works: see the test
}


@pytest.mark.parametrize("case", sorted(RESUME_DAMAGE))
def test_resuming_a_damaged_or_hostile_kfold_folder_is_a_clear_error(case, kfold_run, tmp_path):
    """`kexp kfold --resume` reads a folder anyone could have edited: a bad folds.json (a fold id
    that is a path, indices for other data), a missing status or a broken config is an error naming
    the file, never a traceback or a file written outside the run folder."""
    import signal

    name, content, message = RESUME_DAMAGE[case]
    folder = tmp_path / "a" / "b" / "c" / kfold_run.name
    shutil.copytree(kfold_run, folder)
    if name == "config.json":
        (folder / "config.yaml").write_text("model: 1\n")
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_text(content if isinstance(content, str) else json.dumps(content))
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = invoke("kfold", "--resume", folder, "--quiet")
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    if case == "environment_odd":  # only the note of where the config came from is odd: resuming works
        assert result.exit_code == 0, result.output
        assert read_run(folder).status == "completed"
        return
    assert result.exit_code in (1, 2), result.output
    assert message in stderr_of(result), stderr_of(result)
    assert not (tmp_path / "kexp-escaped").exists() and not (tmp_path / "a" / "kexp-escaped").exists()


def test_concurrent_create_run_with_one_name_gives_distinct_folders(tmp_path):
    made, errors = [], []

    def create():
        try:
            made.append(create_run(tmp_path / "runs", "same", "train").path)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(made)) == 32 and all(p.parent == (tmp_path / "runs").resolve() for p in made)


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
@pytest.mark.parametrize("key", ["training.epochs", "preprocessing.scale", "dataset.test_split", "validation.size",
                                 "compile.loss_weights", "seed"])
def test_nan_and_inf_are_refused_where_the_schema_knows_the_type(key, value, tmp_path):
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match=rf"nan\.yaml: {re.escape(key)}: "):
        load_config(path, [f"{key}={value}"])


# --------------------------------------------------------------------------- found by the valid-but-unusual properties
@pytest.mark.parametrize("seed", [-1, 2**32])
def test_a_seed_numpy_cannot_take_is_a_config_error_naming_the_seed(seed, tmp_path):
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump({**BASE, "seed": seed}))
    with pytest.raises(ConfigError, match=rf"seed\.yaml: seed: .*; got {seed}"):
        load_config(path)


@pytest.mark.parametrize("name", ["1e3", "2e-5", "1E10"])
def test_a_run_folders_config_yaml_is_a_config_kexp_reads_back_the_same(name, tmp_path):
    """`kexp train runs/<run>/config.yaml` reruns a run: the file kexp writes reads back as the same config."""
    from kexp.runs import write_yaml

    source = tmp_path / "exp.yaml"
    source.write_text(yaml.safe_dump(BASE))
    config = load_config(source, [f'name="{name}"'])
    saved = tmp_path / "config.yaml"
    write_yaml(saved, config.to_dict())
    assert same(load_config(saved).to_dict(), config.to_dict())
