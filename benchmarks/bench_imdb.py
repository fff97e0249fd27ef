"""IMDB: the hand-written reference script against `kexp train configs/imdb.yaml`, same data, one run.

    python benchmarks/bench_imdb.py [--data-dir ../shared/datasets] [--reference ../shared/reference]
                                    [--before OTHER_CHECKOUT]

Prints wall time and peak memory of each whole process and the ratios kexp / reference
(targets: wall <= 0.8, memory <= 0.3, test accuracy within 0.005).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import arguments, last_json, measure, run_metrics

ROOT = Path(__file__).resolve().parents[1]


def kexp(args, checkout: str | None = None) -> tuple[dict, float]:
    """One `kexp train` process: this checkout's kexp, or the one in `checkout`."""
    env = {"KEXP_DATA_DIR": args.data_dir, **({"PYTHONPATH": checkout} if checkout else {})}
    with tempfile.TemporaryDirectory() as runs:
        result = measure([sys.executable, "-m", "kexp", "train", str(ROOT / "configs" / "imdb.yaml"), "--quiet",
                          "--runs-dir", runs, "--set", f"seed={args.seed}"], env=env)
        return result, run_metrics(runs).test["accuracy"]


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before", metavar="CHECKOUT", help="also measure the kexp of another checkout (e.g. "
                        "`git archive` of the previous main) in the same run")
    args = parser.parse_args()

    ref = measure([sys.executable, str(Path(args.reference) / "imdb_baseline.py"), "--data-dir", args.data_dir,
                   "--verbose", "0", "--seed", str(args.seed)])
    ref_acc = last_json(ref["stdout"])["test_accuracy"]
    ours, our_acc = kexp(args)
    print(f"{'':10} {'wall s':>8} {'peak MiB':>9} {'test acc':>9}")
    print(f"{'reference':10} {ref['wall_s']:8.1f} {ref['peak_mib']:9.0f} {ref_acc:9.4f}")
    print(f"{'kexp':10} {ours['wall_s']:8.1f} {ours['peak_mib']:9.0f} {our_acc:9.4f}")
    if args.before:
        before, before_acc = kexp(args, args.before)
        print(f"{'before':10} {before['wall_s']:8.1f} {before['peak_mib']:9.0f} {before_acc:9.4f}")
        print(f"before: wall {before['wall_s'] / ref['wall_s']:.2f}, peak memory "
              f"{before['peak_mib'] / ref['peak_mib']:.2f} of the reference")
    print(f"ratios kexp/reference: wall {ours['wall_s'] / ref['wall_s']:.2f} (target <= 0.8), "
          f"peak memory {ours['peak_mib'] / ref['peak_mib']:.2f} (target <= 0.3), "
          f"accuracy difference {our_acc - ref_acc:+.4f} (target within 0.005)")


if __name__ == "__main__":
    main()
