"""Interruptions, crashes, numerical failure, resource errors and concurrent runs never cost a
finished result or print a traceback.

Most tests start real `kexp train` processes on the tiny offline config (conftest.TINY_CONFIG):
their time goes to importing TensorFlow, so every run is as short as the test allows.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from cli_runner import invoke, no_traceback, stderr_of
from kexp.runs import find_runs, read_history, read_run

ENV = {**os.environ, "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "OMP_NUM_THREADS": "1",
       "PYTHONUNBUFFERED": "1"}
FOREVER = "training.epochs=100000"  # a run that is surely mid-training when the test acts


class Kexp:
    """A `kexp` subprocess with its output in files (no pipe can fill up and block it)."""

    def __init__(self, args: list[str], cwd: Path, tag: str):
        self.out, self.err = cwd / f"{tag}.out", cwd / f"{tag}.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            # SIGINT as a terminal would deliver it, even when pytest itself runs with it ignored
            self.proc = subprocess.Popen([sys.executable, "-m", "kexp", *args], cwd=cwd, env=ENV, stdout=out,
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

    def start(*args: str) -> Kexp:
        process = Kexp([str(a) for a in args], tmp_path, f"kexp{len(started)}")
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


def test_a_second_sigint_while_shutting_down_still_exits_quietly(tiny_config, tmp_path, kexp):
    runs_dir = tmp_path / "runs"
    run = kexp("train", tiny_config, "--runs-dir", runs_dir, "--quiet", "--set", FOREVER)
    folder = run.wait_for(lambda: only_run(runs_dir), "the run folder")
    run.wait_for(lambda: epochs_done(folder) >= 1, "an epoch")
    run.proc.send_signal(signal.SIGINT)
    run.wait_for(lambda: read_run(folder).status == "interrupted", "the interrupted status", timeout=30)
    for _ in range(3):  # Ctrl-C pressed again while the process tears down
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    code, out, err = run.finish(timeout=30)
    assert code in (130, -signal.SIGINT), err
    no_traceback(out, err)
    assert read_run(folder).status == "interrupted"


def test_sigkill_at_a_random_moment_leaves_a_folder_compare_and_show_read_as_incomplete(
        tiny_config, tmp_path, kexp):
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0, 1.5)
    runs_dir = tmp_path / "runs"
    run = kexp("train", tiny_config, "--runs-dir", runs_dir, "--quiet", "--set", FOREVER)
    folder = run.wait_for(lambda: only_run(runs_dir), "the run folder")
    time.sleep(delay)  # from the folder's creation into config/environment writing or training
    run.proc.kill()
    run.proc.wait()
    print(f"killed {delay:.3f} s after the run folder appeared (seed {seed}), after {epochs_done(folder)} epochs")

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
    import kexp.experiment

    kexp.experiment.STOP.set()  # what an interrupted command leaves behind in a long-lived process
    result = invoke("train", tiny_config, "--runs-dir", tmp_path / "runs", "--quiet")
    assert result.exit_code == 0, result.output
    assert read_run(only_run(tmp_path / "runs")).status == "completed"


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
    assert record.metrics["stop_reason"] == "loss became NaN or inf at epoch 1"
    assert record.metrics["epochs_run"] == 1


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
    import kexp.experiment

    runs_dir = unwritable_runs_dir(tmp_path, how)
    trained = []
    monkeypatch.setattr(kexp.experiment, "fit_split", lambda *a, **k: trained.append(a))
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
        assert record.metrics["epochs_run"] == 2 and record.metrics["test"] is not None
        assert read_history(record.path / "history.csv")["epoch"] == [1.0, 2.0]
        assert (record.path / "model.keras").is_file()
        assert not [p.name for p in record.path.iterdir() if p.name.startswith(".")]
