"""The command line: thin commands, clear errors with exit code 2, no TensorFlow where not needed."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from kexp.cli import app

runner = CliRunner()

CONFIG = """
    dataset: {name: npz, path: data.npz}
    preprocessing: {standardize: true}
    model:
      layers:
        - {layer: Dense, units: 4, activation: relu}
        - {layer: Dense, units: 1}
    compile: {loss: mse, metrics: [mae]}
    training: {epochs: 2, batch_size: 8}
    validation: {scheme: holdout, size: 6}
    """


@pytest.fixture
def config_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype("float32")
    np.savez(tmp_path / "data.npz", x_train=x[:24], y_train=x[:24, 0], x_test=x[24:], y_test=x[24:, 0])
    path = tmp_path / "exp.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    return path


def no_tensorflow(*argv):
    code = ("import sys; from kexp.cli import app\n"
            "try:\n    app(sys.argv[1:], prog_name='kexp')\nexcept SystemExit as e:\n    code = e.code\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
            "print('exit', code)")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)


def test_help_lists_the_commands_without_importing_tensorflow():
    done = no_tensorflow("--help")
    assert done.returncode == 0, done.stderr
    for command in ("train", "kfold", "validate", "compare", "show"):
        assert command in done.stdout
    assert "exit 0" in done.stdout


def test_validate_of_a_malformed_file_exits_2_without_tensorflow_or_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: {name: imbd}\nmodel: {layers: []}\ncompile: {loss: 3}\ntraining: {epochs: -2}\n")
    done = no_tensorflow("validate", str(bad))
    assert "exit 2" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line]
    assert len(lines) >= 4 and all(line.startswith(f"{bad}: ") for line in lines), lines
    assert any("dataset.name" in line and "did you mean imdb" in line for line in lines)
    assert any("training.epochs" in line for line in lines)


def test_validate_checks_names_and_data_when_the_schema_passes(config_file):
    result = runner.invoke(app, ["validate", str(config_file)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["validate", str(config_file), "--set", "model.layers.0.layer=Dens",
                                 "--set", "compile.loss=msee"])
    assert result.exit_code == 2
    assert "model.layers.0.layer: unknown Keras layer (did you mean Dense" in result.output
    assert "Traceback" not in result.output


def test_train_prints_results_and_the_run_folder(config_file, tmp_path):
    result = runner.invoke(app, ["train", str(config_file), "--runs-dir", str(tmp_path / "runs"),
                                 "--set", "training.epochs=1", "--name", "smoke"])
    assert result.exit_code == 0, result.output
    assert "run folder:" in result.output and "-smoke-" in result.output
    assert "val" in result.output or "final" in result.output
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and folders[0].name.split("-")[-2] == "smoke"


def test_train_on_a_kfold_config_names_the_right_command(config_file, tmp_path):
    result = runner.invoke(app, ["train", str(config_file), "--set", "validation={scheme: kfold, n_splits: 2}",
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "kexp kfold" in result.output
    result = runner.invoke(app, ["kfold", str(config_file), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert "kexp train" in result.output


def test_missing_config_file_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
