"""End-to-end runs on every installed Keras backend besides TensorFlow (JAX in CI; PyTorch where it is
installed: its wheels are too large for CI). A process keeps the backend it first imported Keras with,
so each backend's commands run in one fresh `python` process per backend (the test session itself is
on TensorFlow): K-fold in-process and with two worker processes, IMDB-style multi-hot sequences, a
CSV with two outputs, an NPZ, evaluate, and a sweep. A hook in every process of it (sitecustomize)
records any import of TensorFlow: none of them may import it. test_backend_suite.py runs the suite's
training test modules again on those backends."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_CONFIG, TWO_OUTPUTS_CONFIG
from keras_files import make_imdb

OTHER = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is not None]
pytestmark = pytest.mark.skipif(not OTHER, reason="no Keras backend besides TensorFlow is installed")

# sitecustomize.py of every process the commands start: a file per process, and one per import of
# TensorFlow (not per importlib.util.find_spec look-up, which kexp makes to check a backend is installed)
HOOK = """\
import os, sys, traceback
_folder = os.environ.get("KEXP_TEST_IMPORTS")
if _folder:
    open(os.path.join(_folder, f"process-{os.getpid()}"), "w").close()

    class _Watch:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" and sys._getframe(2).f_code.co_name == "_find_and_load_unlocked":
                with open(os.path.join(_folder, f"tensorflow-{os.getpid()}"), "w") as file:
                    file.write("".join(traceback.format_stack()))
            return None

    sys.meta_path.insert(0, _Watch())
"""

# the commands, run one after the other by kexp's own CLI in one process; exit codes as JSON
DRIVER = """\
import json, sys
from kexp.cli import app
codes = []
for args in json.loads(sys.argv[1]):
    try:
        code = app(args, standalone_mode=False)  # a command's exit code comes back, not raised
        codes.append(code if isinstance(code, int) else 0)
    except SystemExit as exc:
        codes.append(exc.code)
    except Exception as exc:
        codes.append(repr(exc))
print(json.dumps(codes))
"""

KFOLD = TINY_CONFIG.replace("{scheme: holdout, size: 0.2, shuffle: true}", "{scheme: kfold, n_splits: 2}")
IMDB = """\
seed: 0
dataset: {name: imdb, num_words: 30, data_dir: data}
preprocessing: {multi_hot: 30}
model:
  layers:
    - {layer: Dense, units: 4, activation: relu}
    - {layer: Dense, units: 1, activation: sigmoid}
compile: {optimizer: rmsprop, loss: binary_crossentropy, metrics: [accuracy]}
training: {epochs: 2, batch_size: 8}
validation: {scheme: holdout, size: 5, final: {epochs: 2}}
"""
NPZ = """\
seed: 0
dataset: {name: npz, path: rows.npz, x: x, y: y}
model:
  layers:
    - {layer: Dense, units: 4, activation: relu}
    - {layer: Dense, units: 1}
compile: {optimizer: adam, loss: mse, metrics: [mae]}
training: {epochs: 2, batch_size: 8}
validation: {scheme: holdout, size: 0.25}
"""
SWEEP = KFOLD + "search:\n  method: grid\n  space:\n    training.batch_size: [16, 32]\n"
# a layer that needs TensorFlow ops
HASHING = TINY_CONFIG.replace("- {layer: Dense, units: 4, activation: relu}", "- {layer: Hashing, num_bins: 4}")


@pytest.fixture(scope="module", params=OTHER)
def runs(request, tmp_path_factory):
    """Every command on one backend, in one fresh process: (backend, folder, evaluate's process, the
    commands' stderr)."""
    name = request.param
    folder = tmp_path_factory.mktemp(f"runs-{name}")
    hook, imports = folder / "hook", folder / "imports"
    hook.mkdir()
    imports.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    (folder / "kfold.yaml").write_text(KFOLD)
    (folder / "sweep.yaml").write_text(SWEEP)
    (folder / "imdb.yaml").write_text(IMDB)
    make_imdb(folder / "data")
    (folder / "npz.yaml").write_text(NPZ)
    rng = np.random.default_rng(0)
    np.savez(folder / "rows.npz", x=rng.normal(size=(40, 3)).astype("float32"), y=rng.normal(size=40))
    rows = ["a,b,price,band"] + [f"{rng.normal():.3f},{rng.normal():.3f},{rng.normal():.3f},{i % 3}" for i in range(30)]
    (folder / "two.csv").write_text("\n".join(rows) + "\n")
    (folder / "two.yaml").write_text(TWO_OUTPUTS_CONFIG + "validation: {scheme: holdout, size: 0.25}\n")
    (folder / "hashing.yaml").write_text(HASHING)
    common = ["--quiet", "--backend", name]
    commands = [
        ["kfold", "kfold.yaml", *common, "--runs-dir", "kfold-j2", "--workers", "2"],
        ["kfold", "kfold.yaml", *common, "--runs-dir", "kfold-j1"],
        ["train", "imdb.yaml", *common, "--runs-dir", "imdb"],
        ["train", "two.yaml", *common, "--runs-dir", "two"],
        ["train", "npz.yaml", *common, "--runs-dir", "npz"],
        ["sweep", "sweep.yaml", *common, "--runs-dir", "sweeps", "--workers", "2"],
        ["validate", "hashing.yaml", "--backend", name],
    ]
    env = {**os.environ, "KEXP_TEST_IMPORTS": str(imports), "KERAS_BACKEND": "tensorflow",  # --backend wins
           "PYTHONPATH": os.pathsep.join([str(hook), os.environ["PYTHONPATH"]])}
    env.pop("KEXP_DATA_DIR", None)
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout.strip().splitlines()[-1])
    assert codes == [0] * (len(commands) - 1) + [2], (codes, done.stderr[-3000:])
    # evaluate, in a process of its own: the backend comes from the run's config
    (two,) = (folder / "two").iterdir()
    evaluated = subprocess.run([sys.executable, "-m", "kexp", "evaluate", str(two), "two.csv"], cwd=folder,
                               env={**env, "KERAS_BACKEND": "tensorflow"}, capture_output=True, text=True, timeout=300)
    return name, folder, evaluated, done.stderr


