"""Shared fixtures and the environment of the whole test session. Append new fixtures; do not rewrite
the ones others use. Builders that test modules share live in tests/helpers.py (test modules never
import each other or this file).

The session, set up here before any test module is imported:
- runs the checkout's code: the checkout root comes first on sys.path and on PYTHONPATH, so tests and
  the `python -m kexp` subprocesses they start never run an installed (possibly stale) copy;
- has its own KERAS_HOME (a temporary folder: no user keras.json, so floatx float32, and nothing is
  written under ~/.keras) and KERAS_BACKEND=tensorflow, inherited by every subprocess;
- uses the Hypothesis profile named by KEXP_HYPOTHESIS_PROFILE: `kexp-ci` (default, 150 examples per
  property) or `kexp-thorough` (20,000, by hand).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]

sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])


def _private_keras_home() -> str:
    folder = tempfile.mkdtemp(prefix="kexp-tests-keras-home-")
    owner = os.getpid()
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(folder, ignore_errors=True))
    return folder


os.environ["KERAS_HOME"] = _private_keras_home()
os.environ["KERAS_BACKEND"] = "tensorflow"

settings.register_profile("kexp-ci", max_examples=150, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("kexp-thorough", max_examples=20_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("KEXP_HYPOTHESIS_PROFILE", "kexp-ci"))

# tests/ is on sys.path; imported after the environment is set
from helpers import TINY_CONFIG  # noqa: E402


@pytest.fixture
def tiny_config(tmp_path):
    """Path of `tiny.yaml` (TINY_CONFIG) in a fresh temporary folder."""
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path
