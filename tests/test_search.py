"""The `search:` section: the space parsed, grid and random points, trial configs, and every problem
reported at once in `FILE: search.space.KEY: ...` form (no training, no Keras)."""

import itertools
import re
import subprocess
import sys
import textwrap

import pytest
from helpers import TINY_CONFIG

from kexp.config import load_config, validate_config
from kexp.errors import ConfigError
from kexp.search import plan, refuse_search

GRID_12 = """
search:
  space:
    model.layers.0.units: [4, 8]
    training.batch_size: [8, 16, 32]
    compile.optimizer.learning_rate: [0.01, 0.001]
"""


def load(tmp_path, search, seed=0):
    path = tmp_path / "sweep.yaml"
    path.write_text(TINY_CONFIG.replace("seed: 0\n", f"seed: {seed}\n", 1) + textwrap.dedent(search))
    return load_config(path), str(path)


def planned(tmp_path, search, seed=0, yes=False):
    config, source = load(tmp_path, search, seed)
    return plan(config, source, yes=yes)


def problems(tmp_path, search, yes=False):
    config, source = load(tmp_path, search)
    with pytest.raises(ConfigError) as info:
        plan(config, source, yes=yes)
    assert all(line.startswith(f"{source}: ") for line in info.value.problems)
    return [line.removeprefix(f"{source}: ") for line in info.value.problems]


def points(result):
    return [tuple(t.params.values()) for t in result.trials]


# ---- the space
def test_int_ranges_enumerate_by_step_adding_or_multiplying(tmp_path):
    result = planned(tmp_path, """
        search:
          limit: 1000
          space:
            training.epochs: {min: 1, max: 3}
            training.batch_size: {min: 8, max: 20, step: 6}
            model.layers.0.units: {min: 4, max: 512, step: 2, log: true}
        """)
    assert result.space == {
        "training.epochs": {"type": "int", "min": 1, "max": 3, "log": False, "values": [1, 2, 3]},
        "training.batch_size": {"type": "int", "min": 8, "max": 20, "step": 6, "log": False, "values": [8, 14, 20]},
        "model.layers.0.units": {"type": "int", "min": 4, "max": 512, "step": 2, "log": True,
                                 "values": [4, 8, 16, 32, 64, 128, 256, 512]},
    }
    assert len(result.trials) == result.size == 3 * 3 * 8
    assert all(type(v) is int for t in result.trials for v in t.params.values())


