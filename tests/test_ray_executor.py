"""kexp.ray_executor and `--executor ray`: one Ray task per fold, on an embedded cluster or a real one
(two nodes on this machine), giving the local executor's results fold for fold, surviving a killed
worker, with the driver writing every file."""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from cli_runner import invoke, stderr_of
from helpers import TINY_CONFIG

ray = pytest.importorskip("ray")

import ray_hooks  # noqa: E402,F401  (registers the KillOnce callback in this process too)

from kexp import layout  # noqa: E402
from kexp.config import validate_config  # noqa: E402
from kexp.errors import ConfigError, RunError  # noqa: E402
from kexp.executor import Context, InProcessExecutor, Task  # noqa: E402
from kexp.experiment import execute  # noqa: E402
from kexp.ray_executor import MISSING_RAY, RayExecutor, small  # noqa: E402
from kexp.runs import read_json, read_run  # noqa: E402
from kexp.validation import splits_for  # noqa: E402

TINY = yaml.safe_load(TINY_CONFIG)
KFOLD = {**TINY, "validation": {"scheme": "kfold", "n_splits": 3}}
ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fold_files(run: Path, fold: str) -> dict:
    folder = run / layout.split_dir(fold, True)
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.suffix == ".csv"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One embedded two-CPU Ray cluster for the module, its worker processes reused between tasks (each
    fresh one pays TensorFlow's start-up; the two-node test runs the default, a fresh process per task).
    The driver's working directory (and so the one Ray gives its workers on this machine) is an empty
    folder while the module runs."""
    cwd = tmp_path_factory.mktemp("driver-cwd")
    here = os.getcwd()
    os.chdir(cwd)
    executor = RayExecutor(num_cpus=2, reuse_workers=True,
                           runtime_env={"worker_process_setup_hook": "tests.ray_hooks.register"})
    try:
        yield SimpleNamespace(executor=executor.start(), cwd=cwd)
    finally:
        executor.close()
        os.chdir(here)


def test_a_kfold_on_ray_gives_the_local_folds_though_a_worker_was_killed_and_the_driver_writes_every_file(
        cluster, tmp_path, monkeypatch):
    marker = tmp_path / "killed-once"
    callbacks = [{"name": "CSVLogger", "filename": "log.csv"}, {"name": "KillOnce", "marker": str(marker)}]
    config = validate_config({**KFOLD, "name": "on-ray", "validation": {"scheme": "kfold", "n_splits": 2},
                              "training": {**TINY["training"], "callbacks": callbacks}})
    remote = execute(config, command="kfold", runs_dir=tmp_path / "ray", executor=cluster.executor).path
    assert marker.exists()  # one task's worker killed itself at its first epoch end, and was retried
    assert read_run(remote).status == "completed"
    assert list(cluster.cwd.iterdir()) == []  # tasks ran elsewhere: their stray files never reached the driver's cwd
    monkeypatch.chdir(tmp_path)
    local = execute(config, command="kfold", runs_dir=tmp_path / "local", executor=InProcessExecutor()).path
    nodes = {n["NodeID"] for n in ray.nodes()}
    for fold in ("r0-f0", "r0-f1"):
        on_ray, here = (read_json(run / layout.split_dir(fold, True) / layout.METRICS) for run in (remote, local))
        for key in ("validation", "train", "epochs_run", "best_epoch", "seed", "n_train", "n_val"):
            assert on_ray[key] == here[key], (fold, key)
        assert on_ray["worker"]["host"] == socket.gethostname() and on_ray["worker"]["node"] in nodes
        # history rows (one attempt's only) and the callback's file, written by the driver from the results
        assert fold_files(remote, fold) == fold_files(local, fold)
        assert set(fold_files(remote, fold)) == {"history.csv", "log.csv"}
    assert read_json(remote / layout.METRICS)["validation"] == read_json(local / layout.METRICS)["validation"]


def test_a_sweep_with_executor_ray_scores_every_trial_as_the_local_executor_does(cluster, tmp_path):
    data = {**TINY, "search": {"space": {"model.layers.0.units": [4, 8]}, "objective": "val_loss"}}
    path = write(tmp_path / "sweep.yaml", data)
    on_ray = invoke("sweep", path, "--runs-dir", tmp_path / "ray", "--executor", "ray", "-q",
                    "--set", "executor.reuse_workers=true")
    assert on_ray.exit_code == 0, on_ray.output
    here = invoke("sweep", path, "--runs-dir", tmp_path / "local", "-q", "--workers", "2")  # 1 thread a task, as Ray
    assert here.exit_code == 0, here.output

    def objectives(runs: Path) -> dict:
        record = read_json(next(runs.iterdir()) / layout.SWEEP_JSON)
        assert all(t["status"] == "completed" for t in record["trials"])
        return {t["params"]["model.layers.0.units"]: t["objective"] for t in record["trials"]}

    on_ray, here = objectives(tmp_path / "ray"), objectives(tmp_path / "local")
    assert on_ray == here and len(on_ray) == 2
    assert ray.is_initialized()  # the command joined the running cluster and left it running


def _tasks(config: dict, n_splits: int = 2) -> list[Task]:
    class Iris:  # what splits_for reads of a dataset
        y_train = np.repeat([0, 1, 2], 40)
        task = "multiclass"

    cfg = validate_config({**config, "validation": {"scheme": "kfold", "n_splits": n_splits}})
    return [Task(s.id, cfg.to_dict(), None, s, 2) for s in splits_for(cfg, Iris)]


def test_a_tasks_own_error_reaches_the_driver_as_itself_naming_the_task(cluster):
    broken = {**TINY, "model": {"layers": [{"layer": "Dense", "units": 3, "activation": "nope"}]}}
    task = _tasks(broken)[0]
    with pytest.raises(ConfigError) as caught:
        list(cluster.executor.run([task], lambda event: None, Context()))
    assert caught.value.task_key == task.key
    assert any("activation" in line for line in caught.value.problems)
    assert all("\n" not in line for line in caught.value.problems)


def test_a_worker_that_dies_past_its_retries_fails_the_run_naming_the_task(cluster, tmp_path):
    callbacks = [{"name": "KillOnce", "marker": str(tmp_path / "killed-once")}]
    task = _tasks({**TINY, "training": {**TINY["training"], "callbacks": callbacks}})[1]
    no_retry = RayExecutor(max_retries=0)  # joins the module's cluster (this process is connected to it)
    with pytest.raises(RunError, match=r"^a worker process died \(killed, or out of memory\) while training "
                                       r"r0-f1$") as caught:
        list(no_retry.run([task], lambda event: None, Context()))
    assert caught.value.task_key == "r0-f1" and ray.is_initialized()


def _running_tasks() -> list[int]:
    """Processes of this machine running a kexp Ray task now (Ray titles them `ray::kexp:<key>`)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::kexp:"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_stop_in_the_driver_cancels_the_outstanding_tasks_and_raises_keyboard_interrupt(cluster):
    tasks = _tasks(TINY, n_splits=3)
    events = []
    context = Context(should_stop=lambda: bool(events))
    with pytest.raises(KeyboardInterrupt):
        list(cluster.executor.run(tasks, events.append, context))
    deadline = time.monotonic() + 20
    while _running_tasks() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert events and _running_tasks() == []


@pytest.mark.parametrize("how", ["--executor", "KEXP_EXECUTOR", "executor.kind"])
def test_the_ray_executor_without_ray_installed_is_a_one_line_error(tmp_path, monkeypatch, how):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    data = {**KFOLD, "executor": {"kind": "ray"}} if how == "executor.kind" else KFOLD
    args = ["--executor", "ray"] if how == "--executor" else []
    if how == "KEXP_EXECUTOR":
        monkeypatch.setenv("KEXP_EXECUTOR", "ray")
    result = invoke("kfold", write(tmp_path / "k.yaml", data), "--runs-dir", tmp_path / "runs", *args)
    assert result.exit_code == 2, result.output
    assert stderr_of(result).strip() == MISSING_RAY
    assert not (tmp_path / "runs").exists()


def test_executor_options_that_cannot_apply_are_usage_errors(tmp_path, monkeypatch):
    path = write(tmp_path / "k.yaml", KFOLD)
    monkeypatch.setenv("KEXP_EXECUTOR", "spark")
    result = invoke("kfold", path, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and stderr_of(result).strip() == (
        "KEXP_EXECUTOR: unknown executor; got 'spark'; allowed: local, ray")
    monkeypatch.delenv("KEXP_EXECUTOR")
    result = invoke("kfold", path, "--runs-dir", tmp_path / "runs", "--address", "127.0.0.1:6379")
    assert result.exit_code == 2 and "--address: only the Ray executor joins a cluster" in stderr_of(result)
    assert not (tmp_path / "runs").exists()


def test_the_executor_section_is_checked_and_round_trips(tmp_path):
    from kexp.config import load_config

    cfg = validate_config({**KFOLD, "executor": {"kind": "ray", "gpus_per_task": 0.25, "max_retries": 0}})
    assert validate_config(cfg.to_dict()).to_dict() == cfg.to_dict()
    assert "executor" not in validate_config(KFOLD).to_dict()  # a config without one is written as before
    bad = {**KFOLD, "executor": {"kind": "local", "cpus_per_task": 2, "gpu_per_task": 1}}
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path / "bad.yaml", bad))
    lines = caught.value.problems
    assert any("executor.gpu_per_task: unknown key (did you mean gpus_per_task" in line for line in lines), lines


