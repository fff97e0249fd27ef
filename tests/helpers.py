"""Builders shared by several test modules (import them; test modules never import each other).

- TINY_CONFIG: a tiny offline experiment (iris, 2 epochs); the `tiny_config` fixture writes it.
- make_run and friends: run folders as the training side writes them, through kexp.runs' writers and
  kexp.layout's names and metrics format, fabricated without training (report, plots and compare
  tests read them; so does benchmarks/bench_compare.py, which imports this module).
- LEGACY_RUNS: run folders written by kexp 0.1 before the redesign (issue 9), kept as they were.
- make_sweep: a sweep folder as `kexp sweep` writes it (kexp.layout "sweep folders"), its trials made
  with make_run.
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from kexp import layout, runs
from kexp.diagnostics import metric_mode

LEGACY_RUNS = Path(__file__).parent / "fixtures" / "legacy_runs"

# A tiny offline experiment: scikit-learn's iris (150 rows, 4 features, 3 classes), one small hidden
# layer. A `kexp train` of it spends nearly all of its time importing TensorFlow.
TINY_CONFIG = """\
seed: 0
dataset: {name: iris}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, units: 4, activation: relu}
    - {layer: Dense, units: 3, activation: softmax}
compile:
  optimizer: {name: adam, learning_rate: 0.01}
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
training: {epochs: 2, batch_size: 32}
validation: {scheme: holdout, size: 0.2, shuffle: true}
"""


# Two outputs from one CSV (`two.csv`: a numeric target `price`, a class target `band`); add `validation:`.
TWO_OUTPUTS_CONFIG = """\
seed: 0
dataset: {name: csv, path: two.csv, test_split: 0.2, target: {price: price, band: band}}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, name: hidden, units: 8, activation: relu}
    - {layer: Dense, name: price, units: 1, inputs: hidden}
    - {layer: Dense, name: band, units: 3, activation: softmax, inputs: hidden}
  outputs: [price, band]
compile:
  optimizer: {name: adam, learning_rate: 0.01}
  loss: {price: mse, band: sparse_categorical_crossentropy}
  metrics: {price: [mae, mse], band: [accuracy]}
