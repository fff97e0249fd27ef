"""Boston 24-point grid, each point scored by 4-fold CV: the hand-written loop against `kexp sweep`.

    python benchmarks/bench_sweep.py [--epochs 100] [--workers 2] [--backends tensorflow jax torch]

Runs `../shared/reference/boston_grid_baseline.py` (units {32, 64} x 1 or 2 hidden layers x learning
rate {1e-3, 3e-3, 1e-2} x batch {16, 32}; a point's score is the fold mean of the validation MAE curve
at its best epoch), then `kexp sweep configs/boston_sweep.yaml` (the same grid, folds and epochs) with
`--workers 1` and `--workers N`, whole process against whole process, one after another. Prints the
wall times, the speed-up over the reference (target >= 5x), the parallel efficiency from 1 to N
workers (target >= 90%: time(1) / (N x time(N))), and each one's best point with its score (kexp:
mean ± std over folds; the same best point within one std is the target). Then the same space with
`search.method: halving` (eta 3, rungs 12, 36, 100 epochs) on N workers: the epochs it trained
against the grid's (target <= 35%) and its best objective against the grid's best ± std.
`--one-cpu`: also `--workers 1` confined to one CPU (taskset), since one worker's runtime threads
already use part of a second CPU: time(1 CPU) / (N x time(N)) is the efficiency of the executor itself.
`--no-reference`: kexp alone (efficiency and halving, no speed-up), minutes instead of half an hour.
`--backends tensorflow jax`: kexp's Keras backends, each measured in turn against the one reference
run (a plain Keras script on TensorFlow). Last, this machine's own ceiling for the parallel
efficiency: a pure-Python CPU loop run alone, then as two processes at once (no work shared, nothing
to wait for; `bench_cores.py`, which also measures plain Keras that way).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import arguments, last_json, measure
from bench_cores import LOOP, efficiency

ROOT = Path(__file__).resolve().parents[1]


def point_of(params: dict) -> dict:
    """A kexp trial's parameters in the reference's words."""
    layers = params["model.layers"]
    return {"units": layers[0]["units"], "layers": len(layers) - 1,
            "learning_rate": params["compile.optimizer.learning_rate"], "batch_size": params["training.batch_size"]}


def kexp(args, backend: str, workers: int, *more: str, cpus: str | None = None) -> tuple[dict, dict]:
    from kexp.layout import read_sweep

    with tempfile.TemporaryDirectory() as runs:
        pinned = ["taskset", "-c", cpus] if cpus else []
        result = measure([*pinned, sys.executable, "-m", "kexp", "sweep", str(ROOT / "configs" / "boston_sweep.yaml"),
                          "--quiet", "--runs-dir", runs, "--workers", str(workers),
                          "--set", f"training.epochs={args.epochs}", "--backend", backend, *more],
                         env={"KEXP_DATA_DIR": args.data_dir})
        sweep = read_sweep(next(Path(runs).iterdir())).to_dict()
    return result, sweep


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["tensorflow"], choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--one-cpu", action="store_true")
    parser.add_argument("--no-reference", action="store_true")
    args = parser.parse_args()

    measured = {}
    for backend in args.backends:  # kexp first: a mistake shows before the reference's long run
        sweeps = {}
        for workers in (1, args.workers):
            sweeps[workers] = kexp(args, backend, workers)
            print(f"kexp on {backend} -j{workers}: {sweeps[workers][0]['wall_s']:.1f} s", flush=True)
        if args.one_cpu:
            sweeps["1cpu"] = kexp(args, backend, 1, cpus=str(min(os.sched_getaffinity(0))))
            print(f"kexp on {backend} -j1 on one CPU: {sweeps['1cpu'][0]['wall_s']:.1f} s", flush=True)
        halving = kexp(args, backend, args.workers, "--set", "search.method=halving")
        print(f"kexp on {backend}, halving -j{args.workers}: {halving[0]['wall_s']:.1f} s", flush=True)
        measured[backend] = sweeps, halving
    ref = reference = None
    if not args.no_reference:
        ref = measure([sys.executable, str(Path(args.reference) / "boston_grid_baseline.py"), "--data-dir",
                       args.data_dir, "--epochs", str(args.epochs), "--seed", "0"])
        reference = last_json(ref["stdout"])
        print(f"reference {ref['wall_s']:8.1f} s  best {reference['best']}")
    for backend, (sweeps, halving) in measured.items():
        report(args, backend, sweeps, halving, ref, reference)
    print(f"this machine's ceiling, {args.workers} CPU-bound Python processes at once against one alone: "
          f"{efficiency(LOOP, [], args.workers):.0%} parallel efficiency (benchmarks/bench_cores.py: with Keras too)")


def report(args, backend: str, sweeps: dict, halving: tuple, ref: dict, reference: dict) -> None:
    print(f"--- kexp on {backend}")
    for workers, (result, sweep) in sweeps.items():
        best = next(t for t in sweep["trials"] if t["id"] == sweep["best"]["trial"])
        against = ""
        if reference is not None:
            ref_score = next(p["val_mae"] for p in reference["points"]
                             if all(p[k] == v for k, v in point_of(best["params"]).items()))
            against = f"  {ref['wall_s'] / result['wall_s']:5.2f}x (the reference scored that point {ref_score:.3f})"
        print(f"kexp -j{workers:<4} {result['wall_s']:8.1f} s  best {point_of(best['params'])} val MAE "
              f"{best['objective']:.3f} ± {best['objective_std']:.3f}{against}")
    grid = sweeps[args.workers][1]
    top = next(t for t in grid["trials"] if t["id"] == grid["best"]["trial"])
    found = next(t for t in halving[1]["trials"] if t["id"] == halving[1]["best"]["trial"])
    epochs = [sum(t.get("epochs_trained") or 0 for t in s["trials"]) for s in (grid, halving[1])]
    within = abs(found["objective"] - top["objective"]) <= top["objective_std"]
    print(f"halving (eta {halving[1].get('eta')}, rungs {halving[1].get('rungs')}) -j{args.workers}: "
          f"{halving[0]['wall_s']:.1f} s; epochs trained {epochs[1]} = {epochs[1] / epochs[0]:.0%} of the grid's "
          f"{epochs[0]} (target <= 35%); best {point_of(found['params'])} val MAE {found['objective']:.3f} against "
          f"the grid's best {top['objective']:.3f} ± {top['objective_std']:.3f}: "
          f"{'within' if within else 'NOT within'} one std (target)")
    one, many = sweeps[1][0]["wall_s"], sweeps[args.workers][0]["wall_s"]
    if ref is not None:
        print(f"speed-up over the reference: {ref['wall_s'] / one:.2f}x (-j1), {ref['wall_s'] / many:.2f}x "
              f"(-j{args.workers}) (target >= 5x)")
    print(f"parallel efficiency 1 -> {args.workers} workers: {one / (args.workers * many):.0%} (target >= 90%)")
    if "1cpu" in sweeps:
        alone = sweeps["1cpu"][0]["wall_s"]
        print(f"-j1 on one CPU {alone:.1f} s against {one:.1f} s on all: one worker's runtime threads use "
              f"{alone / one - 1:.0%} more; against it, 1 -> {args.workers} workers: "
              f"{alone / (args.workers * many):.0%} (zero overhead gives 100%)")


if __name__ == "__main__":
    main()
