"""The run-folder contract: every path of a run folder by name, and the `metrics.json` format.

Standard library only (no Keras, pydantic or numpy): `kexp compare` reads hundreds of run folders
through this module and must start fast.

A run folder is `RUNS_DIR/<UTC time>-<name>-<6 hex>/` (see kexp.runs, its only writer).

Layout (files marked * exist only for some runs):
    status.json        {"status", "command", "pid", "host", "started", "updated", "ended"*, "error"*}
    config.yaml        the fully resolved config
    config.json        the same, as JSON, with Keras' defaults of every named Keras object filled in
                       (Adam's learning_rate): what `compare` reads (parsing YAML is 50x slower)
    environment.json   versions, platform, seed, command line, git commit and dirty flag
    history.csv        one row per epoch (hold-out), or folds/<fold>/history.csv (K-fold)
    metrics.json       the results (`Metrics` below); partial while running
    summary.txt        the Keras model summary (fixed width)
    model.keras        the model evaluated on test (the retrained final model, else the hold-out model)
    preprocessing.json* how to prepare data for model.keras: {"format": 1, "models", "fitted_on",
                       "inputs", "feature_names", "order", "settings", "statistics", "labels"}
    best.keras*        hold-out: the best epoch's weights (best_preprocessing.json* when model.keras
                       is the retrained model, whose preprocessing differs)
    folds.json*        K-fold: every fold's train/validation sample indices
    folds/<id>/        K-fold: history.csv, metrics.json, preprocessing.json per fold (a finished fold
                       has metrics.json), and its callbacks' files (relative paths)
    checkpoint-<n>.keras* a split's model and optimizer state after epoch n, kept by `kexp sweep
                       method: halving` to train it on at the next rung (hold-out: in the run folder;
                       K-fold: in folds/<id>/); only the one of the epochs metrics.json records is used
    final/*            the retrained model's callbacks' files
    final_history.csv* the retrained model's history
    plots/*.png        learning curves
Every file gets 0666 less the umask, like any file the user makes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from kexp.records import INT, MAPPING, TEXT, Record, dict_of, list_of, object_of

STATUS = "status.json"
CONFIG_YAML = "config.yaml"
CONFIG_JSON = "config.json"
ENVIRONMENT = "environment.json"
HISTORY = "history.csv"
METRICS = "metrics.json"
SUMMARY = "summary.txt"
MODEL = "model.keras"
BEST = "best.keras"
PREPROCESSING = "preprocessing.json"
BEST_PREPROCESSING = "best_preprocessing.json"
FOLDS = "folds.json"
FOLDS_DIR = "folds"
FINAL_DIR = "final"
FINAL_HISTORY = "final_history.csv"
PLOTS_DIR = "plots"

FINAL_SPLIT = "final"  # the split id of the model retrained on all training data


def checkpoint(epochs: int) -> str:
    """A split's checkpoint after `epochs` epochs, in its split folder."""
    return f"checkpoint-{epochs}.keras"


def checkpoints(folder: Path) -> dict[int, Path]:
    """The checkpoints in a split folder, by epoch."""
    found = {}
    for path in Path(folder).glob("checkpoint-*.keras"):
        number = path.name[len("checkpoint-"):-len(".keras")]
        if number.isdigit():
            found[int(number)] = path
    return found


def split_dir(split_id: str, kfold: bool) -> str:
    """The folder of one split, relative to the run folder: "" for the hold-out split, "folds/<id>"
    for a K-fold fold, "final" for the retrained model."""
    if split_id == FINAL_SPLIT:
        return FINAL_DIR
    return f"{FOLDS_DIR}/{split_id}" if kfold else ""


def split_history(split_id: str, kfold: bool) -> str:
    """The history CSV of one split, relative to the run folder: "history.csv" (hold-out),
    "folds/<id>/history.csv" (K-fold fold), "final_history.csv" (retrained model)."""
    if split_id == FINAL_SPLIT:
        return FINAL_HISTORY
    return f"{FOLDS_DIR}/{split_id}/{HISTORY}" if kfold else HISTORY


