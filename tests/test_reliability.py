"""Interruptions, crashes, numerical failure, resource errors and concurrent runs never cost a
finished result or print a traceback.

Most tests start real `kexp train` processes on the tiny offline config (conftest.TINY_CONFIG):
their time goes to importing TensorFlow, so every run is as short as the test allows.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from cli_runner import invoke, no_traceback, stderr_of

from kexp.runs import find_runs, read_history, read_run

CHECKOUT = Path(__file__).resolve().parents[1]
# `python -m kexp` from the checkout (first on PYTHONPATH), never an installed copy of the code under test;
# KERAS_HOME and KERAS_BACKEND come from the session (conftest.py)
ENV = {**os.environ, "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1",
       "PYTHONUNBUFFERED": "1",
       "PYTHONPATH": os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])])}
FOREVER = "training.epochs=100000"  # a run that is surely mid-training when the test acts


class Kexp:
    """A `kexp` subprocess with its output in files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], cwd: Path, tag: str, env: dict | None = None):
        self.out, self.err = cwd / f"{tag}.out", cwd / f"{tag}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            # SIGINT as a terminal would deliver it, even when pytest itself runs with it ignored
            self.proc = subprocess.Popen([sys.executable, "-m", "kexp", *args], cwd=cwd, env=env or ENV, stdout=out,
                                         stderr=err, stdin=subprocess.DEVNULL,
                                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"kexp did not exit within {timeout} s; stderr:\n{self.err.read_text()}")
        return code, self.out.read_text(errors="replace"), self.err.read_text(errors="replace")

    def wait_for(self, predicate, what: str, timeout: float = 120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"kexp exited ({self.proc.returncode}) before {what}:\n{self.err.read_text()}")
            time.sleep(0.02)
        pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def kexp(tmp_path):
    """Start `kexp ARGS...` in tmp_path; every process still running at the end is killed."""
    started: list[Kexp] = []

    def start(*args: str, env: dict | None = None) -> Kexp:
        process = Kexp([str(a) for a in args], tmp_path, f"kexp{len(started)}", env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait()


def only_run(runs_dir: Path) -> Path | None:
    found = find_runs([runs_dir]) if runs_dir.exists() else []
    return found[0] if len(found) == 1 else None


def epochs_done(folder: Path) -> int:
    path = folder / "history.csv"
    return len(read_history(path).get("epoch", [])) if path.exists() else 0


@pytest.fixture
def keep_signal_handlers():
    """In-process `kexp train` installs SIGINT/SIGTERM handlers; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


# --------------------------------------------------------------------------- interruptions
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_training_marks_the_run_interrupted_and_keeps_history_and_best_weights(
        signum, tiny_config, tmp_path, kexp):
    runs_dir = tmp_path / "runs"
    run = kexp("train", tiny_config, "--runs-dir", runs_dir, "--quiet", "--set", FOREVER)
    folder = run.wait_for(lambda: only_run(runs_dir), "the run folder")
    run.wait_for(lambda: epochs_done(folder) >= 2 and (folder / "best.keras").exists(), "two epochs")

    # while it trains, the folder reads back as running, through the library and `kexp compare`
    assert read_run(folder).status == "running"
    listing = invoke("compare", runs_dir, "--format", "json")
    assert listing.exit_code == 0, listing.output
    assert [row["status"] for row in json.loads(listing.stdout)] == ["running"]

    done = epochs_done(folder)
    run.proc.send_signal(signum)
    code, out, err = run.finish(timeout=60)
    assert code == 130, err
    no_traceback(out, err)
    assert f"interrupted; what was done is kept in {folder}" in err
    record = read_run(folder)
    assert record.status == "interrupted"
    assert "interrupted" in record.status_data["error"] and record.status_data.get("ended")
    history = read_history(folder / "history.csv")
    assert len(history["epoch"]) >= done and history["epoch"] == list(range(1, len(history["epoch"]) + 1))
    with zipfile.ZipFile(folder / "best.keras") as best:  # a complete Keras archive, not a torn write
        assert {"config.json", "model.weights.h5"} <= set(best.namelist())
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"


# Loaded into the kexp process (as sitecustomize, from PYTHONPATH): at interpreter exit, after everything
# else (atexit runs handlers last-in, first-out), it says so in a file and then lingers up to 60 s, as a
# slow TensorFlow teardown would; `done` is written only if nothing ends the process meanwhile.
LINGER_AT_EXIT = """
import atexit, os, time

def _linger(folder=os.environ["KEXP_TEST_LINGER"]):
    open(os.path.join(folder, "exiting"), "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
    open(os.path.join(folder, "done"), "w").close()

atexit.register(_linger)
"""


def test_a_second_sigint_while_shutting_down_exits_at_once_and_quietly(tiny_config, tmp_path, kexp):
    """Ctrl-C pressed again while an interrupted run shuts down: the second SIGINT is sent while the
    process is surely still alive (held in its exit handlers) and ends it at once with 130, quietly."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(LINGER_AT_EXIT)
    env = {**ENV, "KEXP_TEST_LINGER": str(hook), "PYTHONPATH": os.pathsep.join([str(hook), ENV["PYTHONPATH"]])}
    runs_dir = tmp_path / "runs"
    # K-fold: no best.keras is saved at epoch ends, so the first SIGINT cannot land inside a save (see
    # test_a_sigint_while_best_keras_is_saved_marks_the_run_interrupted)
    run = kexp("kfold", tiny_config, "--runs-dir", runs_dir, "--quiet", "--set", FOREVER,
               "--set", "validation={scheme: kfold, n_splits: 2}", env=env)
    folder = run.wait_for(lambda: only_run(runs_dir), "the run folder")
    run.wait_for(lambda: epochs_done(folder / "folds" / "r0-f0") >= 1, "an epoch")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(lambda: (hook / "exiting").exists(), "the process to reach its exit handlers", timeout=60)
    assert read_run(folder).status == "interrupted"
    assert run.proc.poll() is None  # alive, lingering: the second signal cannot miss it
    sent = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    code, out, err = run.finish(timeout=30)
    assert time.monotonic() - sent < 20, "the second SIGINT did not end the process"
    assert not (hook / "done").exists()  # ended by the signal, not by the exit handler running out
    assert code == 130, err
    no_traceback(out, err)
    assert err.count("interrupted") == 1, err
    assert read_run(folder).status == "interrupted"


@pytest.mark.parametrize("moment", ["as_the_folder_appears", "after_an_epoch"])
def test_sigkill_leaves_a_folder_compare_and_show_read_as_incomplete(moment, tiny_config, tmp_path, kexp):
    """SIGKILL at two fixed moments: while the run folder is being set up (config, environment) and
    mid-training."""
    runs_dir = tmp_path / "runs"
    run = kexp("train", tiny_config, "--runs-dir", runs_dir, "--quiet", "--set", FOREVER)
    folder = run.wait_for(lambda: only_run(runs_dir), "the run folder")
    if moment == "after_an_epoch":
        run.wait_for(lambda: epochs_done(folder) >= 1, "an epoch")
    run.proc.kill()
    run.proc.wait()

    record = read_run(folder)
    assert record.status == "incomplete", record
    assert find_runs([runs_dir]) == [folder]
    listing = invoke("compare", runs_dir)
    assert listing.exit_code == 0, listing.output
    assert "incomplete" in listing.stdout
    page = invoke("show", folder)
    assert page.exit_code == 0, page.output
    assert "incomplete" in page.stdout


def test_an_earlier_interrupt_in_the_same_process_does_not_stop_the_next_run(
        tiny_config, tmp_path, keep_signal_handlers):
    import kexp.cli

    kexp.cli.STOP.set()  # what an interrupted command leaves behind in a long-lived process
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert read_run(only_run(tmp_path / "runs")).status == "completed"


def test_a_sigint_while_best_keras_is_saved_marks_the_run_interrupted(tiny_config, tmp_path, keep_signal_handlers,
                                                                       monkeypatch):
    """Ctrl-C lands while the best model is being saved (deterministically: inside the zip writer of the
    .keras archive): the run is interrupted (exit 130, status interrupted), not failed."""
    import zipfile

    import kexp.cli

    real_open, fired = zipfile.ZipFile.open, []

    def open_(self, name, mode="r", *args, **kwargs):
        handle = real_open(self, name, mode, *args, **kwargs)
        if mode == "w" and str(self.filename).endswith(".keras") and not fired:
            fired.append(name)
            kexp.cli.STOP.set()  # what kexp's SIGINT handler does before raising
            handle.close()  # (a real Ctrl-C leaves it to the garbage collector, which warns)
            raise KeyboardInterrupt
        return handle

    monkeypatch.setattr(zipfile.ZipFile, "open", open_)
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert fired, "best.keras was never saved"
    record = read_run(only_run(tmp_path / "runs"))
    assert record.status == "interrupted", record.status_data
    assert result.exit_code == 130, result.output
    assert "interrupted; what was done is kept in" in stderr_of(result)
    assert not [p.name for p in record.path.iterdir() if p.name.startswith(".")], "temporary files left behind"


# --------------------------------------------------------------------------- numerical failure
def test_a_nan_loss_stops_the_run_marks_it_failed_and_keeps_the_metrics(tiny_config, tmp_path, kexp):
    runs_dir = tmp_path / "runs"
    run = kexp("train", tiny_config, "--runs-dir", runs_dir, "--quiet",
               "--set", "compile.optimizer.learning_rate=1e30", "--set", "training.epochs=50")
    code, out, err = run.finish()
    assert code == 1, err
    no_traceback(out, err)
    assert "loss became NaN or inf at epoch 1" in err
    folder = only_run(runs_dir)
    record = read_run(folder)
    assert record.status == "failed"
    assert record.status_data["error"] == "loss became NaN or inf at epoch 1"
    assert read_history(folder / "history.csv")["epoch"] == [1.0]  # stopped at once, the epoch kept
    assert record.metrics.stop_reason == "loss became NaN or inf at epoch 1"
    assert record.metrics.epochs_run == 1


# --------------------------------------------------------------------------- resource errors
def unwritable_runs_dir(tmp_path: Path, how: str) -> Path:
    if how == "parent_is_a_file":
        (tmp_path / "plain_file").write_text("x")
        return tmp_path / "plain_file" / "runs"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; parent_is_a_file covers this as root")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "runs"


@pytest.mark.parametrize("how", ["parent_is_a_file", "read_only"])
def test_an_unwritable_runs_directory_is_a_clear_error_before_training(how, tiny_config, tmp_path,
                                                                      keep_signal_handlers, monkeypatch):
    import kexp.training

    runs_dir = unwritable_runs_dir(tmp_path, how)
    trained = []
    monkeypatch.setattr(kexp.training, "run_task", lambda *a, **k: trained.append(a))
    result = invoke("train", tiny_config, "--runs-dir", runs_dir, "--quiet")
    assert result.exit_code == 1, result.output
    assert stderr_of(result).startswith(f"{runs_dir}: cannot create the runs folder"), stderr_of(result)
    assert trained == []


@pytest.mark.parametrize("full_at", ["config.yaml", "environment.json", "history.csv", "metrics.json",
                                     "status.json"])
def test_a_full_disk_fails_the_run_with_a_clear_error_and_keeps_what_was_written(
        full_at, tiny_config, tmp_path, keep_signal_handlers, monkeypatch):
    """ENOSPC while writing each kind of file: exit 1 with the reason, no traceback, and the files
    written before stay readable (the finished epochs, the status saying why it failed)."""
    import kexp.runs

    real_write, real_append = kexp.runs.atomic_write, kexp.runs.HistoryWriter.append
    status_writes = []

    def atomic_write(path, data):
        name = Path(path).name
        status_writes.extend([name] if name == "status.json" else [])
        if name == full_at and (name != "status.json" or len(status_writes) > 1):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    def append(self, epoch, logs):
        if full_at == "history.csv" and epoch == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(self, epoch, logs)

    monkeypatch.setattr(kexp.runs, "atomic_write", atomic_write)
    monkeypatch.setattr(kexp.runs.HistoryWriter, "append", append)
    runs_dir = tmp_path / "runs"
    result = invoke("train", tiny_config, "--runs-dir", runs_dir, "--quiet")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in stderr_of(result)
    record = read_run(only_run(runs_dir))
    if full_at == "status.json":
        return  # nothing more could be written; the folder reads back (as running: the pid is pytest's)
    assert record.status == "failed" and "No space left on device" in record.status_data["error"]
    if full_at in ("history.csv", "metrics.json"):
        kept = [1.0] if full_at == "history.csv" else [1.0, 2.0]
        assert read_history(record.path / "history.csv")["epoch"] == kept


FIT_PROBLEMS = {
    "wrong_classes": (["model.layers.1.units=5"], "model.layers.1.units: the last layer has 5 units but the data "
                                                  "has 3 classes"),
    "conv2d_on_vectors": (["model.layers.0={layer: Conv2D, filters: 2, kernel_size: 3}"],
                          "model.layers.0: Conv2D cannot take its input"),
    "binary_for_3_classes": (["compile.loss=binary_crossentropy", "model.layers.1.units=1"],
                             "preprocessing.labels: binary labels for 3 classes"),
}


@pytest.mark.parametrize("case", sorted(FIT_PROBLEMS))
def test_data_that_does_not_fit_the_model_is_a_config_error_before_anything_is_written(
        case, tiny_config, tmp_path, keep_signal_handlers):
    overrides, message = FIT_PROBLEMS[case]
    runs_dir = tmp_path / "runs"
    args = [a for item in overrides for a in ("--set", item)]
    result = invoke("train", tiny_config, "--runs-dir", runs_dir, "--quiet", *args)
    assert result.exit_code == 2, result.output
    lines = stderr_of(result).splitlines()
    assert all(line.startswith(f"{tiny_config}: ") for line in lines), lines
    assert any(line.startswith(f"{tiny_config}: {message}") for line in lines), lines
    assert not runs_dir.exists()


# --------------------------------------------------------------------------- concurrency
def test_four_simultaneous_runs_into_one_runs_directory_each_get_their_own_complete_folder(
        tiny_config, tmp_path, kexp):
    runs_dir = tmp_path / "runs"
    runs = [kexp("train", tiny_config, "--runs-dir", runs_dir, "--quiet", "--set", f"seed={i}") for i in range(4)]
    for run in runs:
        code, out, err = run.finish(timeout=240)
        assert code == 0, err
        no_traceback(out, err)
    folders = find_runs([runs_dir])
    assert len(folders) == 4 and all(f.parent == runs_dir.resolve() or f.parent == runs_dir for f in folders)
    records = [read_run(f) for f in folders]
    assert sorted(r.config["seed"] for r in records) == [0, 1, 2, 3]
    for record in records:
        assert record.status == "completed", record
        assert record.metrics.epochs_run == 2 and record.metrics.test is not None
        assert read_history(record.path / "history.csv")["epoch"] == [1.0, 2.0]
        assert (record.path / "model.keras").is_file()
        assert not [p.name for p in record.path.iterdir() if p.name.startswith(".")]


# --------------------------------------------------------------------------- the test session itself
def test_the_session_runs_the_checkouts_code_with_a_private_keras_home(tmp_path):
    """Subprocesses started from anywhere import kexp from this checkout, ahead of any installed copy,
    and no test reads or writes the user's Keras settings (~/.keras: keras.json, its floatx)."""
    code = ("import json, os, sys, kexp; print(json.dumps({'kexp': kexp.__file__, 'path': sys.path, "
            "'home': os.environ.get('KERAS_HOME'), 'backend': os.environ.get('KERAS_BACKEND')}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert Path(seen["kexp"]).resolve() == CHECKOUT / "kexp" / "__init__.py"
    path = [str(Path(p).resolve()) for p in seen["path"] if p]
    first_site = min((i for i, p in enumerate(path) if "site-packages" in p), default=len(path))
    assert str(CHECKOUT) in path[:first_site], seen["path"]
    home = Path(seen["home"]).resolve()
    assert seen["backend"] == "tensorflow"
    assert home != Path.home() / ".keras" and Path.home() / ".keras" not in home.parents
    assert not (home / "keras.json").exists() or json.loads((home / "keras.json").read_text())["floatx"] == "float32"


def test_a_sweep_killed_with_sigkill_resumes_without_training_a_finished_trial_again(tiny_config, tmp_path, kexp):
    data = yaml.safe_load(tiny_config.read_text())
    data.update(validation={"scheme": "kfold", "n_splits": 2}, training={"epochs": 15, "batch_size": 32},
                search={"space": {"model.layers.0.units": [2, 4, 8]}, "objective": "val_loss"})
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(data))
    runs_dir = tmp_path / "runs"
    process = kexp("sweep", config, "--runs-dir", runs_dir, "--quiet")

    def first_trial_done():
        files = list(runs_dir.glob("*-sweep-*/sweep.json")) if runs_dir.exists() else []
        record = json.loads(files[0].read_text()) if files else {"trials": []}  # written atomically
        done = [t for t in record["trials"] if t["status"] == "completed"]
        return (files[0].parent, done[0]) if done and len(done) < len(record["trials"]) else None

    folder, done = process.wait_for(first_trial_done, "the first trial to finish", timeout=240)
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait()
    finished = sorted((folder / done["runs"][0]).rglob("*"))
    stamps = {p: p.stat().st_mtime_ns for p in finished if p.is_file()}

    result = invoke("sweep", "--resume", folder, "--quiet")
    assert result.exit_code == 0, result.output
    record = json.loads((folder / "sweep.json").read_text())
    assert [t["status"] for t in record["trials"]] == ["completed"] * 3
    assert next(t for t in record["trials"] if t["id"] == done["id"]) == done  # as it was
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # not one file of it written again
    assert read_run(folder).status == "completed"
