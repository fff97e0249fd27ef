"""A sweep config's `search:` section, checked and expanded into the trials that `kexp sweep` runs.

    search:
      method: grid                       # every combination, in an order shuffled by the sampling seed
      space:                             # dotted config keys, as `--set` takes them (list indexes too)
        model.layers.0.units: [16, 32]   # a list of choices: any values, whole structures too
        training.batch_size: {min: 16, max: 128, step: 2, log: true}   # 16, 32, 64, 128
        compile.optimizer.learning_rate: {min: 0.0001, max: 0.01, log: true}   # continuous: random only

A range `{min, max, step?, log?}` holds ints when min, max and step are ints (step 1 by default), else
floats; `step` adds, or multiplies with `log: true`; a float range without a step (or an int range with
`log: true` and no step) is continuous, sampled uniformly (log-uniformly with `log: true`) by
`method: random`, which draws `trials` distinct points.

`plan` reports every problem of the section at once, before anything trains: the space itself, then
each choice of each key against the schema (with the other keys at their first choice, so that a bad
choice is named once), then each trial's whole config. What needs Keras or the data (layer arguments,
the objective among the logged metrics) is left to the sweep runner. No Keras, no TensorFlow here.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import re
from dataclasses import dataclass
from typing import Any

from kexp.config import Config, _drop_other_scheme, _set_path, show, validate_config
from kexp.errors import ConfigError, close_matches

RANGE_KEYS = ("log", "max", "min", "step")
MAX_TRIALS = 100_000  # the most points a plan holds, --yes or not
MAX_VALUES = 100_000  # the most values one stepped range enumerates
TRIAL_LINES = 10  # trial-by-trial problems listed before "and N more"
KEY = re.compile(r"[^.\s]+(?:\.[^.\s]+)*")


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: a point of the space trained with one seed. With `search.seeds: N` a trial is
    N Trials with the same id and params, in seed order (seed, seed + 1, ...)."""

    id: str  # t000, t001, ... in the order the trials run
    params: dict[str, Any]  # dotted key -> value, in the space's order
    seed: int  # the training seed (the config's `seed`)
    config: dict  # the whole config without `search`: name <name>-<id> (-s<k> for the k-th of several
    #               seeds, k from 0), this seed, validation.monitor = the objective


@dataclass(frozen=True)
class SearchPlan:
    method: str  # grid or random
    space: dict[str, dict]  # key -> {"values": [...]} or {"type", "min", "max", "step"?, "log", "values"?}
    objective: str  # the metric every trial is scored on (a val_ name; mode: metrics.json's)
    seed: int  # the sampling seed
    seeds: int  # training seeds per trial
    size: int | None  # distinct points in the space; None when a range is continuous
    trials: list[Trial]  # every trial and seed, in run order
    rungs: tuple[int, ...] = ()  # halving: the epochs of each rung, the last one max_epochs
    eta: int = 3  # halving: 1 in eta trials of a rung goes on to the next
    budget: int = 0  # tpe: how many distinct points to ask Optuna for (`trials` then grows as they come)
    batch: int = 1  # tpe: points asked at a time
    dimensions: tuple = ()  # tpe: the space's keys, parsed
    base: dict | None = None  # tpe: the config a point is applied to
    name: str = ""

    def new_trial(self, point: dict) -> list[Trial]:
        """tpe: the next trial (one per seed) at `point`, appended to `trials`."""
        number = len({t.id for t in self.trials})
        made = _trials([point], self.base, self.objective, self.seeds, self.name, start=number)
        self.trials.extend(made)
        return made


@dataclass(frozen=True)
class _Dimension:
    """One searched key: finite `values` (choices, or a stepped range enumerated), or a continuous
    range from `low` to `high` (`values` None)."""

    key: str
    spec: dict
    values: tuple | None
    low: Any = 0
    high: Any = 0
    log: bool = False
    integer: bool = False

    @property
    def size(self) -> int | None:
        if self.values is not None:
            return len(self.values)
        return self.high - self.low + 1 if self.integer else None

    @property
    def checked(self) -> tuple:
        """The values checked one by one against the schema: every choice; a range's two ends."""
        if "values" in self.spec and "min" not in self.spec:
            return self.values
        ends = (self.values[0], self.values[-1]) if self.values else (self.low, self.high)
        return ends[:1] if ends[0] == ends[1] else ends

    def sample(self, rng: random.Random) -> Any:
        if self.values is not None:
            return self.values[rng.randrange(len(self.values))]
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        value = round(value) if self.integer else float(f"{value:.6g}")
        return min(max(value, self.low), self.high)


