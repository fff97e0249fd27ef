"""The Keras backend (TensorFlow, JAX or PyTorch): the one module with code for each of them.

Keras fixes its backend when it is first imported, from KERAS_BACKEND. So a process picks its backend
before anything imports Keras: `resolve` says which one a config asks for (its `backend:` key, else
what Keras itself would read: KERAS_BACKEND, then keras.json, then TensorFlow) and fails in one line
when its package is missing; `select` sets it for this process and for every process started from it
(local workers inherit the environment; Ray tasks get it through their runtime environment).

Per backend here: the quiet start-up and thread settings (`start_backend`), the versions a run
records, and the input pipeline (`batches`): tf.data on TensorFlow, as before; on JAX and PyTorch a
`keras.utils.PyDataset` that shuffles, batches and multi-hot encodes with NumPy, so that those backends
never import TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
from typing import Any

import numpy as np

from kexp.errors import ConfigError, RunError

NAMES = ("tensorflow", "jax", "torch")
EXTRAS = {"tensorflow": "kexp", "jax": "kexp[jax]", "torch": "kexp[torch]"}  # what installs each

_started: dict[str, bool] = {}


# --------------------------------------------------------------------------- which backend
def keras_default() -> tuple[str | None, str]:
    """The backend Keras would pick by itself, and where that comes from: KERAS_BACKEND, else the
    `backend` of keras.json in KERAS_HOME (or ~/.keras), else (None, "")."""
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name, "KERAS_BACKEND"
    home = os.environ.get("KERAS_HOME")
    if home is None:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    where = os.path.expanduser(os.path.join(home, "keras.json"))
    try:
        with open(where, encoding="utf-8") as file:
            name = json.load(file).get("backend")
    except (OSError, ValueError, AttributeError):
        return None, ""
    return (name, f"{where}: backend") if isinstance(name, str) and name else (None, "")


def installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def resolve(name: str | None, where: str = "backend") -> str:
    """The backend to use: `name` (a config's `backend`, or --backend), else Keras' own choice, else
    TensorFlow. A backend Keras does not have, or whose package is missing, is a one-line ConfigError
    naming `where` and what to install."""
    if not name:
        name, source = keras_default()
        if not name:
            return "tensorflow"
        where = source
    if name not in NAMES:
        raise ConfigError(f"{where}: unknown Keras backend; got {name!r}; allowed: {', '.join(NAMES)}")
    if not installed(name):
        raise ConfigError(f"{where}: the {name} backend needs the {name} package, which is not installed: "
                          f'pip install "{EXTRAS[name]}"')
    return name


# Local workers kept on CPUs of their own (kexp.executor): a JAX worker's runtime threads then take their
# time from it, not from the other workers (Boston grid, 2 workers on 2 CPUs: 61 s against 65 s), while
# TensorFlow's inter-op threads need the other CPUs' idle moments (251 s against 203 s). PyTorch: unmeasured.
PINS_WORKERS = {"tensorflow": False, "jax": True, "torch": False}


def chosen() -> str:
    """The backend this process starts Keras with (and the processes it starts, which inherit it)."""
    return os.environ.get("KERAS_BACKEND") or keras_default()[0] or "tensorflow"


def current() -> str | None:
    """The backend Keras was imported with in this process; None before Keras is imported."""
    keras = sys.modules.get("keras")
    if keras is None or not hasattr(keras, "backend"):
        return None
    return keras.backend.backend()


def select(name: str) -> None:
    """Use backend `name` in this process and the processes it starts. Keras cannot change its
    backend once imported: a process that already has another one is a RunError."""
    imported = current()
    if imported is not None and imported != name:
        raise RunError(f"backend {name}: Keras was already imported with the {imported} backend in this process, "
                       f"and cannot change it; run kexp in a new process (or set KERAS_BACKEND={name})")
    os.environ["KERAS_BACKEND"] = name


def use(config, source: str | None = None) -> str:
    """Select and start the backend a config asks for (see `resolve`); its name."""
    name = resolve(config.backend, f"{source}: backend" if source else "backend")
    select(name)
    start_backend()
    return name


def steps_per_execution(requested: int | str, steps: int) -> int:
    """Keras' `steps_per_execution` for `training.steps_per_execution` (`epoch`: the epoch's `steps`).
    PyTorch's Keras trainer runs one step per call: there `epoch` means 1."""
    return 1 if current() == "torch" else steps if requested == "epoch" else int(requested)