# --------------------------------------------------------------------------- sweep folders
# A sweep folder (`kexp sweep`): RUNS_DIR/<UTC time>-<name>-sweep-<6 hex>/ holding
#     status.json        as a run's (running / completed / failed / interrupted)
#     sweep.yaml         the resolved sweep config (the experiment and its `search:` section)
#     sweep.json         the space, the method, the objective and every trial (format below)
#     trials/<run>/      each trial (and seed) as a complete run folder of its own
#     best.yaml          the best trial's config as a plain config (no `search:`): `kexp train`/`kfold` run it
#     final/<run>/*      search.final: the best config retrained on all training data and tested once (a
#                        K-fold run whose folds are the best trial's, copied, plus the final model)
#     plots/*.png        the objective against each parameter; the top trials' learning curves
SWEEP_JSON = "sweep.json"
SWEEP_CONFIG = "sweep.yaml"
TRIALS_DIR = "trials"
BEST_CONFIG = "best.yaml"
SWEEP_FINAL_DIR = "final"
SWEEP_FORMAT = 1
"""sweep.json: {"format": 1, "name", "method", "space", "objective": {"metric", "mode", "score"},
"seeds", "trials": [{"id", "params", "status", "runs" (folders relative to the sweep folder),
"objective", "objective_std", "best_epoch", "overfit_epoch", "margin", "epochs_trained",
"duration_s", "error"*, "rungs"*}], "best": {"trial", "objective", "objective_std", "params"} or null,
"rungs"*, "eta"*, "final"*}.
A trial's `objective` is the mean over its seeds of each run's score: the fold mean at the mean
curve's best epoch (K-fold) or the best epoch's value (hold-out); `objective_std` is the std across
folds (one seed) or across seeds. Successive halving (method: halving) adds the rungs' epochs
(`rungs`, `eta`) and, per trial, `rungs`: [{"epochs", "objective", "objective_std"}] for each rung it
finished; its `objective` is its last rung's; a trial not promoted stays at its last rung.
`search.final` adds "final": {"trial", "run" (relative to the sweep folder), "epochs", "test"}: the
only test-set scores of the sweep. A format-1 reader that does not know these keys reads every sweep."""


# --------------------------------------------------------------------------- metrics.json
METRICS_FORMAT = 2
"""metrics.json's format. Format 2 (`"format": 2`) calls the last epoch `last` and has `outputs` and
`baselines`; format 1 (no `format` key, kexp 0.1's first release) called the last epoch `final`.
`from_dict` reads both; a format-1 dict comes back in format 2's shape. "final" means only the
retrained model: `final_model`, final/, final_history.csv."""

NOT_METRICS = frozenset({"learning_rate", "lr"})  # logged by ReduceLROnPlateau & co: history.csv only

def _scores(value: Any) -> dict[str, Any] | None:
    """One metric dict (metric name -> value), without the values that are no metrics."""
    if not isinstance(value, dict):
        return None
    if NOT_METRICS.isdisjoint(value):
        return value
    return {k: v for k, v in value.items() if k not in NOT_METRICS}


def _upgraded(data: Any) -> Any:
    """A validation/train dict of format 1 (`final`, `final_std`: the last epoch) in format 2's words."""
    if isinstance(data, dict) and "final" in data and "last" not in data:
        return {("last" + k[len("final"):] if k in ("final", "final_std") else k): v for k, v in data.items()}
    return data


class Section(Record):
    """`validation` or `train`: metric name (validation names without `val_`) -> value at the last
    and at the best epoch; K-fold: the mean over folds, with `*_std` the std across folds (ddof=0)."""

    last: dict[str, Any] | None = None
    best: dict[str, Any] | None = None
    best_std: dict[str, Any] | None = None
    last_std: dict[str, Any] | None = None
    best_epoch_source: str | None = None  # "mean_curve": K-fold best = the mean curve's best epoch

    _READ: ClassVar[dict] = {"last": _scores, "best": _scores, "best_std": _scores, "last_std": _scores,
                             "best_epoch_source": TEXT}

    @classmethod
    def from_dict(cls, data: Any):
        return super().from_dict(_upgraded(data))