def refuse_search(config: Config, source: str, command: str) -> None:
    """`kexp train`/`kfold` on a sweep config: an error, never a silently dropped search."""
    if config.search is not None:
        raise ConfigError(f"{source}: search: applies to `kexp sweep`, not `kexp {command}`; run "
                          f"`kexp sweep {source}` (or remove the search: section)")


def plan(config: Config, source: str, *, yes: bool = False) -> SearchPlan:
    """The trials of a sweep config, every one of them valid against the schema; or one ConfigError
    listing every problem of the search section. `yes` allows a grid larger than `search.limit`."""
    search = config.search
    if search is None:
        raise ConfigError(f"{source}: search: required key is missing; a sweep config has a search: section, "
                          "e.g. search: {space: {model.layers.0.units: [16, 32]}}")
    problems: list[str] = []
    dims: list[_Dimension] = []
    if not search.space:
        problems.append(f"{source}: search.space: is empty; map config keys to choices, e.g. "
                        "model.layers.0.units: [16, 32]")
    for key, value in search.space.items():
        dim, found = _dimension(key, value, search.method)
        problems += [f"{source}: {line}" for line in found]
        if dim is not None:
            dims.append(dim)
    if search.objective is not None and not search.objective.startswith("val_"):
        problems.append(f"{source}: search.objective: must be a validation metric (val_...), e.g. val_loss or "
                        f"val_accuracy; got {show(search.objective)}")
    if search.method in ("random", "tpe") and search.trials is None:
        problems.append(f"{source}: search.trials: required with method: {search.method} (how many distinct "
                        "points to try), e.g. trials: 20")
    if search.method == "tpe" and not _has_optuna():
        problems.append(f'{source}: search.method: tpe needs Optuna: pip install "kexp[optuna]"')
    if search.method != "tpe" and search.batch != 1:
        problems.append(f"{source}: search.batch: has no effect with method: {search.method}; it sets how "
                        "many points method: tpe asks at a time")
    if search.method == "grid" and search.trials is not None:
        problems.append(f"{source}: search.trials: has no effect with method: grid, which runs every "
                        "combination; remove it, or set method: random")
    rungs, problems_of_rungs = _rungs(config, source)
    problems += problems_of_rungs
    objective = search.objective or config.validation.monitor
    seed = config.seed if search.seed is None else search.seed
    sizes = [d.size for d in dims]
    size = math.prod(sizes) if dims and None not in sizes else None
    base = config.to_dict()
    base.pop("search", None)
    if rungs:  # a trial's config trains to the last rung
        base["training"]["epochs"] = rungs[-1]

    points: list[dict] = []
    if not problems and search.method == "tpe" and size is not None and size < search.trials:
        problems.append(f"{source}: search.trials: {search.trials} distinct points asked, but the space has only "
                        f"{size}; lower trials, or use method: grid to run them all")
    if not problems and search.method != "tpe":  # every key parsed: the points of the space (tpe: asked later)
        sample = search.method == "random" or (search.method == "halving" and search.trials is not None)
        found, points = (_random if sample else _grid)(dims, search, size, seed, yes)
        problems += [f"{source}: {line}" for line in found]
    lines, bad, blocked = _check_choices(dims, base, objective, source)
    problems += lines
    trials = _trials(points, base, objective, search.seeds, config.name)
    if not blocked:
        problems += _check_trials(trials, bad, base, objective, source)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    return SearchPlan(search.method, {d.key: d.spec for d in dims}, objective, seed, search.seeds, size, trials,
                      rungs, search.eta, search.trials or 0, search.batch, tuple(dims), base, config.name)


def _has_optuna() -> bool:
    import importlib.util

    return importlib.util.find_spec("optuna") is not None


