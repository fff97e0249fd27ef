"""Time `kexp compare` over 500 fabricated run folders, and `kexp --help` (whole processes).

    python benchmarks/bench_compare.py [--runs 500] [--repeats 5]

Fabricates run folders in a temporary folder with the tests' builder (tests/helpers.py `make_run`,
which writes through kexp.runs and kexp.layout: 80% hold-out, 20% K-fold, a few partial/failed,
configs differing in a handful of keys), then runs each command `--repeats`
times in a fresh process with COLUMNS=100 (after one warm-up run that writes .pyc files) and prints
the median wall time, then where a compare's time goes. Target: < 0.5 s each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from kexp import runs

CONFIG = {
    "name": "reuters", "seed": 0,
    "dataset": {"data_dir": None, "file_hash": None, "name": "reuters", "num_words": 10000, "skip_top": 0,
                "maxlen": None, "seed": 113, "start_char": 1, "oov_char": 2, "index_from": 3, "test_split": 0.2},
    "preprocessing": {"multi_hot": 10000, "pad_sequences": None, "scale": None, "flatten": False,
                      "standardize": False, "labels": "categorical"},
    "model": {"layers": [{"layer": "Dense", "units": 64, "activation": "relu"},
                         {"layer": "Dense", "units": 64, "activation": "relu"},
                         {"layer": "Dense", "units": 46, "activation": "softmax"}], "inputs": None, "outputs": None},
    "compile": {"optimizer": {"name": "rmsprop"}, "loss": {"name": "categorical_crossentropy"}, "loss_weights": None,
                "metrics": [{"name": "accuracy"}], "jit_compile": "auto"},
    "training": {"epochs": 20, "batch_size": 512, "shuffle": True, "callbacks": [], "steps_per_execution": "epoch"},
    "validation": {"shuffle": False, "stratify": False, "seed": None, "monitor": "val_loss", "mode": "auto",
                   "final": {"epochs": 9}, "scheme": "holdout", "size": 1000},
}


def fabricate(root: Path, n: int) -> None:
    """`n` run folders as the training side writes them (status, config, environment, metrics, history),
    built by the tests' builder (tests/helpers.py `make_run`, through kexp.runs and kexp.layout)."""
    import copy

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers import make_run  # the one builder of fake run folders, shared with the tests

    for i in range(n):
        kfold = i % 5 == 4
        config = copy.deepcopy(CONFIG)
        config["model"]["layers"][1]["units"] = (4, 16, 64)[i % 3]
        config["training"]["batch_size"] = (128, 256, 512)[i % 3 // 1 % 3]
        config["training"]["epochs"] = 10 + i % 4 * 5
        if kfold:
            config["validation"] = {"shuffle": True, "stratify": False, "seed": 7, "monitor": "val_loss",
                                    "mode": "auto",
                                    "final": None, "scheme": "kfold", "n_splits": 4, "repeats": 1, "smoothing": None}
        status = "completed" if i % 50 else ("failed" if i % 100 else "running")
        make_run(root, f"reuters-{i % 7}", config=config, status=status, pid=1, host="elsewhere",
                 metrics=None if status == "running" else metrics(i, kfold, config["training"]["epochs"]),
                 started=f"2026-{1 + i // 400:02d}-{1 + i // 20 % 20:02d}T{i % 20:02d}:00:00Z",
                 history=config["training"]["epochs"] if not kfold else False,
                 environment={"python": "3.11", "tensorflow": "2.21", "argv": ["kexp"]})


def metrics(i: int, kfold: bool, epochs: int) -> dict:
    """metrics.json of run `i` (format 1, as the first release wrote it: the readers upgrade it)."""
    acc = 0.6 + (i % 37) / 200
    out = {
        "command": "kfold" if kfold else "train", "dataset": "reuters", "scheme": "kfold" if kfold else "holdout",
        "monitor": "val_loss", "mode": "min", "main_metric": "accuracy", "epochs_run": epochs,
        "best_epoch": 5 + i % 5,
        "validation": {"final": {"loss": 1.0, "accuracy": acc - 0.01}, "best": {"loss": 0.9, "accuracy": acc}},
        "train": {"final": {"loss": 0.1, "accuracy": 0.97}},
        "test": None if kfold else {"loss": 0.95, "accuracy": acc - 0.02},
        "baseline": {"task": "multiclass", "metric": "accuracy", "value": 0.36, "model": acc, "margin": acc - 0.36,
                     "beats": True},
        "diagnostics": {"best_epoch": 5, "overfit_epoch": 5, "sentence": "..."},
        "durations": {"total_s": 30.0 + i % 60},
    }
    if kfold:
        out["validation"].update(final_std={"loss": 0.05, "accuracy": 0.01}, best_std={"loss": 0.05, "accuracy": 0.012})
        out["folds"] = [{"id": f"r0-f{k}", "epochs_run": 20, "best_epoch": 5} for k in range(4)]
    return out


def kexp_command() -> list[str]:
    """The `kexp` console script beside this interpreter (as a virtual environment runs it), not one
    found on PATH: a pyenv shim there is a bash script that adds ~0.1 s of its own to every start."""
    script = Path(sys.executable).parent / "kexp"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kexp"]


def median_time(command: list[str], repeats: int, checkouts: tuple[str | None, ...] = (None,)) -> list[float]:
    """Median wall time of `repeats` runs after one warm-up run (which writes the modules' .pyc files:
    PYTHONDONTWRITEBYTECODE is dropped so that imports are timed as an installed kexp runs them), for
    each checkout (None: this one; else its kexp first on PYTHONPATH), the checkouts' runs interleaved
    so that a drift of the machine's speed falls on all of them alike."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    base["COLUMNS"] = "100"
    envs = [base if c is None else {**base, "PYTHONPATH": c} for c in checkouts]
    times: list[list[float]] = [[] for _ in envs]
    for env in envs:
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(repeats):
        for env, measured in zip(envs, times):
            started = time.perf_counter()
            done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
            measured.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return [statistics.median(m) for m in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--before", metavar="CHECKOUT", help="also time the kexp of another checkout (e.g. "
                        "`git archive` of the previous main) on the same run folders, interleaved")
    args = parser.parse_args()
    checkouts = (None, args.before) if args.before else (None,)
    kexp = kexp_command()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "runs"
        started = time.perf_counter()
        fabricate(root, args.runs)
        print(f"fabricated {args.runs} run folders in {time.perf_counter() - started:.1f} s "
              f"({os.cpu_count()} CPUs, Python {sys.version.split()[0]}, typer {metadata.version('typer')})")
        cases = [
            ("python -c pass (interpreter start)", [sys.executable, "-c", "pass"]),
            ("python -c 'import kexp.cli'", [sys.executable, "-c", "import kexp.cli"]),
            ("python -c 'import kexp.cli, kexp.report'",  # what `kexp compare` imports
             [sys.executable, "-c", "import kexp.cli, kexp.report"]),
            ("kexp --help", [*kexp, "--help"]),
            (f"kexp compare RUNS ({args.runs} runs, table)", [*kexp, "compare", str(root)]),
            ("kexp compare RUNS --format csv", [*kexp, "compare", str(root), "--format", "csv"]),
            ("kexp compare RUNS --sort val_best --last 20", [*kexp, "compare", str(root), "--sort", "val_best",
                                                             "--last", "20"]),
        ]
        for label, command in cases:
            seconds = median_time(command, args.repeats, checkouts)
            before = f"   before {seconds[1]:6.3f} s" if args.before else ""
            print(f"{label:<58} median {seconds[0]:6.3f} s over {args.repeats}{before}")
        breakdown(root)


def breakdown(root: Path) -> None:
    """Where a compare's time goes, measured in this process (imports already paid)."""
    import io
    import json

    import yaml
    from rich.console import Console

    from kexp import report
    from kexp.report import query

    started = time.perf_counter()
    paths = runs.find_runs([root])
    found = time.perf_counter()
    records = [runs.read_run(p) for p in paths]
    read = time.perf_counter()
    texts = [(p / "config.yaml").read_text() for p in paths]
    started_yaml = time.perf_counter()
    configs = [yaml.safe_load(t) for t in texts]
    yaml_s = time.perf_counter() - started_yaml
    started_c = time.perf_counter()
    for t in texts:
        yaml.load(t, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    c_yaml_s = time.perf_counter() - started_c
    dumped = [json.dumps(c) for c in configs]
    started_json = time.perf_counter()
    for t in dumped:
        json.loads(t)
    json_s = time.perf_counter() - started_json
    cache = dict(zip(paths, records))
    original = query.runs.read_run
    query.runs.read_run = cache.__getitem__  # time the report itself, without reading again
    try:
        started_rows = time.perf_counter()
        comparison = report.compare([root])
        rows = time.perf_counter()
        console = Console(file=io.StringIO(), width=100)
        console.print(report.table(comparison))
        table = time.perf_counter()
    finally:
        query.runs.read_run = original
    n = len(paths)
    print(f"\nin-process breakdown for {n} runs:")
    print(f"  runs.find_runs                         {found - started:6.3f} s")
    print(f"  runs.read_run, all runs                {read - found:6.3f} s")
    print(f"    (parsing the configs from config.yaml instead of config.json: {yaml_s:.3f} s pure-Python "
          f"safe loader, {c_yaml_s:.3f} s libyaml; from JSON: {json_s:.3f} s)")
    print(f"  report.compare (rows, filter, diff)    {rows - started_rows:6.3f} s")
    print(f"  table rendering at width 100           {table - rows:6.3f} s")


if __name__ == "__main__":
    main()