class Output(Record):
    """One output of the model: its main metric as Keras logs it (`price_mae`) and its task."""

    main_metric: str | None = None
    task: str | None = None

    _READ: ClassVar[dict] = {"main_metric": TEXT, "task": TEXT}
    _ALWAYS: ClassVar[frozenset[str]] = frozenset({"main_metric", "task"})


class FoldMetrics(Record):
    """One split's result: folds/<id>/metrics.json, and one item of `folds` in metrics.json."""

    id: str | None = None
    repeat: int | None = None
    fold: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    seed: int | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None  # this fold's own best epoch: per-fold detail only
    validation: Section | None = None
    train: Section | None = None
    duration_s: float | None = None
    stop_reason: str | None = None
    worker: dict | None = None  # where it trained, when not in the driver's process (Ray): {"host", "node"}

    _READ: ClassVar[dict] = {"id": TEXT, "repeat": INT, "fold": INT, "n_train": INT, "n_val": INT,
                             "seed": INT, "epochs_run": INT, "best_epoch": INT,
                             "validation": object_of(Section.from_dict), "train": object_of(Section.from_dict),
                             "stop_reason": TEXT, "worker": MAPPING}


class Baseline(Record):
    """The common-sense baseline of one output on validation (and test): what it predicts, its
    scores, and the model's margin over it (positive when the model is better)."""

    output: str | None = None  # with several outputs
    task: str | None = None
    metric: str | None = None  # "accuracy" or "mae"
    majority_class: Any = None
    validation: dict[str, Any] | None = None
    test: dict[str, Any] | None = None
    value: float | None = None
    model: float | None = None
    margin: float | None = None
    beats: bool | None = None
    test_model: float | None = None
    error: str | None = None  # the baseline could not be computed

    _READ: ClassVar[dict] = {"output": TEXT, "task": TEXT, "metric": TEXT, "validation": _scores,
                             "test": _scores, "error": TEXT}


class Curve(Record):
    """K-fold: the monitored metric's mean curve over folds, its std, the smoothed curve (or null)
    and the best epoch chosen on it."""

    metric: str | None = None
    mean: list | None = None
    std: list | None = None
    smoothed: list | None = None
    skip: int | None = None
    factor: float | None = None
    best_epoch: int | None = None

    _ALWAYS: ClassVar[frozenset[str]] = frozenset({"smoothed", "best_epoch"})


class FinalModel(Record):
    """The model retrained on all training data: its epochs, samples and last-epoch training metrics."""

    epochs: int | None = None
    n_train: int | None = None
    train: dict[str, Any] | None = None

    _READ: ClassVar[dict] = {"train": _scores}


class Diagnostics(Record):
    best_epoch: int | None = None
    overfit_epoch: int | None = None
    sentence: str | None = None

    _ALWAYS: ClassVar[frozenset[str]] = frozenset({"best_epoch", "overfit_epoch", "sentence"})