def test_kexp_help_does_not_import_ray():
    code = ("import sys\nfrom kexp.cli import app\ntry:\n    app(['kfold', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('ray' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "--executor" in done.stdout and done.stdout.strip().endswith("False"), done.stdout + done.stderr


def test_only_small_data_goes_through_the_object_store():
    iris = SimpleNamespace(x_train=np.zeros((150, 4)), y_train=np.zeros(150), x_test=None, task="multiclass")
    assert small(iris) and not small(None)
    assert not small(SimpleNamespace(x_train={"a": np.zeros((9, 2**20), dtype="float64")}))  # 72 MiB
    ragged = np.empty(3, dtype=object)
    ragged[:] = [np.zeros(2**20), np.zeros(2**20), np.zeros(2**20)]  # 24 MiB in object arrays
    assert small(ragged) and not small(ragged, limit=2**24)


# --------------------------------------------------------------------------- a real two-node cluster
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(tmp_path):
    """`ray start --head` and a second `ray start --address` on this machine, one CPU each, with their own
    temp folder and token; both stopped (their process groups killed) whatever happens."""
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": uuid.uuid4().hex, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    started = []

    def start(args: list[str], log: Path) -> Path:
        with open(log, "w") as out:
            started.append(subprocess.Popen(["ray", "start", "--block", "--num-cpus", "1", *args], env=env,
                                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text():
            assert started[-1].poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        return log

    temp = tempfile.mkdtemp(prefix="kexp-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    try:
        start(["--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp],
              tmp_path / "head.log")
        start(["--address", f"127.0.0.1:{port}"], tmp_path / "node.log")
        yield SimpleNamespace(address=f"127.0.0.1:{port}", env=env)
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # ray start, and the Ray processes it started
            process.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_kfold_with_address_runs_its_folds_on_both_nodes_of_a_real_cluster(two_nodes, tmp_path):
    config = write(tmp_path / "k.yaml", {**KFOLD, "validation": {"scheme": "kfold", "n_splits": 2}})
    done = subprocess.run([sys.executable, "-m", "kexp", "kfold", str(config), "--executor", "ray", "--address",
                           two_nodes.address, "--runs-dir", str(tmp_path / "runs"), "-q"],
                          env=two_nodes.env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    run = next((tmp_path / "runs").iterdir())
    folds = [read_json(run / layout.split_dir(fold, True) / layout.METRICS) for fold in ("r0-f0", "r0-f1")]
    nodes = {fold["worker"]["node"] for fold in folds}
    assert len(nodes) == 2  # one CPU per node, two tasks at once: one on each
    assert json.loads((run / layout.METRICS).read_text())["folds"][1]["id"] == "r0-f1"