def limits(config) -> list[tuple[str, str]]:
    """(dotted key, problem) for what the config asks of a backend that it cannot do (its layers are
    checked by building the model: a layer that needs TensorFlow says so with its key)."""
    name = current()
    spe = config.training.steps_per_execution
    if name == "torch" and spe != "epoch" and spe > 1:
        return [("training.steps_per_execution", f"the torch backend runs one step per execution (Keras' PyTorch "
                                                  f"trainer); got {spe}; allowed: 1 or epoch")]
    return []


# --------------------------------------------------------------------------- start-up
def start_backend(threads: int | None = None) -> None:
    """Import Keras and start its backend once, quietly (TensorFlow's C++ start-up chatter goes to
    /dev/null), with `threads` compute threads when given (worker processes)."""
    name = chosen()
    if _started.get(name) and "keras" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if name == "jax" and "jax" not in sys.modules:
        _jax_compilation_cache()
    if name == "jax" and threads and "jax" not in sys.modules:  # XLA reads its threads when JAX starts
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = (f"{flags} --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
                                       f"intra_op_parallelism_threads={threads}").strip()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    # Keras' Orbax callback imports JAX whenever it is installed (1.5 s and 140 MB a process): not on
    # the other backends (a plugin may still import it afterwards)
    hide_jax = name != "jax" and "jax" not in sys.modules and "keras" not in sys.modules
    if hide_jax:
        sys.modules["jax"] = None
    try:
        os.dup2(devnull, 2)
        import logging
        import warnings

        warnings.filterwarnings("ignore", module="keras")
        if name == "tensorflow":
            import tensorflow as tf

            logging.getLogger("tensorflow").setLevel(logging.ERROR)
            if threads:
                try:
                    tf.config.threading.set_intra_op_parallelism_threads(threads)
                    # one inter-op thread leaves a worker waiting on itself (the input pipeline and the
                    # step each need one): 25% slower at the same CPU time (benchmarks/README.md)
                    tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
                except RuntimeError:
                    pass  # already started; keep what it has
            tf.constant(0)  # start the runtime now, while its chatter is silenced
        elif name == "jax":
            import jax.numpy as jnp

            logging.getLogger("jax").setLevel(logging.ERROR)
            jnp.zeros(1).block_until_ready()
        elif name == "torch":
            import torch

            if threads:
                torch.set_num_threads(threads)
                try:
                    torch.set_num_interop_threads(threads)
                except RuntimeError:
                    pass  # already set, or parallel work has started
        import keras  # noqa: F401  (with the backend above)

        if name != "tensorflow":
            _without_tensorflow()
    finally:
        if hide_jax and sys.modules.get("jax", 0) is None:
            del sys.modules["jax"]
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    _started[name] = True


