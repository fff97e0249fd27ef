"""`--plugins FILE` and `plugins:` (kexp/plugins.py): the user's own Keras objects by name in train, predict
and evaluate; a plugin that fails to import names its file and line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from cli_runner import invoke, stderr_of

from kexp import layout

PLUGIN = '''\
import keras


@keras.saving.register_keras_serializable(package="mine")
def half_mae(y_true, y_pred):
    return keras.ops.mean(keras.ops.abs(y_true - y_pred)) / 2
'''

CONFIG = """\
seed: 0
dataset: {name: diabetes}
preprocessing: {standardize: true}
model:
  layers:
    - {layer: Dense, units: 4, activation: relu}
    - {layer: Dense, units: 1}
compile: {optimizer: adam, loss: mse, metrics: [half_mae, mae]}
training: {epochs: 1, batch_size: 64}
"""


def _only_run(runs):
    (folder,) = runs.iterdir()
    return folder


@pytest.fixture(scope="module")
def plugin_run(tmp_path_factory):
    """A hold-out run whose metric `half_mae` comes from a plugin given with --plugins."""
    tmp = tmp_path_factory.mktemp("plugin")
    (tmp / "objects.py").write_text(PLUGIN)
    (tmp / "exp.yaml").write_text(CONFIG)
    result = invoke("train", tmp / "exp.yaml", "--plugins", tmp / "objects.py", "--runs-dir", tmp / "runs", "-q")
    assert result.exit_code == 0, result.output
    return _only_run(tmp / "runs")


def test_a_plugin_metric_works_by_its_plain_name_in_training(plugin_run):
    metrics = json.loads((plugin_run / layout.METRICS).read_text())
    assert set(metrics["test"]) == {"loss", "half_mae", "mae"}
    assert metrics["test"]["half_mae"] == pytest.approx(metrics["test"]["mae"] / 2, rel=1e-5)
    assert "val_half_mae" in (plugin_run / layout.HISTORY).read_text().splitlines()[0].split(",")
    config = (plugin_run / layout.CONFIG_YAML).read_text()
    assert str(plugin_run.parents[1] / "objects.py") in config  # absolute: workers and predict import it


def test_evaluate_with_the_plugin_in_a_fresh_process_equals_the_runs_test_metrics(plugin_run):
    """A new process knows nothing of half_mae until --plugins names its file."""
    recorded = json.loads((plugin_run / layout.METRICS).read_text())["test"]
    done = subprocess.run([sys.executable, "-m", "kexp", "evaluate", str(plugin_run), "diabetes:test",
                           "--plugins", str(plugin_run.parents[1] / "objects.py")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"half_mae  {recorded['half_mae']:.6g}" in done.stdout


def test_a_run_folder_never_makes_predict_import_code(plugin_run):
    """The run's config.yaml lists the plugin; predict does not import it but says what to pass."""
    done = subprocess.run([sys.executable, "-m", "kexp", "predict", str(plugin_run), "diabetes:test"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "cannot load the model" in done.stderr
    assert f"the run was trained with plugins: pass --plugins {plugin_run.parents[1] / 'objects.py'}" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_imports_a_runs_plugins_only_when_named_again(plugin_run):
    result = invoke("kfold", "--resume", plugin_run)
    assert result.exit_code == 2
    assert f"{plugin_run}: was trained with plugins {plugin_run.parents[1] / 'objects.py'}; resuming imports them: " \
           "pass --plugins for each" in stderr_of(result)


def test_config_plugins_are_relative_to_the_config_file(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "objects.py").write_text(PLUGIN)
    (folder / "exp.yaml").write_text(CONFIG + "plugins: [objects.py]\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    result = invoke("validate", folder / "exp.yaml")
    assert result.exit_code == 0, result.output


def test_an_unregistered_metric_name_is_still_a_config_error(tmp_path):
    (tmp_path / "exp.yaml").write_text(CONFIG.replace("half_mae", "quarter_mae"))
    result = invoke("validate", tmp_path / "exp.yaml")
    assert result.exit_code == 2
    assert "compile.metrics.0: unknown Keras metric; got 'quarter_mae'" in stderr_of(result)


@pytest.mark.parametrize("source, line, error", [
    ("import keras\n\nraise ValueError('boom')\n", 3, "ValueError: boom"),
    ("import keras\ndef broken(:\n    pass\n", 2, "SyntaxError"),
    ("import keras\n\n\ndef f():\n    return 1 / 0\n\n\nf()\n", 5, "ZeroDivisionError: division by zero"),
])
def test_a_broken_plugin_names_its_file_and_line(tmp_path, source, line, error):
    plugin = tmp_path / "bad.py"
    plugin.write_text(source)
    (tmp_path / "exp.yaml").write_text(CONFIG)
    result = invoke("validate", tmp_path / "exp.yaml", "--plugins", plugin)
    assert result.exit_code == 2
    text = stderr_of(result)
    assert f"{plugin}:{line}: plugin failed to import: {error}" in text


def test_a_missing_plugin_file_is_reported(tmp_path):
    (tmp_path / "exp.yaml").write_text(CONFIG + "plugins: [nowhere.py]\n")
    result = invoke("validate", tmp_path / "exp.yaml")
    assert result.exit_code == 2
    assert f"plugins: no such file; got {tmp_path / 'nowhere.py'}" in stderr_of(result)


def test_worker_processes_import_the_plugins(tmp_path):
    (tmp_path / "objects.py").write_text(PLUGIN)
    (tmp_path / "exp.yaml").write_text(CONFIG + "plugins: [objects.py]\nvalidation: {scheme: kfold, n_splits: 2}\n")
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "kexp", "kfold", str(tmp_path / "exp.yaml"), "--workers", "2",
                           "--runs-dir", str(tmp_path / "runs"), "-q"], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((_only_run(tmp_path / "runs") / layout.METRICS).read_text())
    assert "half_mae" in metrics["validation"]["best"]


def test_plugins_module_is_imported_once_per_file(tmp_path):
    from kexp.plugins import import_plugins

    counter = tmp_path / "count.py"
    counter.write_text(textwrap.dedent("""\
        import builtins
        builtins.KEXP_TEST_IMPORTS = getattr(builtins, "KEXP_TEST_IMPORTS", 0) + 1
    """))
    import builtins

    first = import_plugins([counter])
    assert import_plugins([str(counter)]) == first
    assert builtins.KEXP_TEST_IMPORTS == 1
