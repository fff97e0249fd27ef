"""Boston 4-fold x 500 epochs with validation every epoch: reference script against `kexp kfold`.

    python benchmarks/bench_boston.py [--epochs 500] [--levers] [--before OTHER_CHECKOUT]

The reference runs only its validated phase (`--epochs 0 --history-epochs N --final-epochs 0`);
kexp runs configs/boston_500.yaml without smoothing or final model, so both train 4 x N epochs and
validate every epoch. Prints whole-process wall times, the ratio reference / kexp (target >= 5) and
the mean final validation MAE of both (target: within 0.15). `--levers` also times kexp with one
worker, and with one worker and one step per host round trip, to show what each lever gives.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import arguments, last_json, measure, run_metrics

ROOT = Path(__file__).resolve().parents[1]


def kexp(args, workers: int, extra: list[str] = (), checkout: str | None = None) -> tuple[dict, float]:
    """One `kexp kfold` process: this checkout's kexp, or the one in `checkout` (a before/after pair)."""
    env = {"KEXP_DATA_DIR": args.data_dir, **({"PYTHONPATH": checkout} if checkout else {})}
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "kexp", "kfold", str(ROOT / "configs" / "boston_500.yaml"), "--quiet",
               "--runs-dir", runs, "--workers", str(workers), "--set", f"training.epochs={args.epochs}",
               "--set", "validation.final=null", "--set", "validation.smoothing=null", *extra]
        result = measure(cmd, env=env)
        return result, run_metrics(runs).validation.last["mae"]


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--levers", action="store_true")
    parser.add_argument("--before", metavar="CHECKOUT", help="also time the kexp of another checkout (e.g. "
                        "`git archive` of the previous main), with --workers 1 and N, in the same run")
    args = parser.parse_args()

    ref = measure([sys.executable, str(Path(args.reference) / "boston_kfold_baseline.py"), "--data-dir",
                   args.data_dir, "--epochs", "0", "--history-epochs", str(args.epochs), "--final-epochs", "0"])
    ref_mae = last_json(ref["stdout"])["history"]["final_mean_val_mae"]
    rows = [("reference", ref["wall_s"], ref_mae)]
    ours, mae = kexp(args, args.workers)
    rows.append((f"kexp -j{args.workers}", ours["wall_s"], mae))
    if args.before:
        for workers in (args.workers, 1):
            before, mae_b = kexp(args, workers, checkout=args.before)
            rows.append((f"before -j{workers}", before["wall_s"], mae_b))
        one, mae1 = kexp(args, 1)
        rows.append(("kexp -j1", one["wall_s"], mae1))
    if args.levers:
        one, mae1 = kexp(args, 1)
        rows.append(("kexp -j1", one["wall_s"], mae1))
        plain, mae2 = kexp(args, 1, ["--set", "training.steps_per_execution=1"])
        rows.append(("kexp -j1 spe=1", plain["wall_s"], mae2))
    print(f"4 folds x {args.epochs} epochs, validation every epoch")
    print(f"{'':16} {'wall s':>8} {'speed-up':>9} {'mean val MAE':>13}")
    for name, wall, value in rows:
        print(f"{name:16} {wall:8.1f} {ref['wall_s'] / wall:8.2f}x {value:13.3f}")
    print(f"ratio reference/kexp: {ref['wall_s'] / ours['wall_s']:.2f}x (target >= 5); "
          f"MAE difference {mae - ref_mae:+.3f} (target within 0.15)")


if __name__ == "__main__":
    main()