def _rungs(config: Config, source: str) -> tuple[tuple[int, ...], list[str]]:
    """Successive halving's rungs: min_epochs, x eta, ... up to max_epochs (default: training.epochs)."""
    search = config.search
    if search.method != "halving":
        defaults = {k: type(search).model_fields[k].default for k in ("eta", "min_epochs", "max_epochs")}
        keys = [k for k, default in defaults.items() if getattr(search, k) != default]
        return (), [f"{source}: search.{k}: has no effect with method: {search.method}; it sets successive "
                    "halving (method: halving)" for k in keys]
    top = search.max_epochs or config.training.epochs
    low = search.min_epochs or max(1, math.ceil(top / search.eta**2))
    if low > top:
        where = "search.max_epochs" if search.max_epochs else "training.epochs"
        return (), [f"{source}: search.min_epochs: must be at most {where} ({top}); got {low}"]
    rungs = []
    while low < top:
        rungs.append(low)
        low *= search.eta
    return (*rungs, top), []


# --------------------------------------------------------------------------- the space
def _dimension(key: str, value: Any, method: str) -> tuple[_Dimension | None, list[str]]:
    """One key of `search.space` parsed, or the problems with it (lines without the file name)."""
    where = f"search.space.{key}"
    reason = _key_problem(key)
    if reason:
        return None, [f"{where}: {reason}"]
    if isinstance(value, list):
        if not value:
            return None, [f"{where}: no choices; list one or more values, e.g. [16, 32]; got []"]
        texts = [_canonical(item) for item in value]
        twice = [item for i, item in enumerate(value) if texts[i] in texts[:i]]
        return _Dimension(key, {"values": copy.deepcopy(value)}, tuple(value)), [
            f"{where}: choice {show(item)} is listed twice; list each choice once" for item in twice]
    if not isinstance(value, dict):
        return None, [f"{where}: must be a list of choices or a range {{min, max, step}} / {{min, max, log: true}}; "
                      f"got {show(value)}"]
    unknown = [k for k in value if k not in RANGE_KEYS]
    if unknown and "min" not in value and "max" not in value:
        return None, [f"{where}: a mapping is a range {{min, max, step, log}}; to offer mappings as choices, list "
                      f"them: [{{...}}, {{...}}]; got {show(value)}"]
    problems = [f"{where}: unknown range key {show(k)}{close_matches(k, RANGE_KEYS)}; allowed: "
                f"{', '.join(RANGE_KEYS)}" for k in unknown]
    missing = [k for k in ("min", "max") if k not in value]
    if missing:
        problems.append(f"{where}: a range needs min and max; {' and '.join(missing)} missing")
    problems += [f"{where}: {k} must be a number; got {show(value[k])}" for k in ("min", "max", "step")
                 if k in value and not _number(value[k])]
    log = value.get("log", False)
    if not isinstance(log, bool):
        problems.append(f"{where}: log must be true or false; got {show(log)}")
    if problems:
        return None, problems
    low, high, step = value["min"], value["max"], value.get("step")
    if low > high:
        problems.append(f"{where}: min must be <= max; got min={low}, max={high}")
    if step is not None and step <= 0:
        problems.append(f"{where}: step must be > 0; got step={step}")
    elif step is not None and log and step <= 1:
        problems.append(f"{where}: with log: true, step multiplies (min, min*step, ...) and must be > 1; "
                        f"got step={step}")
    if log and low <= 0:
        problems.append(f"{where}: log: true needs min > 0; got min={low}")
    if problems:
        return None, problems
    integer = all(isinstance(v, int) for v in (low, high, step) if v is not None)
    spec = {"type": "int" if integer else "float", "min": low, "max": high,
            **({} if step is None else {"step": step}), "log": log}
    if step is None and (log or not integer):
        if method == "grid":
            return None, [f"{where}: a range without step is continuous, which a grid cannot cover; give a step, "
                          "list the values, or use method: random"]
        return _Dimension(key, spec, None, low, high, log, integer), []
    values = _enumerate(low, high, 1 if step is None else step, log, integer)
    if values is None:
        return None, [f"{where}: more than {MAX_VALUES} values from min {low} to max {high} by step {step}; "
                      "use a larger step" + ("" if integer else ", or no step (a continuous range, method: random)")]
    spec["values"] = list(values)
    return _Dimension(key, spec, tuple(values), low, high, log, integer), []