def only(folder: Path) -> Path:
    (found,) = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return found


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_no_process_of_a_run_on_another_backend_imports_tensorflow(runs):
    _, folder, *_ = runs
    imports = folder / "imports"
    found = sorted(p.name for p in imports.iterdir())
    assert not [n for n in found if n.startswith("tensorflow-")], [
        (imports / n).read_text()[-1500:] for n in found if n.startswith("tensorflow-")]
    assert len([n for n in found if n.startswith("process-")]) >= 3  # the driver and -j 2's workers at least


def test_every_run_records_its_backend(runs):
    name, folder, *_ = runs
    for run in (only(folder / name) for name in ("kfold-j2", "kfold-j1", "imdb", "two", "npz")):
        assert read(run / "config.json")["backend"] == name
        environment = read(run / "environment.json")
        assert environment["backend"] == name and environment["backend_version"]
        assert read(run / "status.json")["status"] == "completed"


def test_two_workers_give_the_same_folds_as_one_process(runs):
    _, folder, *_ = runs
    workers, alone = only(folder / "kfold-j2"), only(folder / "kfold-j1")  # fresh worker processes; in-process
    for fold in ("r0-f0", "r0-f1"):
        a, b = (read(run / "folds" / fold / "metrics.json") for run in (workers, alone))
        assert (a["validation"], a["train"], a["best_epoch"]) == (b["validation"], b["train"], b["best_epoch"])
    assert read(workers / "metrics.json")["validation"] == read(alone / "metrics.json")["validation"]


def test_multi_hot_sequences_train_and_test(runs):
    _, folder, *_ = runs
    metrics = read(only(folder / "imdb") / "metrics.json")
    assert 0 <= metrics["test"]["accuracy"] <= 1
    assert metrics["epochs_run"] == 2


def test_evaluate_on_the_backend_of_the_run_gives_its_scores(runs):
    name, folder, evaluated, _ = runs
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stdout.strip().splitlines()
    assert lines[0] == "30 samples of two.csv"
    scores = dict(line.split() for line in lines[1:])
    assert {"loss", "price_mae", "band_accuracy"} <= set(scores), lines
    assert not list((folder / "imports").glob("tensorflow-*"))


def test_a_sweep_runs_every_trial(runs):
    _, folder, *_ = runs
    sweep = read(only(folder / "sweeps") / "sweep.json")
    assert read(only(folder / "sweeps") / "status.json")["status"] == "completed"
    assert [t["status"] for t in sweep["trials"]] == ["completed", "completed"]


def test_validate_names_a_layer_the_backend_cannot_run_with_its_key_and_the_backend(runs):
    name, _, _, stderr = runs
    lines = [line for line in stderr.splitlines() if line.startswith("hashing.yaml: ")]
    assert len(lines) == 1, stderr[-2000:]
    assert lines[0].startswith("hashing.yaml: model.layers.0: Hashing: ") and f"(on the {name} backend)" in lines[0]
