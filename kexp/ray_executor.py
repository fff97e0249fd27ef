"""The Ray executor: one Ray task per kexp `Task`, on an embedded single-machine cluster or a real one.

    with RayExecutor() as executor:                       # embedded: started here, stopped on close()
        experiment.execute(config, ..., executor=executor)
    RayExecutor(address="head:6379")                      # joins that cluster; never shuts it down

Ray is imported here only (never when kexp is imported), and only when a `RayExecutor` is made.
Worker processes are kept between tasks (`reuse_workers=True`, the default: TensorFlow starts once per
worker, ~0.2 s of overhead a task; `run_task` clears Keras' session, so nothing of one fold's model
leaks into the next); `reuse_workers=False` gives each task a fresh process (`max_calls=1`, ~9 s of
TensorFlow start-up a task on this machine). Each task runs in an empty scratch folder of its own as working directory,
with TensorFlow's intra/inter-op threads set to the CPUs Ray granted it and the GPUs Ray assigned it
(CUDA_VISIBLE_DEVICES; GPU memory grows as needed, so fractional `gpus_per_task` can share a GPU). It trains with
`kexp.training.run_task` and returns its `TaskResult` with every file as bytes: the driver alone
writes the run folder. Each fold's metrics record where it ran (`worker: {host, node}`).

Data: when the driver has the dataset loaded (`context.data`, or `context.data_of(task)` when tasks
differ in data) and it is small (`OBJECT_STORE_LIMIT`, 64 MiB of arrays), it is put into Ray's object
store once per `run` and dataset, and the tasks read it from there;
otherwise each task loads it on its node with the driver's rules (`data_dir`, `KEXP_DATA_DIR`, the
Keras cache of that node).

Progress: a task sends its events to a small actor that the driver polls while it waits; `emit` is
called in the driver only, and a task's events are all delivered before its result.

Faults: a worker that dies (killed, out of memory, its node lost) is retried `max_retries` times by
Ray, then the run fails with `RunError` naming the task; a task's own exception (ConfigError,
TrainingFailed, ...) is raised in the driver as itself. Either way, and on Ctrl-C or
`context.should_stop()`, the outstanding tasks are cancelled (their workers killed). Every exception
raised for a task carries `task_key`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from kexp.errors import RunError, UsageError
from kexp.executor import Context, Event, Task, TaskResult, tagged

MISSING_RAY = 'the Ray executor needs Ray: pip install "kexp[ray]"'
OBJECT_STORE_LIMIT = 64 * 2**20  # bytes of arrays: smaller data goes through Ray's object store
POLL_S = 0.2  # how often the driver collects progress events while tasks run


def import_ray():
    """Ray, or the one-line UsageError saying what to install."""
    try:
        import ray
    except ImportError:
        raise UsageError(MISSING_RAY) from None
    return ray


class RayExecutor:
    """Runs every task of a `run` call as its own Ray task, yielding results as they finish.

    `address`: a cluster to join (`host:port`, `auto`, `ray://...`); None starts an embedded cluster
    with this machine's CPUs (and GPUs) and stops it in `close()`. A process already connected to Ray
    (`ray.init` called by the caller) keeps its connection, which `close()` leaves alone.
    `cpus_per_task` (fractions allowed) is also TensorFlow's thread count in the task; `gpus_per_task`
    None means 1 when the cluster has GPUs, else 0. `max_retries`: reruns of a task whose worker died.
    `reuse_workers`: keep worker processes between tasks (TensorFlow starts once per worker; each task
    clears Keras' session) instead of a fresh process per task (the default).
    `runtime_env`: Ray's runtime environment of the job (pip packages, env_vars, a worker setup hook...),
    given to `ray.init` when this executor connects; KERAS_BACKEND of this process is passed on to the
    tasks unless it sets its own.
    """

    def __init__(self, address: str | None = None, *, cpus_per_task: float = 1.0,
                 gpus_per_task: float | None = None, max_retries: int = 2, num_cpus: int | None = None,
                 runtime_env: dict | None = None, reuse_workers: bool = True):
        self._ray = import_ray()
        self.address = address
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = gpus_per_task
        self.max_retries = max_retries
        self.num_cpus = num_cpus  # the embedded cluster's CPUs (default: this machine's)
        self.runtime_env = dict(runtime_env or {})
        self.reuse_workers = reuse_workers
        self._owned = False
        self._connected = False
        self._events = None
        self._remote = None
        self._runs = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ the cluster
    def start(self) -> RayExecutor:
        """Start or join the cluster now (else the first `run` does)."""
        self._connect()
        return self

    def _connect(self):
        ray = self._ray
        if self._connected:
            return ray
        if not ray.is_initialized():
            env = {name: os.environ[name] for name in ("KERAS_BACKEND",) if os.environ.get(name)}
            runtime_env = {**self.runtime_env, "env_vars": {**env, **self.runtime_env.get("env_vars", {})}}
            quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR,
                     "configure_logging": True, "runtime_env": runtime_env}
            main = threading.current_thread() is threading.main_thread()
            sigterm = signal.getsignal(signal.SIGTERM) if main else None
            try:
                if self.address:
                    ray.init(address=self.address, **quiet)
                else:  # "local": a new cluster here, even when RAY_ADDRESS names another one
                    ray.init(address="local", num_cpus=self.num_cpus or os.cpu_count() or 1, **quiet)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "an embedded Ray cluster"
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RunError(f"cannot start or join {where}: {first}") from None
            finally:
                if main and sigterm is not None:  # ray.init sets its own (sys.exit); the caller's stays in charge
                    signal.signal(signal.SIGTERM, sigterm)
            self._owned = True  # we connected, we disconnect (a joined cluster itself keeps running)
        self._connected = True
        if self.gpus_per_task is None:
            self.gpus_per_task = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        self._check_fits()
        self._events = ray.remote(num_cpus=0)(_Events).remote()
        self._remote = ray.remote(max_calls=0 if self.reuse_workers else 1)(_train)  # 1: a fresh process per task
        return ray

    def _check_fits(self) -> None:
        """A request no node can grant would wait forever: say so now."""
        nodes = [n.get("Resources", {}) for n in self._ray.nodes() if n.get("Alive")]
        fits = any(r.get("CPU", 0) >= self.cpus_per_task and r.get("GPU", 0) >= self.gpus_per_task for r in nodes)
        if nodes and not fits:
            cpus = max(r.get("CPU", 0) for r in nodes)
            gpus = max(r.get("GPU", 0) for r in nodes)
            raise UsageError(f"executor: cpus_per_task={self.cpus_per_task:g}, gpus_per_task={self.gpus_per_task:g}: "
                             f"no node of the Ray cluster has that much (the largest has {cpus:g} CPUs, "
                             f"{gpus:g} GPUs); ask for less per task")

    def close(self) -> None:
        if self._connected and self._owned:
            self._ray.shutdown()
        self._connected = self._owned = False
        self._events = self._remote = None

    # ------------------------------------------------------------------ running tasks
    def run(self, tasks: Sequence[Task], emit: Callable[[Event], None],
            context: Context | None = None) -> Iterator[TaskResult]:
        context = context or Context()
        if not tasks:
            return
        ray = self._connect()
        from ray.exceptions import (
            NodeDiedError,
            ObjectLostError,
            OutOfMemoryError,
            RayTaskError,
            WorkerCrashedError,
        )

        died = (WorkerCrashedError, OutOfMemoryError, NodeDiedError, ObjectLostError)
        self._runs += 1
        token = self._runs
        shared: dict[int, tuple] = {}  # id(dataset) -> (dataset, its object-store ref or None)

        def data_of(task: Task):
            """The task's dataset as an object-store ref (put once per run and dataset), or None when it
            is too large (or the driver has none): the task then loads it on its node."""
            value = context.data_of(task) if context.data_of else context.data
            if id(value) not in shared:
                shared[id(value)] = (value, ray.put(value) if small(value) else None)
            return shared[id(value)][1]

        options = {"num_cpus": self.cpus_per_task, "num_gpus": self.gpus_per_task,
                   "max_retries": self.max_retries, "retry_exceptions": False}
        pending = {self._remote.options(name=f"kexp:{task.key}", **options).remote(task, data_of(task), self._events,
                                                                                    token): task for task in tasks}
        finished: set[str] = set()
        try:
            while pending:
                if context.should_stop():
                    raise KeyboardInterrupt
                done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                self._drain(token, emit, finished)  # a finished task's events are all in by now
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        status, value = ray.get(ref)
                    except died:
                        raise tagged(RunError(f"a worker process died (killed, or out of memory) while training "
                                              f"{task.key}"), task) from None
                    except RayTaskError as exc:  # an error Ray caught outside run_task (e.g. unpicklable)
                        cause = exc.cause if isinstance(exc.cause, BaseException) else None
                        raise tagged(cause or RunError(f"training {task.key} failed: {exc}"), task) from None
                    if status == "error":
                        raise tagged(value, task)
                    finished.add(task.key)
                    yield value
        finally:
            for ref in pending:  # a failure, Ctrl-C, or the caller stopped early: end the other tasks now
                ray.cancel(ref, force=True)

    def _drain(self, token: int, emit: Callable[[Event], None], finished: set[str]) -> None:
        for tag, event in self._ray.get(self._events.take.remote()):
            if tag == token and event.key not in finished:
                emit(event)


def small(data: Any, limit: int = OBJECT_STORE_LIMIT) -> bool:
    """Whether a loaded dataset holds less than `limit` bytes of arrays (None: no data to share)."""
    if data is None:
        return False
    total = 0
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                stack.extend(value.ravel())
                total += value.nbytes
            else:
                total += value.nbytes
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, (int, float)) for v in value[:8]):
                total += 8 * len(value)
            else:
                stack.extend(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            stack.extend(getattr(value, f.name) for f in dataclasses.fields(value))
        elif hasattr(value, "__dict__") and not isinstance(value, type):
            stack.extend(vars(value).values())
        if total >= limit:
            return False
    return True


class _Events:
    """The actor that holds progress events until the driver takes them."""

    def __init__(self):
        self.items: list = []

    def put(self, token: int, event: Event) -> None:
        self.items.append((token, event))

    def take(self) -> list:
        items, self.items = self.items, []
        return items


def _train(task: Task, data: Any, events, token: int) -> tuple[str, Any]:
    """One Ray task, in a fresh worker process: train `task` and return ("ok", TaskResult) or
    ("error", the exception), after every progress event has reached the events actor."""
    import ray

    context = ray.get_runtime_context()
    granted = context.get_assigned_resources()
    threads = max(1, round(granted.get("CPU", 1)))
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")  # tasks sharing a GPU each take what they use
    here = os.getcwd()
    scratch = tempfile.mkdtemp(prefix="kexp-ray-task-")
    os.chdir(scratch)  # as on a machine of its own: nothing of the driver's working directory is there
    sent = []

    def emit(event: Event) -> None:
        sent[:] = [events.put.remote(token, event)]  # in order: one caller's calls to an actor run in order

    try:
        from kexp.backend import start_backend
        from kexp.training import run_task

        start_backend(threads)
        result = run_task(task, emit, data=data, folder=None)
        result.metrics["worker"] = {"host": socket.gethostname(), "node": context.get_node_id()}
        outcome = ("ok", result)
    except Exception as exc:
        outcome = ("error", exc)
    finally:
        os.chdir(here)
        shutil.rmtree(scratch, ignore_errors=True)
    if sent:
        ray.get(sent[0])
    return outcome
