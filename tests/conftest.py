"""Shared fixtures and the environment of the whole test session. Append new fixtures; do not rewrite
the ones others use. Builders that test modules share live in tests/helpers.py (test modules never
import each other or this file).

The session, set up here before any test module is imported:
- runs the checkout's code: the checkout root comes first on sys.path and on PYTHONPATH, so tests and
  the `python -m kexp` subprocesses they start never run an installed (possibly stale) copy;
- has its own KERAS_HOME (a temporary folder: no user keras.json, so floatx float32, and nothing is
  written under ~/.keras) and KERAS_BACKEND=tensorflow (KEXP_TEST_BACKEND=jax: JAX), inherited by every
  subprocess;
- keeps JAX's compilation cache in that folder too (kexp's default is ~/.cache/kexp/jax);
- uses the Hypothesis profile named by KEXP_HYPOTHESIS_PROFILE: `kexp-ci` (default, 150 examples per
  property) or `kexp-thorough` (20,000, by hand).
"""

from __future__ import annotations

import atexit
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

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
os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.environ["KERAS_HOME"], "jax-cache")  # JAX runs
os.environ["KERAS_BACKEND"] = os.environ.get("KEXP_TEST_BACKEND", "tensorflow")  # see test_backend_runs.py

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


@pytest.fixture
def no_downloads(tmp_path, monkeypatch):
    """No test may reach the internet: downloads go to a closed loopback port unless the test uses
    `mirror`, and Keras' cache lives in tmp_path/keras_home. The kexp.data tests use it for every test."""
    for name in ("KEXP_DATA_DIR", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                 "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KEXP_DATASETS_URL", "http://127.0.0.1:1/")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))


@pytest.fixture
def mirror(tmp_path, monkeypatch, no_downloads):
    """A loopback HTTP server for KEXP_DATASETS_URL serving `folder`; `requests` lists every path asked for."""
    served = tmp_path / "mirror"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("KEXP_DATASETS_URL", f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        yield SimpleNamespace(folder=served, requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