def _key_problem(key: str) -> str | None:
    if not KEY.fullmatch(key):
        return "not a dotted config key (as --set takes them), e.g. model.layers.0.units"
    if key.split(".")[0] == "search":
        return "the search section cannot be searched"
    if key == "name":
        return "cannot vary: each trial is named <name>-<trial id>"
    if key == "backend":
        return "cannot vary: a sweep runs every trial on one Keras backend; run one sweep per backend"
    if key == "validation.monitor":
        return "cannot vary: every trial monitors the objective; set search.objective instead"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _enumerate(low, high, step, log: bool, integer: bool) -> list | None:
    """A stepped range's values from low to high (None: more than MAX_VALUES); floats rounded to 12
    significant digits, so that 0.1 + 0.2 is 0.3."""
    if log:
        count = math.floor(math.log(high / low) / math.log(step) + 1e-9) + 1
    else:
        count = (high - low) // step + 1 if integer else math.floor((high - low) / step + 1e-9) + 1
    if count > MAX_VALUES:
        return None
    if integer:
        if not log:
            return list(range(low, high + 1, step))
        return [low * step**i for i in range(count) if low * step**i <= high]
    return [float(f"{(low * step**i if log else low + i * step):.12g}") for i in range(count)]


def _canonical(value: Any) -> str:
    """One text per distinct value (1 and 1.0 and true stay apart; mappings in any key order alike)."""
    return json.dumps(value, sort_keys=True)


# --------------------------------------------------------------------------- points
def _grid(dims: list[_Dimension], search, size: int, seed: int, yes: bool) -> tuple[list[str], list[dict]]:
    if size > MAX_TRIALS:
        return [f"search.space: the grid has {size} points, more than the {MAX_TRIALS} a sweep plans; use "
                "method: random with trials: N"], []
    if size > search.limit and not yes:
        return [f"search.space: the grid has {size} points, more than search.limit ({search.limit}); run them "
                "all with `kexp sweep --yes`, raise search.limit, or use method: random with trials: N"], []
    combos = list(itertools.product(*(d.values for d in dims)))
    random.Random(seed).shuffle(combos)
    return [], [{d.key: value for d, value in zip(dims, combo)} for combo in combos]


def _random(dims: list[_Dimension], search, size: int | None, seed: int, yes: bool) -> tuple[list[str], list[dict]]:
    wanted = search.trials
    if wanted > MAX_TRIALS:
        return [f"search.trials: at most {MAX_TRIALS}; got {wanted}"], []
    if size is not None and size < wanted:
        return [f"search.trials: {wanted} distinct points asked, but the space has only {size}; lower trials, "
                "or use method: grid to run them all"], []
    rng = random.Random(seed)
    if all(d.values is not None for d in dims):  # finite: distinct indices into the product
        points = []
        for index in rng.sample(range(size), wanted):
            point = {}
            for d in dims:
                index, at = divmod(index, len(d.values))
                point[d.key] = d.values[at]
            points.append(point)
        return [], points
    found: dict[str, dict] = {}
    for _ in range(wanted * 1000):
        point = {d.key: d.sample(rng) for d in dims}
        found.setdefault(_canonical(point), point)
        if len(found) == wanted:
            return [], list(found.values())
    return [f"search.trials: only {len(found)} distinct points found for the {wanted} asked; lower trials or "
            "widen the ranges"], []


def _trials(points: list[dict], base: dict, objective: str, seeds: int, name: str, start: int = 0) -> list[Trial]:
    trials = []
    for number, point in enumerate(points, start=start):
        trial_id = f"t{number:03d}"
        data, _ = _build(base, point, objective)
        first = data.get("seed")
        for k in range(seeds):
            config = copy.deepcopy(data)
            suffix = f"-{trial_id}" + (f"-s{k}" if seeds > 1 else "")
            config["name"] = name[: 100 - len(suffix)] + suffix
            config["seed"] = first + k if isinstance(first, int) and not isinstance(first, bool) else first
            trials.append(Trial(trial_id, copy.deepcopy(point), config["seed"], config))
    return trials


