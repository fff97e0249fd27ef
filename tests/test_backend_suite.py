"""The suite's training test modules, run again, whole, on every installed Keras backend besides
TensorFlow (JAX in CI; PyTorch where it is installed): a pytest of its own per backend, with
KEXP_TEST_BACKEND set (conftest.py), since a process keeps the backend it first imported Keras with."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

OTHER = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is not None]

# the training tests of the suite, run again on each other backend (conftest.py: KEXP_TEST_BACKEND)
TRAINING_TESTS = ["test_experiment.py", "test_training.py", "test_functional.py", "test_metrics.py", "test_reuse.py",
                  "test_class_weights.py", "test_models.py"]


@pytest.mark.skipif(not OTHER, reason="no Keras backend besides TensorFlow is installed")
@pytest.mark.parametrize("name", OTHER)
def test_the_training_tests_pass_on_every_installed_backend(name):
    tests = Path(__file__).parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                           *(str(tests / module) for module in TRAINING_TESTS)], cwd=tests.parent,
                          env={**os.environ, "KEXP_TEST_BACKEND": name}, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-6000:]
    assert " passed" in done.stdout.strip().splitlines()[-1]