def test_float_ranges_with_a_step_enumerate_rounded_values(tmp_path):
    result = planned(tmp_path, """
        search:
          space:
            validation.size: {min: 0.1, max: 0.5, step: 0.1}
            compile.optimizer.learning_rate: {min: 0.0001, max: 0.1, step: 10, log: true}
            preprocessing.scale: {min: 1, max: 2.0, step: 0.5}
        """)
    assert result.space["validation.size"]["values"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert result.space["compile.optimizer.learning_rate"]["values"] == [0.0001, 0.001, 0.01, 0.1]
    assert result.space["preprocessing.scale"] == {"type": "float", "min": 1, "max": 2.0, "step": 0.5, "log": False,
                                                  "values": [1.0, 1.5, 2.0]}
    assert {t.params["validation.size"] for t in result.trials} == {0.1, 0.2, 0.3, 0.4, 0.5}


def test_continuous_ranges_are_sampled_within_bounds_by_random_search(tmp_path):
    result = planned(tmp_path, """
        search:
          method: random
          trials: 30
          space:
            compile.optimizer.learning_rate: {min: 0.0001, max: 0.1, log: true}
            validation.size: {min: 0.1, max: 0.4}
            training.batch_size: {min: 8, max: 256, log: true}
        """)
    assert result.size is None
    assert result.space["compile.optimizer.learning_rate"] == {"type": "float", "min": 0.0001, "max": 0.1, "log": True}
    rates = [t.params["compile.optimizer.learning_rate"] for t in result.trials]
    sizes = [t.params["validation.size"] for t in result.trials]
    batches = [t.params["training.batch_size"] for t in result.trials]
    assert all(0.0001 <= r <= 0.1 for r in rates) and all(0.1 <= s <= 0.4 for s in sizes)
    assert all(type(b) is int and 8 <= b <= 256 for b in batches)
    assert sum(r < 0.01 for r in rates) >= 10  # log-uniform: two of three decades lie below 0.01
    assert len(set(points(result))) == 30


# ---- grid
def test_grid_runs_every_combination_exactly_once(tmp_path):
    result = planned(tmp_path, GRID_12)
    expected = list(itertools.product([4, 8], [8, 16, 32], [0.01, 0.001]))
    assert sorted(points(result)) == sorted(expected) and len(points(result)) == 12
    assert [t.id for t in result.trials] == [f"t{i:03d}" for i in range(12)]
    assert result.method == "grid" and result.size == 12


def test_grid_order_is_shuffled_by_the_sampling_seed(tmp_path):
    expected = list(itertools.product([4, 8], [8, 16, 32], [0.01, 0.001]))
    first = points(planned(tmp_path, GRID_12))
    assert first != expected
    assert points(planned(tmp_path, GRID_12)) == first
    assert points(planned(tmp_path, GRID_12 + "  seed: 0\n")) == first  # default: the config's seed (0)
    other = points(planned(tmp_path, GRID_12 + "  seed: 1\n"))
    assert other != first and sorted(other) == sorted(first)
    assert points(planned(tmp_path, GRID_12, seed=1)) == other  # the config's seed, when no search.seed


# ---- random
RANDOM = """
search:
  method: random
  trials: {trials}
  space:
    model.layers.0.units: [4, 8]
    training.batch_size: [8, 16, 32]
    compile.optimizer.learning_rate: [0.01, 0.001, 0.0001, 0.00001]
"""


def test_random_search_samples_distinct_points_from_its_seed(tmp_path):
    result = planned(tmp_path, RANDOM.format(trials=10))
    assert len(points(result)) == 10 and len(set(points(result))) == 10
    space = set(itertools.product([4, 8], [8, 16, 32], [0.01, 0.001, 0.0001, 0.00001]))
    assert set(points(result)) <= space
    assert points(planned(tmp_path, RANDOM.format(trials=10))) == points(result)
    assert points(planned(tmp_path, RANDOM.format(trials=10) + "  seed: 3\n")) != points(result)
    assert set(points(planned(tmp_path, RANDOM.format(trials=24)))) == space  # as many as there are: all


def test_random_search_cannot_draw_more_distinct_points_than_the_space_has(tmp_path):
    assert problems(tmp_path, RANDOM.format(trials=25)) == [
        "search.trials: 25 distinct points asked, but the space has only 24; lower trials, or use method: grid "
        "to run them all"]


# ---- trial configs
def test_trial_configs_are_valid_named_and_monitor_the_objective(tmp_path):
    result = planned(tmp_path, GRID_12 + "  objective: val_accuracy\n")
    assert result.objective == "val_accuracy" and result.seeds == 1
    for trial in result.trials:
        assert "search" not in trial.config
        config = validate_config(trial.config)
        assert config.name == f"sweep-{trial.id}" and config.validation.monitor == "val_accuracy"
        assert config.model.layers[0]["units"] == trial.params["model.layers.0.units"]
        assert config.training.batch_size == trial.params["training.batch_size"]
        assert config.compile.optimizer["learning_rate"] == trial.params["compile.optimizer.learning_rate"]
        assert config.training.epochs == 2 and trial.seed == config.seed == 0
    assert planned(tmp_path, GRID_12).objective == "val_loss"  # default: validation.monitor


ONE_LAYER_OR = """
search:
  space:
    model.layers:
      - [{layer: Dense, units: 3, activation: softmax}]
"""


def test_whole_structures_are_choices(tmp_path):
    result = planned(tmp_path, ONE_LAYER_OR + """\
      - [{layer: Dense, units: 8, activation: relu}, {layer: Dense, units: 8, activation: relu},
         {layer: Dense, units: 3, activation: softmax}]
    model.layers.0.kernel_regularizer: [null, {name: L2, l2: 0.001}]
""")
    stacks = sorted((len(t.config["model"]["layers"]), str(t.config["model"]["layers"][0]["kernel_regularizer"]))
                    for t in result.trials)
    assert stacks == [(1, "None"), (1, "{'name': 'L2', 'l2': 0.001}"), (3, "None"), (3, "{'name': 'L2', 'l2': 0.001}")]
    for trial in result.trials:  # a choice set into one trial is not shared with another, nor with its params
        validate_config(trial.config)
        assert "kernel_regularizer" not in trial.params["model.layers"][0]


def test_switching_scheme_drops_the_other_schemes_keys(tmp_path):
    result = planned(tmp_path, "search:\n  space:\n    validation.scheme: [holdout, kfold]\n")
    kfold = next(t.config["validation"] for t in result.trials if t.params["validation.scheme"] == "kfold")
    assert "size" not in kfold and "n_splits" not in kfold
    for trial in result.trials:
        assert validate_config(trial.config).validation.scheme == trial.params["validation.scheme"]


def test_seeds_repeat_each_trial_with_consecutive_training_seeds(tmp_path):
    result = planned(tmp_path, "search:\n  seeds: 3\n  space:\n    model.layers.0.units: [4, 8]\n", seed=7)
    assert [(t.id, t.seed, t.config["seed"], t.config["name"]) for t in result.trials] == [
        ("t000", 7, 7, "sweep-t000-s0"), ("t000", 8, 8, "sweep-t000-s1"), ("t000", 9, 9, "sweep-t000-s2"),
        ("t001", 7, 7, "sweep-t001-s0"), ("t001", 8, 8, "sweep-t001-s1"), ("t001", 9, 9, "sweep-t001-s2")]
    assert result.seeds == 3 and result.trials[0].params == result.trials[2].params != result.trials[3].params


def test_train_and_kfold_refuse_a_sweep_config(tmp_path):
    config, source = load(tmp_path, GRID_12)
    with pytest.raises(ConfigError) as info:
        refuse_search(config, source, "train")
    assert info.value.problems == [f"{source}: search: applies to `kexp sweep`, not `kexp train`; run "
                                   f"`kexp sweep {source}` (or remove the search: section)"]
    plain = validate_config({k: v for k, v in config.to_dict().items() if k != "search"})
    assert refuse_search(plain, source, "train") is None
    assert "search" not in plain.to_dict() and config.to_dict()["search"]["space"] == config.search.space


def test_search_does_not_import_keras(tmp_path):
    config, source = load(tmp_path, GRID_12)
    code = (f"import sys; from kexp.config import load_config; from kexp.search import plan; "
            f"plan(load_config({source!r}), {source!r}); "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- every problem, at once
@pytest.mark.parametrize(("space", "expected"), [
    ("training.epochs: []", "search.space.training.epochs: no choices; list one or more values, e.g. [16, 32]; got []"),
    ("training.epochs: 5", "search.space.training.epochs: must be a list of choices or a range {min, max, step} / "
                           "{min, max, log: true}; got 5"),
    ("compile.optimizer: {name: sgd}", "search.space.compile.optimizer: a mapping is a range {min, max, step, log}; "
                                       "to offer mappings as choices, list them: [{...}, {...}]; got {'name': 'sgd'}"),
    ("training.epochs: {min: 1, max: 3, stp: 1}", "search.space.training.epochs: unknown range key 'stp' (did you "
                                                  "mean step?); allowed: log, max, min, step"),
    ("training.epochs: {min: 1}", "search.space.training.epochs: a range needs min and max; max missing"),
    ("training.epochs: {min: 1, max: a}", "search.space.training.epochs: max must be a number; got 'a'"),
    ("training.epochs: {min: 1, max: 4, log: 1}", "search.space.training.epochs: log must be true or false; got 1"),
    ("training.epochs: {min: 5, max: 1}", "search.space.training.epochs: min must be <= max; got min=5, max=1"),
    ("training.epochs: {min: 1, max: 5, step: 0}", "search.space.training.epochs: step must be > 0; got step=0"),
    ("training.epochs: {min: 1, max: 5, step: 1, log: true}",
     "search.space.training.epochs: with log: true, step multiplies (min, min*step, ...) and must be > 1; got step=1"),
    ("preprocessing.scale: {min: 0.0, max: 1.0, log: true}",
     "search.space.preprocessing.scale: log: true needs min > 0; got min=0.0"),
    ("preprocessing.scale: {min: 0.5, max: 1.0}",
     "search.space.preprocessing.scale: a range without step is continuous, which a grid cannot cover; give a "
     "step, list the values, or use method: random"),
    ("training.epochs: [1, 2, 1]", "search.space.training.epochs: choice 1 is listed twice; list each choice once"),
    ("name: [a, b]", "search.space.name: cannot vary: each trial is named <name>-<trial id>"),
    ("search.seed: [1, 2]", "search.space.search.seed: the search section cannot be searched"),
    ("validation.monitor: [val_loss, val_accuracy]",
     "search.space.validation.monitor: cannot vary: every trial monitors the objective; set search.objective instead"),
    ("model..units: [1]", "search.space.model..units: not a dotted config key (as --set takes them), e.g. "
                          "model.layers.0.units"),
    ("model.layers.5.units: [1, 2]", "search.space.model.layers.5.units: no list item '5' (the list has 2 items)"),
    ("training.epochs: [2, 0]", "search.space.training.epochs: choice 0: input should be greater than 0; got 0"),
])
def test_each_problem_names_the_search_key(tmp_path, space, expected):
    assert problems(tmp_path, f"search:\n  space:\n    {space}\n") == [expected]


def test_section_level_problems(tmp_path):
    assert problems(tmp_path, "search: {space: {}}\n") == [
        "search.space: is empty; map config keys to choices, e.g. model.layers.0.units: [16, 32]"]
    assert problems(tmp_path, "search:\n  method: random\n  space: {training.epochs: [1, 2]}\n") == [
        "search.trials: required with method: random (how many distinct points to try), e.g. trials: 20"]
    assert problems(tmp_path, "search:\n  trials: 3\n  space: {training.epochs: [1, 2]}\n") == [
        "search.trials: has no effect with method: grid, which runs every combination; remove it, or set "
        "method: random"]
    assert problems(tmp_path, "search:\n  objective: accuracy\n  space: {training.epochs: [1, 2]}\n") == [
        "search.objective: must be a validation metric (val_...), e.g. val_loss or val_accuracy; got 'accuracy'"]


def test_a_grid_over_the_limit_needs_yes(tmp_path):
    search = "search:\n  limit: 10\n" + GRID_12.partition("search:\n")[2]
    assert problems(tmp_path, search) == [
        "search.space: the grid has 12 points, more than search.limit (10); run them all with `kexp sweep --yes`, "
        "raise search.limit, or use method: random with trials: N"]
    assert len(planned(tmp_path, search, yes=True).trials) == 12


def test_a_bad_choice_is_named_once_not_once_per_grid_point(tmp_path):
    lines = problems(tmp_path, """
        search:
          space:
            training.epochs: [2, 0, -1]
            training.batch_size: [8, 16, 32]
            training.epoch: [1, 2]
        """)
    assert lines == [
        "search.space.training.epoch: unknown key (did you mean epochs?); allowed: batch_size, callbacks, "
        "class_weight, epochs, shuffle, steps_per_execution",
        "search.space.training.epochs: choice 0: input should be greater than 0; got 0",
        "search.space.training.epochs: choice -1: input should be greater than 0; got -1",
    ]


def test_a_key_path_that_cannot_be_set_hides_no_other_problem(tmp_path):
    assert problems(tmp_path, "search:\n  space:\n    model.layers.5.units: [1, 2]\n    training.epochs: [2, 0]\n") == [
        "search.space.model.layers.5.units: no list item '5' (the list has 2 items)",
        "search.space.training.epochs: choice 0: input should be greater than 0; got 0",
    ]


def test_a_bad_whole_structure_choice_names_the_key_inside_it(tmp_path):
    lines = problems(tmp_path, ONE_LAYER_OR + "      - [{units: 3}]\n")
    assert lines == ["search.space.model.layers: choice [{'units': 3}]: model.layers.0: needs a 'layer' key naming "
                     "the Keras class; got keys ['units']"]


def test_a_combination_the_schema_refuses_is_reported_by_trial(tmp_path):
    lines = problems(tmp_path, """
        search:
          space:
            validation.stratify: [false, true]
            validation.shuffle: [true, false]
        """)
    assert len(lines) == 1
    assert re.fullmatch(r"search\.space: trial t00[0-3] \(validation\.stratify=True, validation\.shuffle=False\): "
                        r"validation: stratify has no effect when shuffle is false; set shuffle: true", lines[0])


def test_every_problem_is_reported_at_once(tmp_path):
    lines = problems(tmp_path, """
        search:
          objective: loss
          space:
            training.epochs: [2, 0]
            training.batch_size: []
            preprocessing.scale: {min: 2, max: 1}
        """)
    assert lines == [
        "search.space.training.batch_size: no choices; list one or more values, e.g. [16, 32]; got []",
        "search.space.preprocessing.scale: min must be <= max; got min=2, max=1",
        "search.objective: must be a validation metric (val_...), e.g. val_loss or val_accuracy; got 'loss'",
        "search.space.training.epochs: choice 0: input should be greater than 0; got 0",
    ]


def test_the_search_section_schema_rejects_unknown_keys_and_values(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "search:\n  metod: grid\n  method: bayes\n  seeds: 0\n  space: {training.epochs: [1]}\n")
    text = "\n".join(info.value.problems)
    assert "search.metod: unknown key (did you mean method?); allowed: batch, eta, final, limit, max_epochs, method, " \
           "min_epochs, objective, seed, seeds, space, trials" in text
    assert "search.method: not an allowed value; got 'bayes'; allowed: grid, random, halving or tpe" in text
    assert "search.seeds: input should be greater than 0; got 0" in text