# --------------------------------------------------------------------------- checks against the schema
def _build(base: dict, point: dict, objective: str) -> tuple[dict, list[tuple[str, str, bool]]]:
    """The config of a point (with --set's machinery), and the keys whose path cannot be set."""
    data = copy.deepcopy(base)
    problems = []
    for key, value in point.items():
        error = _set_path(data, key.split("."), copy.deepcopy(value))
        if error:
            problems.append((key, error, True))
        elif key == "validation.scheme":
            _drop_other_scheme(data.get("validation"), value)
    if isinstance(data.get("validation"), dict):
        data["validation"]["monitor"] = objective
    return data, problems


def _problems(data: dict, paths: list, source: str) -> list[tuple[str, str, bool]]:
    """(dotted key, message, a key path problem?) for each problem of a built config: a path that
    cannot be set (the config keeps the rest), or an unknown key."""
    found = list(paths)
    try:
        validate_config(data, source)
    except ConfigError as exc:
        for line in exc.problems:
            where, _, message = line.removeprefix(f"{source}: ").partition(": ")
            found.append((where, message, message.startswith("unknown key")))
    return found


def _own_path(key: str, where: str, is_path: bool) -> bool:
    """A path problem of `key` itself (its choices aside): at the key or at a section above it."""
    return is_path and (where == key or key.startswith(f"{where}."))


def _check_choices(dims: list[_Dimension], base: dict, objective: str, source: str) -> tuple[list[str], set, bool]:
    """Each choice of each key validated once, the other keys at their first choice: the problem lines,
    the (key, value) choices found bad, and whether every trial is bound to fail (no trial checks then)."""
    first = {d.key: d.checked[0] for d in dims}
    at_first = _problems(*_build(base, first, objective), source) if dims else []
    owners = sorted(first, key=len, reverse=True)
    lines, bad, blocked = [], set(), False
    for where, message, is_path in at_first:
        owner = next((k for k in owners if where == k or where.startswith(f"{k}.") or k.startswith(f"{where}.")),
                     None)
        if owner is None:
            lines.append(f"{source}: search.space: with the first choices ({_text(first)}): {where}: {message}")
            blocked = True
            continue
        lines.append(_choice_line(source, owner, first[owner], where, message, is_path))
        bad.add((owner, _canonical(first[owner])))
        blocked = blocked or _own_path(owner, where, is_path)
    for d in dims:
        for value in d.checked[1:]:
            found = [p for p in _problems(*_build(base, {**first, d.key: value}, objective), source)
                     if p not in at_first]
            lines += [_choice_line(source, d.key, value, *problem) for problem in found]
            if found:
                bad.add((d.key, _canonical(value)))
    return lines, bad, blocked


def _choice_line(source: str, key: str, value: Any, where: str, message: str, is_path: bool) -> str:
    choice = "" if _own_path(key, where, is_path) else f"choice {show(value)}: "
    detail = message if where == key else f"{where}: {message}"
    return f"{source}: search.space.{key}: {choice}{detail}"


def _check_trials(trials: list[Trial], bad: set, base: dict, objective: str, source: str) -> list[str]:
    """The problems of whole trial configs whose choices are each sound (a combination the schema
    refuses), one line each, at most TRIAL_LINES of them."""
    lines = []
    for trial in trials:
        if any((key, _canonical(value)) in bad for key, value in trial.params.items()):
            continue
        _, paths = _build(base, trial.params, objective)
        for where, message, _ in _problems(trial.config, paths, source):
            lines.append(f"{source}: search.space: trial {trial.id} ({_text(trial.params)}): {where}: {message}")
    lines = list(dict.fromkeys(lines))
    if len(lines) > TRIAL_LINES:
        lines = [*lines[:TRIAL_LINES], f"{source}: search.space: and {len(lines) - TRIAL_LINES} more trial "
                                       "problems like these"]
    return lines


def _text(params: dict) -> str:
    return ", ".join(f"{key}={show(value)}" for key, value in params.items())
