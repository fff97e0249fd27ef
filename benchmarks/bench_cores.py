"""What N processes at once get from this machine, with no kexp code in them: the ceiling of any
executor's parallel efficiency here.

    python benchmarks/bench_cores.py [--processes 2] [--backend tensorflow|jax] [--epochs 100]

Two workloads, each run alone, then as N identical processes at once (nothing shared, nothing to wait
for). Efficiency = time alone / time of the slowest of the N.
- a pure-Python CPU loop;
- plain Keras: one model, `fit` on 303 Boston-sized rows (13 features, batch 16, validation each
  epoch) for `--epochs`, then the same `fit` four times more on the same compiled model (what a
  worker does with the folds of a trial), timed after the first.
`bench_sweep.py`'s parallel efficiency (kexp -j1 against -jN) is to be read against these.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

LOOP = """
import time
t = time.perf_counter()
s = 0
for i in range(30_000_000):
    s += i * i
print(time.perf_counter() - t)
"""

KERAS = """
import os, sys, time
os.environ["KERAS_BACKEND"] = sys.argv[1]
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras

epochs = int(sys.argv[2])
rng = np.random.default_rng(0)
x, y = rng.normal(size=(404, 13)).astype("float32"), rng.normal(size=404).astype("float32")
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="rmsprop", loss="mse", metrics=["mae"])
model.fit(x[:303], y[:303], validation_data=(x[303:], y[303:]), epochs=1, batch_size=16, verbose=0)
t = time.perf_counter()
for fold in range(4):
    model.fit(x[:303], y[:303], validation_data=(x[303:], y[303:]), epochs=epochs, batch_size=16, verbose=0)
print(time.perf_counter() - t)
"""


def timed(code: str, args: list[str], processes: int) -> list[float]:
    running = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
               for _ in range(processes)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in running]


def efficiency(code: str, args: list[str], processes: int) -> float:
    """Time alone over the slowest time of `processes` copies at once."""
    return timed(code, args, 1)[0] / max(timed(code, args, processes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--backend", default="tensorflow", choices=["tensorflow", "jax", "torch"])
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    for name, code, extra in (("pure-Python loop", LOOP, []),
                              (f"Keras fit on {args.backend}, 4 x {args.epochs} epochs", KERAS,
                               [args.backend, str(args.epochs)])):
        alone = timed(code, extra, 1)[0]
        together = timed(code, extra, args.processes)
        print(f"{name}: alone {alone:.2f} s; {args.processes} at once {', '.join(f'{t:.2f}' for t in together)} s; "
              f"parallel efficiency {alone / max(together):.0%}", flush=True)


if __name__ == "__main__":
    main()
