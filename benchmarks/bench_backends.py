"""Every installed Keras backend against the hand-written references, in one run.

    python benchmarks/bench_backends.py [--epochs 500] [--backends tensorflow,jax,torch]
                                        [--skip-imdb] [--skip-boston]

Boston: the 4-fold x N-epoch protocol of bench_boston.py (the reference's validated phase against
`kexp kfold configs/boston_500.yaml` without smoothing or final model), on each backend with
--workers 1 and 2 (PyTorch: 2 only, it is the slow one). JAX keeps compiled programs in a persistent
cache (kexp's default): its first run here starts from an empty cache (a temporary folder) and is
shown as `cold`; the others find the programs compiled.
IMDB: `imdb_baseline.py` against `kexp train configs/imdb.yaml` on each backend.
Prints whole-process wall time and peak memory, and the ratios. Targets: JAX's Boston >= 2x faster
than kexp on TensorFlow (so >= 10x the reference); IMDB peak memory <= 0.3x the reference on every
backend; MAE and accuracy within the tolerance README states of the TensorFlow figures.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _measure import arguments, last_json, measure, run_metrics

ROOT = Path(__file__).resolve().parents[1]


def kexp(args, command: list[str], backend: str) -> tuple[dict, object]:
    with tempfile.TemporaryDirectory() as runs:
        result = measure([sys.executable, "-m", "kexp", *command, "--quiet", "--runs-dir", runs, "--backend", backend],
                         env={"KEXP_DATA_DIR": args.data_dir, "JAX_COMPILATION_CACHE_DIR": args.jax_cache})
        return result, run_metrics(runs)


def boston(args, backends: list[str]) -> None:
    ref = measure([sys.executable, str(Path(args.reference) / "boston_kfold_baseline.py"), "--data-dir",
                   args.data_dir, "--epochs", "0", "--history-epochs", str(args.epochs), "--final-epochs", "0"])
    rows = [("reference", ref["wall_s"], ref["peak_mib"], last_json(ref["stdout"])["history"]["final_mean_val_mae"],
             None)]
    runs = [(backend, workers, label) for backend in backends
            for workers, label in ([(1, " cold"), (1, ""), (2, "")] if backend == "jax"
                                   else [(2, "")] if backend == "torch" else [(1, ""), (2, "")])]
    for backend, workers, label in runs:
        result, metrics = kexp(args, ["kfold", str(ROOT / "configs" / "boston_500.yaml"), "--workers",
                                      str(workers), "--set", f"training.epochs={args.epochs}",
                                      "--set", "validation.final=null", "--set", "validation.smoothing=null"], backend)
        rows.append((f"kexp {backend} -j{workers}{label}", result["wall_s"], result["peak_mib"],
                     metrics.validation.last["mae"], metrics.validation.last_std["mae"]))
    print(f"\nBoston 4-fold x {args.epochs} epochs")
    print(f"{'':24} {'wall s':>8} {'peak MiB':>9} {'val MAE (last)':>16} {'x reference':>12} {'x kexp TF':>10}")
    for name, wall, peak, mae, std in rows:
        spread = f"{mae:.3f} ± {std:.3f}" if std is not None else f"{mae:.3f}"
        tf_wall = next((w for n, w, *_ in rows if n == f"kexp tensorflow {name.split()[-2 if 'cold' in name else -1]}"),
                       None)
        vs_tf = f"{tf_wall / wall:10.2f}" if tf_wall and name != "reference" else f"{'':10}"
        print(f"{name:24} {wall:8.1f} {peak:9.0f} {spread:>16} {ref['wall_s'] / wall:12.2f} {vs_tf}")


def imdb(args, backends: list[str]) -> None:
    ref = measure([sys.executable, str(Path(args.reference) / "imdb_baseline.py"), "--data-dir", args.data_dir,
                   "--verbose", "0", "--seed", "0"])
    rows = [("reference", ref["wall_s"], ref["peak_mib"], last_json(ref["stdout"])["test_accuracy"])]
    for backend in backends:
        result, metrics = kexp(args, ["train", str(ROOT / "configs" / "imdb.yaml")], backend)
        rows.append((f"kexp {backend}", result["wall_s"], result["peak_mib"], metrics.test["accuracy"]))
    print("\nIMDB, configs/imdb.yaml (20 epochs on 15,000, then 4 on 25,000 and the test set)")
    print(f"{'':18} {'wall s':>8} {'peak MiB':>9} {'test acc':>9} {'wall/ref':>9} {'mem/ref':>8}")
    for name, wall, peak, acc in rows:
        print(f"{name:18} {wall:8.1f} {peak:9.0f} {acc:9.4f} {wall / ref['wall_s']:9.2f} {peak / ref['peak_mib']:8.2f}")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--epochs", type=int, default=500)
    parser.add_argument("--backends", default=",".join(b for b in ("tensorflow", "jax", "torch")
                                                        if importlib.util.find_spec(b) is not None))
    parser.add_argument("--skip-boston", action="store_true")
    parser.add_argument("--skip-imdb", action="store_true")
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]
    print(f"backends: {', '.join(backends)}")
    with tempfile.TemporaryDirectory() as cache:
        args.jax_cache = cache
        if not args.skip_boston:
            boston(args, backends)
        if not args.skip_imdb:
            imdb(args, backends)


if __name__ == "__main__":
    main()