def _jax_compilation_cache() -> None:
    """JAX's persistent compilation cache, unless the user set one: every fold, trial and worker
    builds the same model afresh, and XLA compiles each one's steps again (~0.2 s a function, ~1.5 s a
    fold on a 2-core machine); from the cache, identical programs load instead. In
    JAX_COMPILATION_CACHE_DIR, else $XDG_CACHE_HOME/kexp/jax (~/.cache/kexp/jax); every program is kept
    (JAX's own thresholds, 1 s of compile time, would keep none of a small model's)."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(base, "kexp", "jax")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # small models compile fast
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def _without_tensorflow() -> None:
    """Keep Keras from importing TensorFlow on another backend. Keras imports it, when installed, on
    the way through seeding, saving and data adapters, only to handle TensorFlow objects that a JAX or
    PyTorch run of kexp never has (3 s and ~400 MB per process). Keras' lazy handle on TensorFlow is
    told it is absent; if a Keras release renames that handle, TensorFlow is imported as before."""
    if "tensorflow" in sys.modules:
        return
    try:
        from keras.src.utils import module_utils
    except ImportError:
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None and hasattr(lazy, "_available"):
        lazy._available = False


def versions() -> dict:
    """The framework versions a run records in environment.json: Keras, its backend and the backend's
    package version (`tensorflow` stays a key of its own, as older run folders have it)."""
    import keras

    name = keras.backend.backend()
    package = sys.modules.get(name) or importlib.import_module(name)
    found = {"keras": keras.__version__, "backend": name, "backend_version": getattr(package, "__version__", None)}
    if name == "tensorflow":
        found["tensorflow"] = found["backend_version"]
    return found


# --------------------------------------------------------------------------- input pipelines
def batches(x: Any, y: Any, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
            repeat: bool = False, weights: np.ndarray | None = None):
    """Batches of prepared features for Keras' fit/evaluate/predict: shuffled each epoch with `shuffle`,
    multi-hot inputs (`MultiHot`) encoded one batch at a time, (x, y, sample weight) with `weights`.
    `repeat`: endless, for `fit` with `steps_per_epoch` (tf.data only; a PyDataset is one epoch long and
    Keras starts it again each epoch)."""
    if current() in (None, "tensorflow"):
        return tf_dataset(x, y, batch_size, shuffle=shuffle, seed=seed, repeat=repeat, weights=weights)
    return array_batches(x, y, batch_size, shuffle=shuffle, seed=seed, weights=weights)


def tf_dataset(x: Any, y: Any, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
               repeat: bool = False, weights: np.ndarray | None = None):
    """A tf.data pipeline over prepared features, built once: cached, shuffled each epoch, batched,
    multi-hot encoded per batch, prefetched."""
    import tensorflow as tf

    from kexp.preprocessing import MultiHot, n_rows

    def source(value):
        if isinstance(value, MultiHot):
            return tf.RaggedTensor.from_row_splits(value.sequences.values, value.sequences.row_splits)
        return value

    def encode(value, batch):
        if isinstance(value, MultiHot):
            dense = tf.math.bincount(batch, minlength=value.width, maxlength=value.width,
                                     binary_output=True, dtype=tf.float32, axis=-1)
            return tf.ensure_shape(dense, [None, value.width])
        return batch

    is_dict = isinstance(x, dict)
    xs = {k: source(v) for k, v in x.items()} if is_dict else source(x)
    n = n_rows(x)
    parts = (xs,) if y is None else (xs, y) if weights is None else (xs, y, weights)
    ds = tf.data.Dataset.from_tensor_slices(parts)
    ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if repeat:
        ds = ds.repeat()
    lazy = any(isinstance(v, MultiHot) for v in (x.values() if is_dict else [x]))
    if lazy:
        def encode_batch(bx, *by):
            if is_dict:
                bx = {k: encode(x[k], v) for k, v in bx.items()}
            else:
                bx = encode(x, bx)
            return (bx, *by)

        ds = ds.map(encode_batch, num_parallel_calls=2, deterministic=True)
    return ds.prefetch(1)


_classes: dict[str, type] = {}


def array_batches(x: Any, y: Any, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
                  weights: np.ndarray | None = None):
    """The batches of `batches` as a keras.utils.PyDataset of NumPy arrays (any backend; JAX's and
    PyTorch's pipeline): one epoch long, the rows in a new seeded order each epoch with `shuffle`."""
    return _batches_class()(x, y, batch_size, shuffle=shuffle, seed=seed, weights=weights)


def _batches_class() -> type:
    """`ArrayBatches`, a keras.utils.PyDataset (defined on first use: it needs Keras imported)."""
    if "ArrayBatches" in _classes:
        return _classes["ArrayBatches"]
    import keras

    from kexp.data import take
    from kexp.preprocessing import MultiHot, n_rows

    def rows_of(value, rows):
        if isinstance(value, dict):
            return {k: rows_of(v, rows) for k, v in value.items()}
        if isinstance(value, MultiHot):
            return MultiHot(value.sequences.take(rows), value.width).dense()
        return take(value, rows)

    class ArrayBatches(keras.utils.PyDataset):
        """NumPy batches in this process: the rows in a new seeded order each epoch with `shuffle`
        (NumPy's generator from `seed`: the same order run after run), multi-hot rows encoded per batch."""

        def __init__(self, x, y, batch_size, *, shuffle=False, seed=None, weights=None):
            super().__init__()
            self.parts = [x] if y is None else [x, y] if weights is None else [x, y, weights]
            self.n, self.batch_size, self.shuffle = n_rows(x), batch_size, shuffle
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(self.n) if shuffle else np.arange(self.n)

        def __len__(self):
            return max(1, math.ceil(self.n / self.batch_size))

        def __getitem__(self, index):
            rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
            batch = tuple(rows_of(part, rows) for part in self.parts)
            return batch  # (x,) for predict: Keras reads a 1-tuple as inputs only

        def on_epoch_end(self):
            if self.shuffle:
                self.order = self.rng.permutation(self.n)

    _classes["ArrayBatches"] = ArrayBatches
    return ArrayBatches
