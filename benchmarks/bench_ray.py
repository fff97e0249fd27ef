"""The Ray executor against the local one, on the same cores, in one run (by hand; it trains for a while).

    python benchmarks/bench_ray.py [--epochs 500] [--sweep-epochs 100] [--workers 2] [--small-grid]
                                   [--skip-kfold] [--skip-sweep] [--overhead-tasks 6]

1. Boston 4-fold x E epochs (configs/boston_500.yaml, no smoothing or final model), whole process
   against whole process: `kexp kfold -jN` (the reference of this run), then `--executor ray` on an
   embedded cluster of this machine with `cpus_per_task = cores / N` (the same N tasks at once, each
   with the threads a local worker gets), with a fresh worker process per task
   (`executor.reuse_workers: false`) and with the worker processes kept (`true`, the default).
2. The Boston sweep (configs/boston_sweep.yaml: 24 points x 4 folds x `--sweep-epochs`; `--small-grid`:
   its 4 model shapes at one learning rate and batch size), the same three ways.
3. Ray's overhead per task, measured in process: tiny tasks (iris, 1 epoch) run one at a time through
   an embedded cluster; overhead = the task's wall time seen by the driver minus its training time
   (`duration_s`), fresh worker vs reused worker. Also the whole-process view from 1 and 2: (ray wall -
   local wall) x N / tasks, the cluster's start included.
4. A paper estimate of the 24-trial x 4-fold sweep on 8 nodes x 16 cores, from the measured per-task
   training time at the same threads per task and the measured overhead.

Ratios are against the local executor of the same run (same machine, same moment).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import measure, run_metrics

ROOT = Path(__file__).resolve().parents[1]


def run(command: str, config: Path, args, workers: int, executor: str | None, extra: list[str]) -> dict:
    """One whole `kexp` process; its wall time, and the per-fold training times of its runs."""
    sets = []
    if executor == "ray" or executor == "ray-reuse":
        sets = ["--executor", "ray", "--set", f"executor.cpus_per_task={max(1, args.cores // workers)}"]
        sets += ["--set", f"executor.reuse_workers={'true' if executor == 'ray-reuse' else 'false'}"]
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "kexp", command, str(config), "--quiet", "--runs-dir", runs,
               "--workers", str(workers), *extra, *sets]
        result = measure(cmd, env={"KEXP_DATA_DIR": args.data_dir, "RAY_USAGE_STATS_ENABLED": "0"})
        folds = [json.loads(p.read_text())["duration_s"] for p in Path(runs).rglob("folds/*/metrics.json")]
        result["fold_s"] = folds
        if command == "kfold":
            result["mae"] = run_metrics(runs).validation.last["mae"]
    return result


def compare(title: str, command: str, config: Path, args, extra: list[str]) -> tuple[dict, float]:
    rows, tasks = {}, 0
    for executor in ("local", "ray", "ray-reuse"):
        rows[executor] = run(command, config, args, args.workers, None if executor == "local" else executor, extra)
        tasks = len(rows[executor]["fold_s"])
        print(f"  {executor:10} {rows[executor]['wall_s']:8.1f} s", flush=True)
    local = rows["local"]["wall_s"]
    print(f"{title}: {tasks} tasks, {args.workers} at a time on {args.cores} cores")
    print(f"  {'':10} {'wall s':>8} {'local/x':>8} {'overhead/task s':>16} {'mean fold s':>12}")
    for name, row in rows.items():
        overhead = (row["wall_s"] - local) * args.workers / max(1, tasks) if name != "local" else 0.0
        mae = f"  val MAE {row['mae']:.3f}" if "mae" in row else ""
        print(f"  {name:10} {row['wall_s']:8.1f} {local / row['wall_s']:7.2f}x {overhead:16.2f} "
              f"{statistics.mean(row['fold_s']):12.2f}{mae}")
    return rows, tasks


def overhead(tasks: int, reuse: bool) -> list[float]:
    """Per task: the driver's wall time for one task run alone minus the task's own training time."""
    import yaml

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import TINY_CONFIG

    from kexp.config import validate_config
    from kexp.executor import Context, Task
    from kexp.ray_executor import RayExecutor
    from kexp.validation import splits_for

    class Iris:
        y_train = [0, 1, 2] * 40
        task = "multiclass"

    config = validate_config({**yaml.safe_load(TINY_CONFIG), "validation": {"scheme": "kfold", "n_splits": 3}})
    split = splits_for(config, Iris)[0]
    out = []
    with RayExecutor(reuse_workers=reuse) as executor:
        executor.start()
        for i in range(tasks):
            task = Task(f"t{i}", config.to_dict(), None, split, 1)
            started = time.perf_counter()
            (result,) = list(executor.run([task], lambda event: None, Context()))
            out.append(time.perf_counter() - started - result.metrics["duration_s"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--sweep-epochs", type=int, default=100)
    parser.add_argument("--small-grid", action="store_true")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overhead-tasks", type=int, default=6)
    parser.add_argument("--skip-kfold", action="store_true")
    parser.add_argument("--skip-sweep", action="store_true")
    args = parser.parse_args()

    per_task = {}
    for reuse in (False, True):
        values = overhead(args.overhead_tasks, reuse)
        per_task[reuse] = statistics.median(values[1:] if len(values) > 1 else values)  # the first warms up
        print(f"Ray overhead per task ({'reused' if reuse else 'fresh'} worker), median of {len(values)}: "
              f"{per_task[reuse]:.2f} s  (all: {', '.join(f'{v:.2f}' for v in values)})", flush=True)

    fold_s = None
    if not args.skip_kfold:
        rows, _ = compare(f"Boston 4-fold x {args.epochs} epochs", "kfold", ROOT / "configs" / "boston_500.yaml", args,
                          ["--set", f"training.epochs={args.epochs}", "--set", "validation.final=null",
                           "--set", "validation.smoothing=null"])
        fold_s = statistics.mean(rows["local"]["fold_s"])
    if not args.skip_sweep:
        import yaml

        grid = yaml.safe_load((ROOT / "configs" / "boston_sweep.yaml").read_text())
        if args.small_grid:
            grid["search"]["space"].update({"compile.optimizer.learning_rate": [0.001], "training.batch_size": [16]})
        trials = math.prod(len(v) for v in grid["search"]["space"].values())
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "boston_sweep.yaml"
            config.write_text(yaml.safe_dump(grid, sort_keys=False))
            rows, _ = compare(f"Boston sweep, {trials} trials x 4 folds x {args.sweep_epochs} epochs", "sweep",
                              config, args, ["--set", f"training.epochs={args.sweep_epochs}", "--yes"])
        sweep_fold_s = statistics.mean(rows["local"]["fold_s"])
        # paper estimate: 96 tasks on 8 x 16 cores, 1 CPU per task (one wave), at the fold time measured here
        # with the same threads per task, scaled from --sweep-epochs to the config's 100 epochs
        tasks, slots = 24 * 4, 8 * 16 // max(1, args.cores // args.workers)
        waves = math.ceil(tasks / slots)
        per_fold = sweep_fold_s * 100 / args.sweep_epochs
        print(f"paper estimate, 24 trials x 4 folds x 100 epochs on 8 nodes x 16 cores, {slots} tasks at once; "
              f"a fold {per_fold:.1f} s (measured here at {args.sweep_epochs} epochs, scaled to 100), + 10 s to "
              f"start the driver and join:")
        for reuse in (False, True):
            one_wave = waves * (per_fold + per_task[reuse]) + 10  # every (trial, fold) task handed out at once
            by_trial = 24 * (per_fold + per_task[reuse]) + 10  # one trial's 4 folds at a time
            print(f"  {'reused' if reuse else 'fresh'} workers (overhead {per_task[reuse]:.1f} s/task): all 96 tasks "
                  f"at once ~{one_wave:.0f} s ({waves} wave(s)); trial after trial ~{by_trial:.0f} s")
    if fold_s is not None:
        print(f"(kfold: mean local fold time {fold_s:.1f} s at {max(1, args.cores // args.workers)} thread(s))")


if __name__ == "__main__":
    main()
