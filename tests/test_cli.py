"""The command line: thin commands, clear errors with exit code 2, no TensorFlow where not needed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_runner import invoke, stderr_of
from helpers import TINY_CONFIG

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
    result = invoke("validate", config_file)
    assert result.exit_code == 0, result.output
    result = invoke("validate", config_file, "--set", "model.layers.0.layer=Dens", "--set", "compile.loss=msee")
    assert result.exit_code == 2
    assert "model.layers.0.layer: unknown Keras layer (did you mean Dense" in stderr_of(result)


def test_train_prints_results_and_the_run_folder(config_file, tmp_path):
    result = invoke("train", config_file, "--runs-dir", tmp_path / "runs", "--set", "training.epochs=1",
                    "--name", "smoke")
    assert result.exit_code == 0, result.output
    assert "run folder:" in result.output and "-smoke-" in result.output
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and folders[0].name.split("-")[-2] == "smoke"
    metrics = json.loads((folders[0] / "metrics.json").read_text())
    assert f"{metrics['test']['mae']:.4f}" in result.output, "the results show the test score"
    assert f"{metrics['validation']['best']['mae']:.4f}" in result.output, "and the validation score"


def test_train_on_a_kfold_config_names_the_right_command(config_file, tmp_path):
    result = invoke("train", config_file, "--set", "validation={scheme: kfold, n_splits: 2}",
                    "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "kexp kfold" in stderr_of(result)
    result = invoke("kfold", config_file, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "kexp train" in stderr_of(result)


def test_missing_config_file_is_a_usage_error(tmp_path):
    result = invoke("train", tmp_path / "nope.yaml")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- a run seen from outside (issue 15)
REPO = Path(__file__).resolve().parent.parent


def git(repo, *args):
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com",
                           "-c", "commit.gpgsign=false", *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def only_run(runs_dir):
    (folder,) = list(Path(runs_dir).iterdir())
    return folder


@pytest.fixture(scope="module")
def git_repo_run(tmp_path_factory):
    """`kexp train` of the tiny config (with jit_compile on), progress display on, run from inside a
    clean git repository whose runs/ folder is ignored; the repository, the run and the CLI output."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("repo")
    (repo / "tiny.yaml").write_text(TINY_CONFIG)
    (repo / ".gitignore").write_text("runs/\n")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("GIT_"):
                mp.delenv(name)
        git(repo, "init", "-q")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", "configs")
        mp.chdir(repo)
        from rich.console import Console

        from kexp import cli

        mp.setattr(cli, "out", Console(width=200))  # wide enough for the whole progress line
        result = invoke("train", "tiny.yaml", "--runs-dir", "runs", "--set", "compile.jit_compile=true")
    assert result.exit_code == 0, stderr_of(result)
    return repo, only_run(repo / "runs"), result


def test_environment_records_the_git_commit_of_a_clean_tree(git_repo_run):
    repo, folder, _ = git_repo_run
    env = json.loads((folder / "environment.json").read_text())
    assert env["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": False}
    assert len(env["git"]["commit"]) == 40
    assert env["cwd"] == str(repo)


def test_quiet_run_in_a_dirty_tree_records_it_dirty_and_shows_no_progress(git_repo_run, monkeypatch):
    repo, _, _ = git_repo_run
    for name in list(os.environ):
        if name.startswith("GIT_"):
            monkeypatch.delenv(name)
    (repo / "tiny.yaml").write_text(TINY_CONFIG.replace("epochs: 2", "epochs: 1"))  # uncommitted change
    monkeypatch.chdir(repo)
    result = invoke("train", "tiny.yaml", "--runs-dir", "runs_dirty", "--quiet")
    assert result.exit_code == 0, stderr_of(result)
    env = json.loads((only_run(repo / "runs_dirty") / "environment.json").read_text())
    assert env["git"] == {"commit": git(repo, "rev-parse", "HEAD"), "dirty": True}
    # --quiet: no progress line, the results are still reported
    assert not any(line.strip().startswith("holdout") for line in result.stdout.splitlines()), result.stdout
    assert "run folder:" in result.stdout


def compile_config(model_file: Path) -> dict:
    with zipfile.ZipFile(model_file) as archive:
        return json.loads(archive.read("config.json"))["compile_config"]


def test_steps_per_execution_epoch_and_jit_compile_reach_the_compiled_model(git_repo_run):
    _, folder, _ = git_repo_run
    config = json.loads((folder / "config.json").read_text())
    assert config["training"]["steps_per_execution"] == "epoch" and config["compile"]["jit_compile"] is True
    compiled = compile_config(folder / "model.keras")
    # iris: 120 of 150 rows for training (dataset.test_split 0.2), 20% of those for validation -> 96 rows
    # in batches of 32 -> 3 steps per epoch, run as one execution
    assert compiled["steps_per_execution"] == 3
    assert compiled["jit_compile"] is True


def test_train_shows_a_progress_line_with_the_last_epoch_and_its_metrics(git_repo_run):
    _, folder, result = git_repo_run
    history = read_history_csv(folder / "history.csv")
    lines = [line for line in result.stdout.splitlines() if line.strip().startswith("holdout")]
    assert len(lines) == 2, result.stdout  # not a terminal: one plain line per epoch
    line = lines[-1]
    assert line.startswith("holdout epoch 2/2 "), line
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert f" {key} {history[key][-1]:.3f}" in f" {line}", (key, line)
    assert f"run folder: {folder}" in result.stdout


def read_history_csv(path: Path) -> dict:
    from kexp.runs import read_history

    return read_history(path)


@pytest.mark.parametrize("option", [["-j", "3"], ["--workers", "3"], []], ids=["-j", "--workers", "default"])
def test_kfold_workers_option_reaches_the_experiment(option, tiny_config, tmp_path, monkeypatch):
    """The option is passed on (that folds then run in worker processes is
    test_experiment.py::test_kfold_workers_give_the_same_results_as_sequential)."""
    from kexp import experiment
    from kexp.errors import RunError

    seen = []

    def execute(config, **kwargs):
        seen.append(kwargs["workers"])
        raise RunError("stopped by the test")

    monkeypatch.setattr(experiment, "execute", execute)
    result = invoke("kfold", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet", *option,
                    "--set", "validation={scheme: kfold, n_splits: 3}")
    assert "stopped by the test" in stderr_of(result)
    assert seen == [3 if option else 1]


def test_sigint_stays_ignored_when_kexp_starts_with_it_ignored(tmp_path):
    """`nohup kexp train ... &` and job control start kexp with SIGINT ignored: a Ctrl-C meant for the
    shell must not stop it."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.replace("epochs: 2", "epochs: 60"))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the child, as from a shell
    try:
        proc = subprocess.Popen([sys.executable, "-m", "kexp", "train", str(config), "--runs-dir",
                                 str(tmp_path / "runs"), "--quiet"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 240
        history = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "runs").glob("*/history.csv"))
            if found and found[0].read_text().count("\n") >= 3:  # header and two epochs: training
                history = found[0]
                break
            time.sleep(0.05)
        assert history is not None, "training never started: " + (proc.stderr.read() if proc.poll() is not None else "")
        assert proc.poll() is None, "still training when the signals are sent"
        for _ in range(2):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.2)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    status = json.loads((history.parent / "status.json").read_text())
    assert status["status"] == "completed"
    assert history.read_text().count("\n") == 61, "all 60 epochs ran"