training: {epochs: 2, batch_size: 16}
"""


# --------------------------------------------------------------------------- fabricated run folders
REUTERS = {
    "name": "reuters",
    "seed": 0,
    "dataset": {"name": "reuters", "num_words": 10000, "data_dir": None},
    "preprocessing": {"multi_hot": 10000, "labels": "categorical", "standardize": False},
    "model": {
        "layers": [
            {"layer": "Dense", "units": 64, "activation": "relu"},
            {"layer": "Dense", "units": 64, "activation": "relu"},
            {"layer": "Dense", "units": 46, "activation": "softmax"},
        ],
        "inputs": None,
        "outputs": None,
    },
    "compile": {"optimizer": {"name": "rmsprop"}, "loss": {"name": "categorical_crossentropy"},
                "metrics": [{"name": "accuracy"}]},
    "training": {"epochs": 20, "batch_size": 512, "shuffle": True, "callbacks": []},
    "validation": {"scheme": "holdout", "size": 1000, "shuffle": False, "seed": None, "monitor": "val_loss",
                   "mode": "auto", "final": {"epochs": 9}},
}

BOSTON = {
    "name": "boston",
    "seed": 0,
    "dataset": {"name": "boston_housing", "test_split": 0.2},
    "preprocessing": {"standardize": True},
    "model": {"layers": [{"layer": "Dense", "units": 64, "activation": "relu"}, {"layer": "Dense", "units": 1}]},
    "compile": {"optimizer": {"name": "rmsprop"}, "loss": {"name": "mse"}, "metrics": [{"name": "mae"}]},
    "training": {"epochs": 30, "batch_size": 16, "callbacks": []},
    "validation": {"scheme": "kfold", "n_splits": 3, "repeats": 1, "shuffle": False, "seed": None,
                   "monitor": "val_mae", "mode": "auto", "final": None,
                   "smoothing": {"factor": 0.9, "skip": 2}},
}


def u_curve(epochs: int, low_at: int, low: float = 0.9) -> list[float]:
    """A validation loss falling to `low` at epoch `low_at` and rising after it."""
    return [low + 0.05 * (e - low_at) ** 2 / max(low_at, 1) for e in range(1, epochs + 1)]


def holdout_metrics(*, val_acc: float = 0.8, val_loss: float = 0.9, test_acc: float | None = 0.78,
                    epochs: int = 20, best: int = 9, baseline: float = 0.36, total_s: float = 41.0) -> dict:
    return {
        "command": "train", "dataset": "reuters", "scheme": "holdout", "monitor": "val_loss", "mode": "min",
        "main_metric": "accuracy", "epochs_run": epochs, "best_epoch": best,
        "validation": {"final": {"loss": val_loss + 0.1, "accuracy": val_acc - 0.01},
                       "best": {"loss": val_loss, "accuracy": val_acc}},
        "train": {"final": {"loss": 0.1, "accuracy": 0.97}},
        "final_model": {"epochs": 9, "n_train": 8982},
        "test": None if test_acc is None else {"loss": 0.95, "accuracy": test_acc},
        "baseline": {"task": "multiclass", "metric": "accuracy",
                     "validation": {"majority_accuracy": baseline, "random_accuracy": 0.19},
                     "test": {"majority_accuracy": 0.36, "random_accuracy": 0.19}, "value": baseline,
                     "model": val_acc, "margin": val_acc - baseline, "beats": val_acc > baseline},
        "diagnostics": {"best_epoch": best, "overfit_epoch": best,
                        "sentence": f"Validation loss was lowest at epoch {best} and rose afterwards."},
        "durations": {"total_s": total_s, "data_s": 3.1, "train_s": 30.0, "final_s": 8.0},
        "stop_reason": None,
    }


def kfold_metrics(n_folds: int = 3, epochs: int = 30) -> dict:
    folds = [{"id": f"r0-f{i}", "repeat": 0, "fold": i, "n_train": 270, "n_val": 134, "epochs_run": epochs,
              "best_epoch": 12 + i, "validation": {"final": {"loss": 12.0 + i, "mae": 2.5 + 0.1 * i},
                                                   "best": {"loss": 10.0 + i, "mae": 2.3 + 0.1 * i}},
              "train": {"final": {"loss": 5.0, "mae": 1.6}}, "duration_s": 4.0} for i in range(n_folds)]
    mean = [3.0 - 0.02 * e for e in range(epochs)]
    return {
        "command": "kfold", "dataset": "boston_housing", "scheme": "kfold", "monitor": "val_mae", "mode": "min",
        "main_metric": "mae", "epochs_run": epochs, "best_epoch": 13,
        "validation": {"final": {"loss": 13.0, "mae": 2.6}, "best": {"loss": 11.0, "mae": 2.4},
                       "final_std": {"loss": 0.8, "mae": 0.08}, "best_std": {"loss": 0.8, "mae": 0.0816}},
        "train": {"final": {"loss": 5.0, "mae": 1.6}},
        "folds": folds,
        "curve": {"metric": "val_mae", "mean": mean, "std": [0.1] * epochs, "smoothed": mean[2:], "skip": 2,
                  "factor": 0.9, "best_epoch": 13},
        "final_model": None, "test": None,
        "baseline": {"task": "regression", "metric": "mae", "validation": {"mae": 6.5, "mse": 80.0}, "test": None,
                     "value": 6.5, "model": 2.4, "margin": 4.1, "beats": True},
        "diagnostics": {"best_epoch": 13, "overfit_epoch": None, "sentence": "No overfitting seen in 30 epochs."},
        "durations": {"total_s": 12.5},
        "stop_reason": None,
    }


def write_history(path: Path, epochs: int, *, metric: str = "accuracy", low_at: int = 9,
                  start: float = 0.5) -> None:
    writer = runs.HistoryWriter(path)
    val = u_curve(epochs, low_at)
    for e in range(1, epochs + 1):
        writer.append(e, {"loss": 2.0 / e, metric: start + 0.02 * e, "val_loss": val[e - 1],
                          f"val_{metric}": start + 0.015 * min(e, low_at)})
    writer.close()


_counter = iter(range(10**6))


def make_run(root: Path, name: str = "reuters", *, config: dict | None = None, metrics: dict | None | bool = True,
             status: str = "completed", command: str | None = None, started: str | None = None,
             pid: int | None = None, host: str | None = None, history: bool | int = True,
             environment: dict | None = None, **overrides) -> Path:
    """A run folder as the training side writes it (through kexp.runs' writers, kexp.layout's names).

    `metrics=True` gives hold-out (or K-fold, for a kfold config) metrics; None/False writes none;
    `history`: True writes 20 epochs (K-fold: 30 per fold), a number that many, False none;
    `host`/`pid` default to this process's (a "running" run whose pid is gone reads as incomplete);
    `overrides` are dotted config keys with `__` for dots: training__batch_size=128."""
    config = copy.deepcopy(config if config is not None else REUTERS)
    config["name"] = name
    for key, value in overrides.items():
        node, parts = config, key.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    kfold = config["validation"]["scheme"] == "kfold"
    command = command or ("kfold" if kfold else "train")
    n = next(_counter)
    started = started or f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z"
    stamp = started.replace("-", "").replace(":", "")
    path = root / f"{stamp}-{name}-{n:06x}"
    path.mkdir(parents=True)
    runs.write_json(path / layout.STATUS, {
        "status": status, "command": command, "pid": os.getpid() if pid is None else pid,
        "host": host or (os.uname().nodename if hasattr(os, "uname") else "host"), "started": started,
        "updated": started, **({"ended": started} if status != "running" else {}),
        **({"error": "loss became NaN"} if status == "failed" else {}),
    })
    runs.Run(path=path, command=command).write_config(config)
    runs.write_json(path / layout.ENVIRONMENT, environment or {"python": "3.11"})
    if metrics is True:
        metrics = kfold_metrics() if kfold else holdout_metrics()
    if metrics:
        runs.write_json(path / layout.METRICS, layout.Metrics.from_dict(metrics).to_dict())
    if history:
        if kfold:
            for fold in (metrics or kfold_metrics())["folds"]:
                write_history(path / layout.split_history(fold["id"], kfold=True), 30 if history is True else history,
                              metric="mae", low_at=13, start=3.0)
        else:
            write_history(path / layout.HISTORY, 20 if history is True else history)
    return path


def make_sweep(root: Path, name: str = "boston", *, trials: list[dict], config: dict | None = None,
               metric: str = "val_mae", mode: str | None = "min", method: object = "grid",
               space: dict | None = None, seeds: int = 1, status: str = "completed", best: bool = True,
               epochs: int = 12) -> Path:
    """A sweep folder as `kexp sweep` writes it (kexp.layout, "sweep folders"): status.json, sweep.yaml,
    environment.json, sweep.json (format SWEEP_FORMAT), trials/<run>/ and best.yaml; no training.

    `trials`: one dict per trial, t000, t001, ... in order: `params` (dotted config key -> value),
    `objective` (None: not scored), and optionally `status` (default: completed when scored, else
    pending) and any other sweep.json trial field (`objective_std`, `error`, ...). Every trial but a
    pending one gets `seeds` run folders (make_run) under trials/, named `<name>-<id>` (`-s<k>` per
    seed with seeds > 1), with its params applied to `config` (default BOSTON, K-fold on val_mae) and
    its objective as the validation main metric at the best epoch; a completed trial's per-fold
    histories fall to its objective. `space` defaults to each parameter's values, in trial order, as
    kexp.search plans a space ({key: {"values": [...]}});
    `best` writes sweep.json `best` and best.yaml for the best completed trial in `mode` (None:
    sweep.json says null, as before any trial finished; the best is then chosen in the direction the
    metric's name suggests)."""
    config = copy.deepcopy(config if config is not None else BOSTON)
    n = next(_counter)
    started = f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z"
    path = root / f"{started.replace('-', '').replace(':', '')}-{name}-sweep-{n:06x}"
    path.mkdir(parents=True)
    ended = {"ended": started} if status != "running" else {}
    runs.write_json(path / layout.STATUS, {"status": status, "command": "sweep", "pid": os.getpid(),
                                           "host": os.uname().nodename if hasattr(os, "uname") else "host",
                                           "started": started, "updated": started, **ended})
    if space is None:  # as kexp.search plans it: key -> {"values": [...]} (or a range)
        space = {}
        for trial in trials:
            for key, value in trial["params"].items():
                if value not in space.setdefault(key, {"values": []})["values"]:
                    space[key]["values"].append(value)
    runs.write_yaml(path / layout.SWEEP_CONFIG, {**config, "name": name, "search": {"method": method, "space": space}})
    runs.write_json(path / layout.ENVIRONMENT, {"python": "3.11"})
    kfold = config["validation"]["scheme"] == "kfold"
    main = metric.removeprefix("val_")
    records = []
    for index, spec in enumerate(trials):
        trial_id = f"t{index:03d}"
        value = spec.get("objective")
        trial = {"id": trial_id, "params": spec["params"], "status": "completed" if value is not None else "pending",
                 "runs": [], "objective": value, "objective_std": 0.05 if value is not None else None,
                 "best_epoch": 5 + index % 4 if value is not None else None,
                 "overfit_epoch": 7 + index % 4 if value is not None else None,
                 "margin": 4.0 - value if value is not None else None,
                 "epochs_trained": epochs * (3 if kfold else 1) * seeds if value is not None else None,
                 "duration_s": 10.0 + index if value is not None else None}
        trial.update({k: v for k, v in spec.items() if k not in ("params", "objective")})
        for seed in range(seeds if trial["status"] != "pending" else 0):
            label = f"{name}-{trial_id}" + (f"-s{seed}" if seeds > 1 else "")
            scored = trial["status"] == "completed"
            run_metrics = (kfold_metrics() if kfold else holdout_metrics()) if scored else None
            if run_metrics is not None:
                run_metrics["validation"]["best"][main] = value
            run = make_run(path / layout.TRIALS_DIR, label, config=config, metrics=run_metrics,
                           status=trial["status"], history=False,
                           **{k.replace(".", "__"): v for k, v in spec["params"].items()})
            for fold in (run_metrics or kfold_metrics())["folds"] if kfold else [None]:
                history = run / (layout.split_history(fold["id"], kfold=True) if fold else layout.HISTORY)
                write_history(history, epochs, metric=main, low_at=3 + index % 5, start=value or 1.0)
            trial["runs"].append(run.relative_to(path).as_posix())
        records.append(trial)
    done = [t for t in records if t["status"] == "completed" and t["objective"] is not None]
    direction = mode or metric_mode(metric)
    top = (max if direction == "max" else min)(done, key=lambda t: t["objective"]) if done and best else None
    sweep = {"format": layout.SWEEP_FORMAT, "name": name, "method": method, "space": space,
             "objective": {"metric": metric, "mode": mode, "score": "fold mean at the mean curve's best epoch"
                           if kfold else "the best epoch's value"},
             "seeds": seeds, "trials": records,
             "best": None if top is None else {"trial": top["id"], "objective": top["objective"],
                                               "objective_std": top["objective_std"], "params": top["params"]}}
    runs.write_json(path / layout.SWEEP_JSON, layout.Sweep.from_dict(sweep).to_dict())
    if top is not None:
        best_config = runs.read_run(path / top["runs"][0]).config
        runs.write_yaml(path / layout.BEST_CONFIG, {**best_config, "name": name})
    return path


def heavy_imports(*commands: list) -> list[str]:
    """Run each `kexp ARGS` command (a list of arguments) in one fresh interpreter through Typer's
    runner, each of which must exit 0, and return the heavy modules that were imported by then
    (tensorflow, keras, matplotlib, numpy): the readers (`compare`, `show`) import none of them."""
    code = (
        "import json, sys\n"
        "from typer.testing import CliRunner\n"
        "from kexp.cli import app\n"
        "for args in json.loads(sys.argv[1]):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'numpy') if m in sys.modules)))\n"
    )
    commands_json = json.dumps([[str(arg) for arg in command] for command in commands])
    done = subprocess.run([sys.executable, "-c", code, commands_json], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def render(renderable, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(renderable)
    return console.file.getvalue()


def assert_png_plot(path: Path, min_width: int = 300, min_height: int = 200) -> None:
    """`path` is a PNG image that decodes, at least min_width x min_height pixels, with something drawn
    on it (not one flat colour): more than magic bytes."""
    import numpy as np
    from matplotlib import image

    pixels = image.imread(path)  # raises on a truncated or non-PNG file
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4), (path, pixels.shape)
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= min_height, f"{path}: only {width}x{height} pixels"
    rgb = pixels[..., :3].astype("float64")
    background = rgb[0, 0]
    drawn = (np.abs(rgb - background).sum(axis=-1) > 0.1).mean()
    assert 0.01 < drawn < 0.9, f"{path}: {drawn:.1%} of the pixels differ from the background (blank?)"