class Metrics(Record):
    """metrics.json. Every field may be None (an old, partial or damaged file); `keys` keeps the order
    of the keys read, `extra` the keys this version does not know, so that
    `Metrics.from_dict(d).to_dict() == d` for any format-2 `d` (a format-1 `d` comes back in format 2's
    words, still without `format`). A record built in code writes its fields in the order below."""

    format: int | None = None  # METRICS_FORMAT; None: format 1
    command: str | None = None  # "train" or "kfold"
    dataset: str | None = None
    scheme: str | None = None  # "holdout" or "kfold"
    monitor: str | None = None  # validation.monitor, e.g. "val_loss"
    mode: str | None = None  # "min" or "max"
    main_metric: str | None = None  # the first output's main metric as Keras logs it, without `val_`
    outputs: dict[str, Output] | None = None  # every output, in the model's order
    directions: dict[str, str] | None = None  # logged metric name without `val_` -> "min"/"max" (new runs)
    stop_reason: str | None = None  # "early stopping", "loss became NaN ...", or null
    folds: list[FoldMetrics] | None = None  # K-fold
    preprocessing: str | None = None  # K-fold: where each fold's preprocessing is
    epochs_run: int | None = None  # K-fold: the longest fold
    best_epoch: int | None = None  # K-fold: the best epoch of the mean (smoothed) curve
    validation: Section | None = None
    train: Section | None = None
    curve: Curve | None = None  # K-fold
    curves: dict[str, list] | None = None  # K-fold: every history column's mean curve
    durations: dict[str, float] | None = None  # train_s, final_s, data_s, total_s
    final_model: FinalModel | None = None
    test: dict[str, Any] | None = None  # of the final model when there is one, else the hold-out model
    baseline: Baseline | None = None  # the first output's
    baselines: dict[str, Baseline] | None = None  # every output's
    diagnostics: Diagnostics | None = None
    partial: dict[str, Any] | None = None  # never written: what a reader found of an unfinished K-fold

    _READ: ClassVar[dict] = {
        "format": INT, "command": TEXT, "dataset": TEXT, "scheme": TEXT, "monitor": TEXT, "mode": TEXT,
        "main_metric": TEXT, "outputs": dict_of(Output.from_dict), "directions": MAPPING, "stop_reason": TEXT,
        "folds": list_of(FoldMetrics.from_dict), "preprocessing": TEXT, "epochs_run": INT, "best_epoch": INT,
        "validation": object_of(Section.from_dict), "train": object_of(Section.from_dict),
        "curve": object_of(Curve.from_dict), "curves": MAPPING, "durations": MAPPING,
        "final_model": object_of(FinalModel.from_dict), "test": _scores, "baseline": object_of(Baseline.from_dict),
        "baselines": dict_of(Baseline.from_dict), "diagnostics": object_of(Diagnostics.from_dict),
        "partial": MAPPING,
    }
    _ALWAYS: ClassVar[frozenset[str]] = frozenset({"stop_reason", "final_model", "test"})

    @property
    def version(self) -> int:
        """The format the file was written in (1 when it has no `format` key)."""
        return self.format or 1

    def fold_list(self) -> list[FoldMetrics]:
        """The folds that could be read (a damaged item is left out)."""
        return [f for f in self.folds or () if isinstance(f, FoldMetrics)]

    def output_list(self) -> list[tuple[str, Output]]:
        return [(k, v) for k, v in (self.outputs or {}).items() if isinstance(v, Output)]

    def baseline_list(self) -> list[Baseline]:
        """Every output's baseline (format 1: the one `baseline`)."""
        found = [b for b in (self.baselines or {}).values() if isinstance(b, Baseline)]
        return found or ([self.baseline] if isinstance(self.baseline, Baseline) else [])

    def direction(self, name: str) -> str | None:
        """"min" or "max" for a logged metric (`val_`/`test_`/`train_` prefix ignored) when the run
        wrote its direction (`directions`), else None."""
        base = name
        for prefix in ("val_", "test_", "train_"):
            base = base.removeprefix(prefix)
        value = (self.directions or {}).get(base)
        return value if value in ("min", "max") else None


def _load(path: str | Path, problems: list[str] | None, name: str = METRICS) -> dict | None:
    path = str(path)
    if not path.endswith(".json"):
        path = f"{path.rstrip('/')}/{name}"  # plain strings: `compare` reads hundreds of these
    try:
        with open(path, "rb") as file:
            data = json.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: invalid JSON or UTF-8
        if problems is not None:
            problems.append(f"{name}: unreadable ({type(exc).__name__})")
        return None
    return data if isinstance(data, dict) else None


def read_metrics(path: str | Path, problems: list[str] | None = None) -> Metrics | None:
    """The metrics.json at `path` (the file, or the run folder that holds it); None when it is
    missing, unreadable, not JSON or not a JSON object, with a line in `problems` (when given) for a
    file that is there but cannot be read. Never raises on a file's contents."""
    data = _load(path, problems)
    return None if data is None else Metrics.from_dict(data)


def read_fold_metrics(path: str | Path, problems: list[str] | None = None) -> FoldMetrics | None:
    """A split's own metrics.json (folds/<id>/metrics.json, or its folder), as `read_metrics` reads."""
    data = _load(path, problems)
    return None if data is None else FoldMetrics.from_dict(data)


# --------------------------------------------------------------------------- sweep.json
class Objective(Record):
    """sweep.json `objective`: the validation metric scored (`val_mae`), its direction, and in words
    how a run's score is read (`score`)."""

    metric: str | None = None
    mode: str | None = None  # "min" or "max"; null until the first trial says
    score: str | None = None

    _READ: ClassVar[dict] = {"metric": TEXT, "mode": TEXT, "score": TEXT}


class Trial(Record):
    """One item of sweep.json `trials` (see SWEEP_FORMAT): a point of the space and its result."""

    id: str | None = None  # t000, t001, ... in trial order
    params: dict[str, Any] | None = None  # dotted config key -> value
    status: str | None = None  # pending, running, completed, failed, interrupted
    runs: list | None = None  # its run folders (one per seed), relative to the sweep folder
    objective: float | None = None
    objective_std: float | None = None
    best_epoch: int | None = None
    overfit_epoch: int | None = None
    margin: float | None = None
    epochs_trained: int | None = None
    duration_s: float | None = None
    error: str | None = None
    rungs: list | None = None  # halving: [{"epochs", "objective", "objective_std"}] per rung finished

    _READ: ClassVar[dict] = {"id": TEXT, "params": MAPPING, "status": TEXT, "runs": list, "objective": INT,
                             "objective_std": INT, "best_epoch": INT, "overfit_epoch": INT, "margin": INT,
                             "epochs_trained": INT, "duration_s": INT, "error": TEXT, "rungs": list}


class SweepBest(Record):
    """sweep.json `best`: the best completed trial so far."""

    trial: str | None = None
    objective: float | None = None
    objective_std: float | None = None
    params: dict[str, Any] | None = None

    _READ: ClassVar[dict] = {"trial": TEXT, "objective": INT, "objective_std": INT, "params": MAPPING}


class Sweep(Record):
    """sweep.json (SWEEP_FORMAT above). Every field may be None (a sweep being written, or a damaged
    file); unknown keys are kept in `extra`."""

    format: int | None = None
    name: str | None = None
    method: Any = None  # "grid", "random", ...
    space: dict[str, Any] | None = None  # dotted config key -> choices (a list) or a range
    objective: Objective | None = None
    seeds: int | None = None
    trials: list[Trial] | None = None
    best: SweepBest | None = None
    rungs: list | None = None  # halving: each rung's epochs
    eta: int | None = None  # halving: 1 in eta trials goes on
    final: dict | None = None  # search.final: {"trial", "run", "epochs", "test"}

    _READ: ClassVar[dict] = {"format": INT, "name": TEXT, "space": MAPPING,
                             "objective": object_of(Objective.from_dict), "seeds": INT,
                             "trials": list_of(Trial.from_dict), "best": object_of(SweepBest.from_dict),
                             "rungs": list, "eta": INT, "final": MAPPING}

    def trial_list(self) -> list[Trial]:
        """The trials that could be read (a damaged item is left out), in trial order."""
        return [t for t in self.trials or () if isinstance(t, Trial)]


def read_sweep(path: str | Path, problems: list[str] | None = None) -> Sweep | None:
    """The sweep.json at `path` (the file, or the sweep folder that holds it), read as `read_metrics`
    reads: None when missing or unreadable (a line in `problems` for a file that cannot be read);
    never raises on a file's contents. The one reader of sweep.json."""
    data = _load(path, problems, SWEEP_JSON)
    return None if data is None else Sweep.from_dict(data)
